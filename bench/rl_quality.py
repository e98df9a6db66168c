"""RL agent quality (issue 5): the agent in ``prune`` and ``joint`` modes against the baselines, on
the same problems and in the same row format as ``bench/search_quality.py``.

    python -m bench.rl_quality [--quick] [--models M ...] [--fractions F ...] [--seeds S ...]

Rows go into ``bench/results/search_quality.json`` (merged by (model, budget_fraction,
strategy, seed), under a file lock so this and the search bench can run at once), with
``strategy`` = ``ddpg-prune`` / ``ddpg-joint`` (the agent and its mode); rows on the simulated
bit-flexible accelerator get an ``@bitfusion-sim`` suffix (``uniform@bitfusion-sim``,
``ddpg-joint@bitfusion-sim``), since the row key has no hardware column. On top of the common
columns each row has ``hardware``, ``evaluations_to_99pct_best`` (from the trace, for every
strategy) and, for the agent, ``episodes_to_99pct_best`` and ``episodes`` (from its learning
curve). Search outputs (result.json, learning_curve.json/png) are kept under
``bench/results/search_quality/``.
"""

from __future__ import annotations

import argparse
import json

from .rows import load_rows, row_key, save_row
from .search_row import MNIST, RESULTS, SUMMARY_KEYS, Arm, error_row, run_row

SIM = "bitfusion-sim"
CPU_ARMS = ["ddpg-prune", "ddpg-joint"]
SIM_ARMS = [f"uniform@{SIM}", f"ddpg-prune@{SIM}", f"ddpg-joint@{SIM}"]
BASELINES = ["uniform", "optuna-tpe", "netadapt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="resnet20, 25%% budget, seed 0, 24 evaluations")
    ap.add_argument("--data", default=f"mnist:{MNIST}")
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--fractions", nargs="*", type=float)
    ap.add_argument("--seeds", nargs="*", type=int)
    ap.add_argument("--arms", nargs="*", help="labels to run (default: the agent on cpu-ort and "
                    "uniform/ddpg-prune/ddpg-joint on bitfusion-sim; add uniform, optuna-tpe, netadapt)")
    ap.add_argument("--trials", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--max-train", type=int)
    ap.add_argument("--val-limit", type=int, default=2000)
    ap.add_argument("--finetune-epochs", type=float)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--quick-table", action="store_true")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    q = args.quick
    args.models = args.models or (["resnet20"] if q else ["resnet20", "mobilenetv2_050"])
    args.fractions = args.fractions or ([0.25] if q else [0.5, 0.25])
    args.seeds = args.seeds or ([0] if q else [0, 1, 2])
    args.trials = args.trials or (24 if q else 40)
    args.epochs = args.epochs or (2 if q else 3)
    args.max_train = args.max_train or (10000 if q else 20000)
    args.finetune_epochs = args.finetune_epochs if args.finetune_epochs is not None else (0.3 if q else 0.5)
    arms = args.arms or SIM_ARMS + CPU_ARMS
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "search_quality.json"
    done = {row_key(r) for r in load_rows(path) if not r.get("error")}
    for model in args.models:
        for fraction in args.fractions:
            for seed in args.seeds:
                for label in arms:
                    if (model, fraction, label, seed) in done and not args.force:
                        continue
                    try:
                        row = run_row(model, args.data, fraction, Arm.parse(label), seed, args,
                                      workers=args.workers)
                    except Exception as exc:  # noqa: BLE001 - a failed cell is a result too
                        row = error_row(model, fraction, label, seed, exc)
                    save_row(path, row)
                    print(json.dumps({k: row.get(k) for k in SUMMARY_KEYS}), flush=True)


if __name__ == "__main__":
    main()

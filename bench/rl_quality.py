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
import time
from pathlib import Path

from agents.curve import episodes_to_fraction_of_best
from automl.search.runner import SearchConfig, run_search

from .rows import load_rows, row_key, save_row

RESULTS = Path(__file__).resolve().parent / "results"
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
SIM = "bitfusion-sim"
# (label, registry strategy, rl mode, hardware)
CPU_ARMS = [("ddpg-prune", "ddpg", "prune", None), ("ddpg-joint", "ddpg", "joint", None)]
SIM_ARMS = [(f"uniform@{SIM}", "uniform", "prune", SIM), (f"ddpg-prune@{SIM}", "ddpg", "prune", SIM),
            (f"ddpg-joint@{SIM}", "ddpg", "joint", SIM)]
BASELINES = [("uniform", "uniform", "prune", None), ("optuna-tpe", "optuna-tpe", "prune", None),
             ("netadapt", "netadapt", "prune", None)]


def run_one(model: str, fraction: float, label: str, strategy: str, mode: str, hardware: str | None,
            seed: int, args) -> dict:
    out = RESULTS / "search_quality" / f"{model}-{fraction}-{label.replace('@', '-')}-s{seed}"
    if args.force and out.exists():
        import shutil
        shutil.rmtree(out)  # else the runner and the agent resume the old search from its state
    config = SearchConfig(model=model, data=args.data, budgets=[f"latency_ms={fraction}x"], strategy=strategy,
                          rl_mode=mode, hardware=hardware, trials=args.trials, seed=seed,
                          finetune_epochs=args.finetune_epochs, out_dir=str(out), epochs=args.epochs,
                          max_train=args.max_train, quick_table=args.quick_table, workers=args.workers)
    if hasattr(config, "val_limit"):  # the search bench scores on 2,000 validation images
        config.val_limit = args.val_limit
    t0 = time.perf_counter()
    r = run_search(config)
    trace = json.loads((out / "trace.json").read_text())
    accs = [t["accuracy"] if t.get("feasible") else None for t in trace]
    row = {"model": model, "budget_fraction": fraction, "strategy": label, "seed": seed,
           "hardware": r["hardware"], "rl_mode": mode if strategy in ("ddpg", "td3", "sac", "ppo") else None,
           "accuracy_original": r["accuracy_original"],
           "accuracy_before_finetune": r["accuracy_before_finetune"],
           "accuracy_after_finetune": r["accuracy_after_finetune"],
           "accuracy_val_search": r["accuracy_val_search"],
           "latency_ms_measured": r["latency_ms_measured"], "latency_ms_predicted": r["latency_ms_predicted"],
           "latency_ms_budget": r["latency_ms_budget"],
           "latency_ms_original_measured": r["latency_ms_original_measured"],
           "within_budget_5pct": r["latency_ms_measured"] <= 1.05 * r["latency_ms_budget"],
           "evaluations": r["evaluations"], "failed_trials": r["failed_trials"],
           "evaluations_to_99pct_best": episodes_to_fraction_of_best([{"accuracy": a} for a in accs]),
           "wall_s": time.perf_counter() - t0, "data": args.data, "trials": args.trials,
           "finetune_epochs": args.finetune_epochs, "policy": r["policy"]}
    curve_path = out / "learning_curve.json"
    if curve_path.is_file():
        curve = json.loads(curve_path.read_text())
        row["episodes"] = len(curve["episodes"])
        row["episodes_to_99pct_best"] = curve["episodes_to_99pct_best"]
    return row


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
    arms = SIM_ARMS + CPU_ARMS + BASELINES
    wanted = set(args.arms) if args.arms else {a[0] for a in CPU_ARMS + SIM_ARMS}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "search_quality.json"
    done = {row_key(r) for r in load_rows(path) if not r.get("error")}
    for model in args.models:
        for fraction in args.fractions:
            for seed in args.seeds:
                for label, strategy, mode, hardware in arms:
                    if label not in wanted or ((model, fraction, label, seed) in done and not args.force):
                        continue
                    try:
                        row = run_one(model, fraction, label, strategy, mode, hardware, seed, args)
                    except Exception as exc:  # noqa: BLE001 - a failed cell is a result too
                        row = {"model": model, "budget_fraction": fraction, "strategy": label, "seed": seed,
                               "error": f"{type(exc).__name__}: {exc}"}
                    save_row(path, row)
                    print(json.dumps({k: row.get(k) for k in (
                        "model", "budget_fraction", "strategy", "seed", "accuracy_before_finetune",
                        "accuracy_after_finetune", "latency_ms_measured", "latency_ms_budget", "evaluations",
                        "episodes_to_99pct_best", "wall_s", "error")}), flush=True)


if __name__ == "__main__":
    main()

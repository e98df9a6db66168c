"""Does the search's signal rank candidates the way the final fine-tune does? (issue 12, part 3)

For each budget, ``--policies`` random policies at the budget's edge are drawn the way random
search draws them (a random keep ratio per coupled group scaled down together until the table
says the budget holds; a random model-wide precision among the profile's choices). Each policy
is scored three ways, all from the same pruned copy that ``apply_policy`` builds (BN statistics
re-estimated):

  old signal   validation accuracy right after pruning (AMC's signal; ``--recovery-steps 0``)
  new signal   validation accuracy after ``--recovery-steps`` distillation steps (the default
               search signal, ``automl.search.evaluator.score_policy``)
  final        test accuracy after the final recovery every answer gets
               (``automl.train.finetune``: distilled, cosine, ``--finetune-epochs``)

and the bench reports Spearman's ρ of each signal against the final accuracy, per budget.
Goal: ρ ≥ 0.8 for the new signal. The search's own float starts (uniform pruning and the
latency-aware allocation blends) are scored first, then random policies fill ``--policies``.

    python -m bench.signal_rank [--model mobilenetv2_050] [--fractions 0.35 0.25 0.5]
                                [--policies 20] [--table]

Resumable: one row per (model, budget, policy index, seed) in ``bench/results/signal_rank.json``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path

from scipy.stats import spearmanr

from automl.compress import apply_policy
from automl.search.base import StrategyOptions
from automl.search.evaluator import EvalPayload, score_policy
from automl.search.finalize import measure_reference_ms
from automl.search.problem import build_problem
from automl.search.strategies.random_search import RandomStrategy
from automl.train import evaluate_accuracy, finetune
from automl.importance import DEFAULT_IMPORTANCE, IMPORTANCE_CRITERIA, channel_scores_for
from automl.workflow import load_trained

from .pareto import FASHION, data_label
from .rows import load_rows, row_key, save_row

RESULTS = Path(__file__).resolve().parent / "results"


def rows_path(data: str) -> Path:
    """MNIST keeps its historical file; other data sets have their own."""
    label = data_label(data)
    return RESULTS / ("signal_rank.json" if label == "mnist" else f"signal-rank-{label.replace('_', '-')}.json")

log = logging.getLogger("bench.signal_rank")


def draw_policies(problem, n: int, seed: int) -> list:
    """Up to ``n`` random policies at the budget, drawn by random search itself, reproducibly."""
    search = RandomStrategy(problem, StrategyOptions(trials=n, seed=seed))
    return [t.policy for t in search.ask(n)]


def start_policies(problem) -> list[tuple[str, object]]:
    """The optuna search's own starts at float (uniform, the allocation blends) by label: the
    candidates whose ranking decides whether the search beats uniform pruning."""
    from automl.core import FLOAT_BITS
    from automl.search.strategies.optuna_search import OptunaTPEStrategy

    search = OptunaTPEStrategy(problem, StrategyOptions(trials=1, seed=0))
    return [(label, p) for label, p in search.starts.items() if label.endswith(f"-{FLOAT_BITS}")]


def score_three_ways(loaded, problem, policy, args) -> dict:
    """The search's own scorer (``score_policy``) without and with its recovery steps, then the
    final recovery every answer gets, on a fresh copy as ``finalize`` does it."""
    data = loaded.data
    n_val = args.val_limit or len(data.x_val)
    calib = data.calibration_batches()
    payload = EvalPayload(loaded.model, loaded.info, data.x_val[:n_val], data.y_val[:n_val], calib,
                          data.x_train, data.y_train, problem.channel_step, args.recovery_steps,
                          scores=problem.channel_scores)
    t0 = time.perf_counter()
    old = score_policy(replace(payload, recovery_steps=0), policy.to_dict())["accuracy"]
    new = score_policy(payload, policy.to_dict())["accuracy"]
    t_signal = time.perf_counter() - t0
    model = apply_policy(loaded.model, policy, loaded.info, calib, problem.channel_step,
                         scores=problem.channel_scores)
    finetune(model, data, epochs=args.finetune_epochs, seed=args.seed, teacher=loaded.model)
    final = evaluate_accuracy(model, data.x_test, data.y_test)
    return {"signal_old": old, "signal_new": new, "accuracy_final": final,
            "signal_wall_s": t_signal, "wall_s": time.perf_counter() - t0}


def summarize(rows: list[dict]) -> list[dict]:
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["budget_fraction"], r["seed"]), []).append(r)
    out = []
    for (model, frac, seed), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        final = [r["accuracy_final"] for r in rs]
        rho = {k: (float(spearmanr([r[k] for r in rs], final).statistic) if len(rs) >= 3 else float("nan"))
               for k in ("signal_old", "signal_new")}
        out.append({"model": model, "budget_fraction": frac, "seed": seed, "policies": len(rs),
                    "rho_old": rho["signal_old"], "rho_new": rho["signal_new"],
                    "final_min": min(final), "final_max": max(final),
                    "old_mean": statistics.fmean(r["signal_old"] for r in rs),
                    "new_mean": statistics.fmean(r["signal_new"] for r in rs),
                    "signal_wall_s": statistics.fmean(r["signal_wall_s"] for r in rs)})
    return out


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | budget | seed | policies | final accuracy range | old signal mean | "
             "new signal mean | ρ old | ρ new | signal s/policy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summarize(rows):
        lines.append(f"| {s['model']} | {s['budget_fraction']}x | {s['seed']} | {s['policies']} | "
                     f"{s['final_min']:.4f}–{s['final_max']:.4f} | {s['old_mean']:.3f} | "
                     f"{s['new_mean']:.3f} | {s['rho_old']:.2f} | **{s['rho_new']:.2f}** | "
                     f"{s['signal_wall_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2_050")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.35, 0.25, 0.5])
    ap.add_argument("--policies", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=FASHION)
    ap.add_argument("--baseline", choices=("plateau", "epochs"), default="plateau",
                    help="plateau: the baseline trained until validation stops improving "
                         "(bench.baselines, seed 0); epochs: trained for --epochs")
    ap.add_argument("--epochs", type=int, default=2, help="baseline training epochs (--baseline epochs)")
    ap.add_argument("--max-train", type=int, default=10000)
    ap.add_argument("--val-limit", type=int, default=None, help="validation images scored (default: all)")
    ap.add_argument("--importance", choices=IMPORTANCE_CRITERIA, default=DEFAULT_IMPORTANCE)
    ap.add_argument("--no-starts", action="store_true",
                    help="random policies only (default: the search's float starts first, then random)")
    ap.add_argument("--recovery-steps", type=int, default=200)
    ap.add_argument("--finetune-epochs", type=float, default=3.0)
    ap.add_argument("--table", action="store_true", help="print the recorded table and stop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ROWS = rows_path(args.data)
    if args.table:
        print(markdown_table(load_rows(ROWS)))
        return 0
    done = {row_key(r) for r in load_rows(ROWS)}
    weights = None
    if args.baseline == "plateau":
        from .baselines import plateau_baseline

        weights = str(plateau_baseline(args.model, args.data, 0, args.max_train)[0])
    loaded = load_trained(args.model, args.data, seed=0 if weights else args.seed, epochs=args.epochs,
                          weights=weights, max_train=args.max_train, progress=False)
    reference_ms = measure_reference_ms(loaded)
    scores = channel_scores_for(args.importance, loaded.model, loaded.info, loaded.data.x_train,
                                loaded.data.y_train, seed=args.seed)
    for fraction in args.fractions:
        problem = build_problem(loaded, [f"latency_ms={fraction}x"], measured_reference_ms=reference_ms)
        problem.channel_scores = scores
        starts = [] if args.no_starts else start_policies(problem)
        drawn = draw_policies(problem, max(0, args.policies - len(starts)), args.seed * 1000 + int(fraction * 100))
        named = starts + [(f"policy-{i:02d}", p) for i, p in enumerate(drawn)]
        for name, policy in named:
            if (args.model, fraction, name, args.seed) in done:
                continue
            got = score_three_ways(loaded, problem, policy, args)
            bits = [lp.w_bits for lp in policy.layers.values()]
            row = {"model": args.model, "budget_fraction": fraction, "strategy": name, "seed": args.seed,
                   "int8_layer_share": sum(b <= 8 for b in bits) / max(1, len(bits)),
                   "latency_ms_predicted": problem.costs(policy)["latency_ms"],
                   "recovery_steps": args.recovery_steps, "finetune_epochs": args.finetune_epochs,
                   "val_images": len(loaded.data.x_val) if args.val_limit is None else args.val_limit,
                   "importance": args.importance, "baseline": args.baseline,
                   "policy": policy.to_dict(), **got}
            save_row(ROWS, row)
            log.info("%s %sx %s: old %.3f new %.3f final %.4f (%.0f s)", args.model, fraction, name,
                     got["signal_old"], got["signal_new"], got["accuracy_final"], got["wall_s"])
    print(markdown_table(load_rows(ROWS)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

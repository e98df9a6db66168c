"""Search quality: every strategy on the same problems, accuracy vs measured latency vs budget.

    python -m bench.search_quality [--quick]

Writes ``bench/results/search_quality.json`` (a list of rows: model, budget_fraction, strategy,
seed, accuracy_before_finetune, accuracy_after_finetune, latency_ms_measured, latency_ms_budget,
evaluations, wall_s, ...) and ``bench/results/ray_speedup.json``. Rows are merged by
(model, budget_fraction, strategy, seed), so other benches (the RL agents) add theirs to the same
file and a re-run skips the rows it already has (``--force`` re-runs them).

Full run: MNIST, ResNet-20 and MobileNetV2 (width 0.5), budgets 0.5x and 0.25x of the
uncompressed model's measured latency, 3 seeds, every core strategy (add the RL agents with
``--strategies ... ddpg-prune ddpg-joint``). ``--quick``: ResNet-20,
one seed, fewer evaluations (what fits a CI-sized machine in minutes).
"""

from __future__ import annotations

import argparse
import json

from .rows import load_rows, row_key, save_row
from .search_row import MNIST, RESULTS, SUMMARY_KEYS, Arm, error_row, run_row

STRATEGIES = ["uniform", "random", "netadapt", "optuna-tpe", "optuna-nsga2"]


def ray_speedup(model: str, data: str, args) -> dict:
    """The same random search with 1 and 2 Ray workers: time of the evaluation phase."""
    out = {}
    for workers in (1, 2):
        row = run_row(model, data, 0.5, Arm.parse("random"), 100 + workers, args, workers=workers,
                      tag=f"-w{workers}")
        out[f"search_s_{workers}_workers"] = row["search_s"]
        out[f"evaluations_{workers}_workers"] = row["evaluations"]
    out["speedup"] = out["search_s_1_workers"] / max(1e-9, out["search_s_2_workers"])
    return out


def markdown_table(rows: list[dict]) -> str:
    """The rows as the Markdown table recorded in BENCHMARKS.md. "measured / budget" is the
    drift-corrected measurement (timed side by side with the uncompressed model) against the
    budget; "over?" flags beyond the +5% tolerance."""
    head = ("| model | budget | strategy | seed | acc. before FT | after FT | val acc. (best scored) "
            "| latency ms measured / budget | over? | answer | evaluations | wall s |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["model"], -r["budget_fraction"], r["strategy"], r["seed"])):
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['budget_fraction']}x | {r['strategy']} | {r['seed']} | "
                         f"{r['error'][:150]} | | | | | | | |")
            continue
        over = r["latency_ms_measured"] / r["latency_ms_budget"] - 1
        best = r.get("accuracy_val_best_scored")
        lines.append(
            f"| {r['model']} | {r['budget_fraction']}x | {r['strategy']} | {r['seed']} | "
            f"{r['accuracy_before_finetune']:.3f} | {r['accuracy_after_finetune']:.3f} | "
            f"{r.get('accuracy_val_search', float('nan')):.3f} ({best if best is None else f'{best:.3f}'}) | "
            f"{r['latency_ms_measured']:.3f} / {r['latency_ms_budget']:.3f} | "
            f"{'**' + format(over, '+.0%') + '**' if over > 0.05 else format(over, '+.0%')} | "
            f"{r.get('answer_source') or '-'} | {r['evaluations']} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def summary_table(rows: list[dict]) -> str:
    """Per (model, budget, strategy): mean ± std over seeds of accuracy before / after the same
    fine-tune, how many seeds met the measured budget (+5%), mean evaluations and wall time."""
    import statistics

    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["budget_fraction"], r["strategy"]), []).append(r)

    def ms(values: list[float]) -> str:
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.3f} ± {sd:.3f}"

    lines = ["| model | budget | strategy | seeds | acc. before FT | after FT | met budget (+5%) "
             "| evaluations | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for (model, fraction, strategy), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        ok = [r for r in cell if not r.get("error")]
        if not ok:
            lines.append(f"| {model} | {fraction}x | {strategy} | {len(cell)} | {cell[0]['error'][:120]} | | | | |")
            continue
        lines.append(
            f"| {model} | {fraction}x | {strategy} | {len(ok)} | {ms([r['accuracy_before_finetune'] for r in ok])} | "
            f"{ms([r['accuracy_after_finetune'] for r in ok])} | {sum(bool(r['within_budget_5pct']) for r in ok)}/{len(ok)} | "
            f"{statistics.fmean(r['evaluations'] for r in ok):.0f} | {statistics.fmean(r['wall_s'] for r in ok):.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default=f"mnist:{MNIST}")
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--strategies", nargs="*", default=STRATEGIES,
                    help="arm labels: strategy names, agents as ddpg-prune / ddpg-joint, '@HARDWARE' suffix")
    ap.add_argument("--fractions", nargs="*", type=float, default=[0.5, 0.25])
    ap.add_argument("--seeds", nargs="*", type=int)
    ap.add_argument("--trials", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--max-train", type=int)
    ap.add_argument("--val-limit", type=int, default=2000)
    ap.add_argument("--finetune-epochs", type=float)
    ap.add_argument("--netadapt-steps", type=int, default=0)
    ap.add_argument("--quick-table", action="store_true")
    ap.add_argument("--no-speedup", action="store_true")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--table", action="store_true", help="print the recorded rows as Markdown and exit")
    ap.add_argument("--summary", action="store_true", help="print mean ± std over seeds as Markdown and exit")
    args = ap.parse_args()
    if args.table or args.summary:
        rows = load_rows(RESULTS / "search_quality.json")
        print(summary_table(rows) if args.summary else markdown_table(rows))
        return
    q = args.quick
    args.models = args.models or (["resnet20"] if q else ["resnet20", "mobilenetv2_050"])
    args.seeds = args.seeds or ([0] if q else [0, 1, 2])
    args.trials = args.trials or (12 if q else 40)
    args.epochs = args.epochs or (2 if q else 3)
    args.max_train = args.max_train or (10000 if q else 20000)
    args.finetune_epochs = args.finetune_epochs if args.finetune_epochs is not None else (0.3 if q else 0.5)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "search_quality.json"
    done = {row_key(r) for r in load_rows(path)}
    for model in args.models:
        for fraction in args.fractions:
            for seed in args.seeds:
                for strategy in args.strategies:
                    if (model, fraction, strategy, seed) in done and not args.force:
                        continue
                    try:
                        row = run_row(model, args.data, fraction, Arm.parse(strategy), seed, args)
                    except Exception as exc:  # noqa: BLE001 - a failed cell is a result too
                        row = error_row(model, fraction, strategy, seed, exc)
                    save_row(path, row)
                    print(json.dumps({k: row.get(k) for k in SUMMARY_KEYS}), flush=True)
    if not args.no_speedup:
        sp = ray_speedup(args.models[0], args.data, args)
        (RESULTS / "ray_speedup.json").write_text(json.dumps(sp, indent=1))
        print(json.dumps(sp))


if __name__ == "__main__":
    main()

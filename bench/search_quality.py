"""Search quality: every strategy on the same problems, accuracy vs measured latency vs budget.

    python -m bench.search_quality [--quick]

Writes ``bench/results/search_quality.json`` (a list of rows: model, budget_fraction, strategy,
seed, accuracy_before_finetune, accuracy_after_finetune, latency_ms_measured, latency_ms_budget,
evaluations, wall_s, ...) and ``bench/results/ray_speedup.json``. Rows are merged by
(model, budget_fraction, strategy, seed), so other benches (the RL agents) add theirs to the same
file and a re-run skips the rows it already has (``--force`` re-runs them).

Full run: MNIST, ResNet-20 and MobileNetV2 (width 0.5), budgets 0.5x and 0.25x of the
uncompressed model's measured latency, 3 seeds, every core strategy. ``--quick``: ResNet-20,
one seed, fewer evaluations (what fits a CI-sized machine in minutes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from automl.search.runner import SearchConfig, run_search

from .rows import load_rows, row_key, save_row

RESULTS = Path(__file__).resolve().parent / "results"
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
STRATEGIES = ["uniform", "random", "netadapt", "optuna-tpe", "optuna-nsga2"]


def run_one(model: str, data: str, fraction: float, strategy: str, seed: int, args, workers: int | None = None,
            tag: str = "") -> dict:
    out = RESULTS / "search_quality" / f"{model}-{fraction}-{strategy}-s{seed}{tag}"
    shutil.rmtree(out, ignore_errors=True)  # a bench row is one fresh search, never a resumed one
    config = SearchConfig(model=model, data=data, budgets=[f"latency_ms={fraction}x"], strategy=strategy,
                          trials=args.trials, seed=seed, finetune_epochs=args.finetune_epochs,
                          out_dir=str(out), epochs=args.epochs, max_train=args.max_train,
                          val_limit=args.val_limit, workers=workers, quick_table=args.quick_table,
                          finetune_steps=args.netadapt_steps if strategy == "netadapt" else 0)
    stamps: list[float] = []
    t0 = time.perf_counter()
    r = run_search(config, on_event=lambda e: stamps.append(time.perf_counter()) if e["type"] == "trial" else None)
    return {"model": model, "budget_fraction": fraction, "strategy": strategy, "seed": seed,
            "accuracy_original": r["accuracy_original"],
            "accuracy_before_finetune": r["accuracy_before_finetune"],
            "accuracy_after_finetune": r["accuracy_after_finetune"],
            "latency_ms_measured": r["latency_ms_measured"], "latency_ms_predicted": r["latency_ms_predicted"],
            "latency_ms_budget": r["latency_ms_budget"],
            "latency_ms_original_measured": r["latency_ms_original_measured"],
            "within_budget_5pct": r["latency_ms_measured"] <= 1.05 * r["latency_ms_budget"],
            "latency_checks": len(r.get("latency_checks", [])),
            "answer_source": (r.get("latency_checks") or [{}])[-1].get("source"),
            "evaluations": r["evaluations"], "failed_trials": r["failed_trials"],
            "search_s": (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0,
            "wall_s": time.perf_counter() - t0, "data": data, "trials": args.trials,
            "finetune_epochs": args.finetune_epochs}


def ray_speedup(model: str, data: str, args) -> dict:
    """The same random search with 1 and 2 Ray workers: time of the evaluation phase."""
    out = {}
    for workers in (1, 2):
        row = run_one(model, data, 0.5, "random", 100 + workers, args, workers=workers, tag=f"-w{workers}")
        out[f"search_s_{workers}_workers"] = row["search_s"]
        out[f"evaluations_{workers}_workers"] = row["evaluations"]
    out["speedup"] = out["search_s_1_workers"] / max(1e-9, out["search_s_2_workers"])
    return out


def markdown_table(rows: list[dict]) -> str:
    """The rows as the Markdown table recorded in BENCHMARKS.md."""
    head = ("| model | budget | strategy | seed | acc. before FT | after FT | latency ms measured / budget "
            "(over?) | predicted | evaluations | wall s |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["model"], -r["budget_fraction"], r["strategy"], r["seed"])):
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['budget_fraction']}x | {r['strategy']} | {r['seed']} | "
                         f"{r['error'][:150]} | | | | | |")
            continue
        over = r["latency_ms_measured"] / r["latency_ms_budget"] - 1
        lines.append(
            f"| {r['model']} | {r['budget_fraction']}x | {r['strategy']} | {r['seed']} | "
            f"{r['accuracy_before_finetune']:.3f} | {r['accuracy_after_finetune']:.3f} | "
            f"{r['latency_ms_measured']:.3f} / {r['latency_ms_budget']:.3f} ({over:+.0%}) | "
            f"{r.get('latency_ms_predicted', float('nan')):.3f} | {r['evaluations']} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default=f"mnist:{MNIST}")
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--strategies", nargs="*", default=STRATEGIES)
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
    args = ap.parse_args()
    if args.table:
        print(markdown_table(load_rows(RESULTS / "search_quality.json")))
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
                        row = run_one(model, args.data, fraction, strategy, seed, args)
                    except Exception as exc:  # noqa: BLE001 - a failed cell is a result too
                        row = {"model": model, "budget_fraction": fraction, "strategy": strategy,
                               "seed": seed, "error": f"{type(exc).__name__}: {exc}"}
                    save_row(path, row)
                    print(json.dumps({k: row.get(k) for k in ("model", "budget_fraction", "strategy", "seed",
                          "accuracy_before_finetune", "accuracy_after_finetune", "latency_ms_measured",
                          "latency_ms_budget", "evaluations", "wall_s", "error")}), flush=True)
    if not args.no_speedup:
        sp = ray_speedup(args.models[0], args.data, args)
        (RESULTS / "ray_speedup.json").write_text(json.dumps(sp, indent=1))
        print(json.dumps(sp))


if __name__ == "__main__":
    main()

"""``hwcompress search``: run a strategy on Ray and write result.json, trace.json and plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from automl.core import (DEFAULT_BASELINE_EPOCHS, DEFAULT_OBJECTIVE, DEFAULT_RL_MODE, DEFAULT_SEED,
                         DEFAULT_STRATEGY, DEFAULT_TRIALS)
from automl.data import DEFAULT_DATASET
from automl.importance import DEFAULT_IMPORTANCE, IMPORTANCE_CRITERIA
from automl.records import JobEvent, LogEvent, StartedEvent, TrialEvent
from automl.train import DEFAULT_FINETUNE_EPOCHS, DEFAULT_RECOVERY_STEPS

from .common import add_json_flag


def register(sub: argparse._SubParsersAction) -> None:
    from automl.search.registry import strategy_names

    p = sub.add_parser("search", help="search a per-layer policy under budgets")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=DEFAULT_DATASET)
    p.add_argument("--weights", help="weights file (safetensors or a weights_only state dict)")
    p.add_argument("--budget", action="append", required=True, metavar="METRIC=VALUE[x]",
                   help="latency_ms=, energy_mj=, size_mb=, macs=; absolute or FRACTIONx of the "
                        "uncompressed model; repeatable (all must hold)")
    p.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=strategy_names())
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help=f"accuracy evaluations allowed [{DEFAULT_TRIALS}]")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--hardware", default=None, help="hardware profile (default: cpu-ort, this CPU)")
    p.add_argument("--table", help="latency table file (default: built on first use and cached)")
    p.add_argument("--quick-table", action="store_true", help="build a coarse table (tests, demos)")
    p.add_argument("--finetune-epochs", type=float, default=DEFAULT_FINETUNE_EPOCHS,
                   help="final recovery of the answer: epochs of distillation from the original "
                        f"[{DEFAULT_FINETUNE_EPOCHS:g}]")
    p.add_argument("--recovery-steps", type=int, default=DEFAULT_RECOVERY_STEPS,
                   help="distillation steps each candidate gets before it is scored; 0 scores "
                        f"right after compression as AMC does [{DEFAULT_RECOVERY_STEPS}]")
    p.add_argument("--importance", default=DEFAULT_IMPORTANCE, choices=list(IMPORTANCE_CRITERIA),
                   help="how channels are priced and which are removed: magnitude (L2 weight "
                        "magnitude) or taylor (first-order Taylor; the Optuna study then also "
                        f"starts from the latency-aware allocation) [{DEFAULT_IMPORTANCE}]")
    p.add_argument("--objective", default=DEFAULT_OBJECTIVE, choices=["latency_ms", "energy_mj"],
                   help="second objective of multi-objective strategies")
    p.add_argument("--rl-mode", default=DEFAULT_RL_MODE, choices=["prune", "quantize", "joint"],
                   help=f"RL agents: decide channels, bits, or both [{DEFAULT_RL_MODE}]")
    p.add_argument("--agent-kwargs", type=json.loads, default={}, metavar="JSON",
                   help='RL hyper-parameter overrides, e.g. \'{"warmup_episodes": 5}\'')
    p.add_argument("--no-quantize", action="store_true", help="search channel counts only")
    p.add_argument("--epochs", type=int, default=DEFAULT_BASELINE_EPOCHS, help="baseline training epochs")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (or RAY_ADDRESS)")
    p.add_argument("--workers", type=int, default=None, help="parallel evaluators (default: CPUs)")
    p.add_argument("--local", action="store_true", help="evaluate in-process without Ray (debugging)")
    p.add_argument("--out", required=True)
    add_json_flag(p, "result.json (instead of the summary and the policy)")
    p.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    """Each phase shows its own bar with a rate and an estimate, on stderr: baseline training
    (first use of a model/data/seed/epochs), latency-table profiling (first use of a
    model/shape/profile), calibration near a latency budget, the trials, the final fine-tune."""
    import sys

    from tqdm.auto import tqdm

    from automl.search.runner import SearchConfig, run_search

    config = SearchConfig(
        model=args.model, data=args.data, budgets=args.budget, strategy=args.strategy,
        trials=args.trials, seed=args.seed, hardware=args.hardware, table=args.table,
        finetune_epochs=args.finetune_epochs, out_dir=args.out, ray_address=args.ray_address,
        weights=args.weights, rl_mode=args.rl_mode, epochs=args.epochs, workers=args.workers,
        use_ray=not args.local, quick_table=args.quick_table, quantize=not args.no_quantize,
        recovery_steps=args.recovery_steps, progress=True, objective=args.objective, allow_import=True,
        importance=args.importance,
        agent_kwargs=args.agent_kwargs)
    bar = None  # the trials' bar: from the search's start, not while earlier phases run

    def on_event(event: JobEvent) -> None:
        nonlocal bar
        if isinstance(event, StartedEvent) and bar is None:
            bar = tqdm(total=args.trials, desc=f"search {args.strategy}", unit="eval")
        elif isinstance(event, TrialEvent) and bar is not None and event.accuracy is not None \
                and not event.cached:
            bar.update(1)
            best = event.best_accuracy
            bar.set_postfix(best=f"{best:.4f}" if best is not None else "-",
                            lat_ms=f"{event.latency_ms:.4f}")
        elif isinstance(event, LogEvent):
            if bar is not None and bar.n >= (bar.total or 0):
                bar.close()  # the trials are over: the final phases get their own bars
            (bar.write if bar is not None and not bar.disable else
             (lambda m: print(m, file=sys.stderr, flush=True)))(event.message)

    try:
        result = run_search(config, on_event)
    finally:
        if bar is not None:
            bar.close()
    out = Path(args.out)
    doc = result.to_dict()
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    shown = {k: v for k, v in doc.items() if k not in ("policy", "pareto")}
    print(json.dumps(shown, indent=2))
    print("best policy:")
    print(json.dumps(doc["policy"], indent=1))
    print(f"wrote {out / 'result.json'}, {out / 'trace.json'}, {out / 'search.png'}, {out / 'compressed.onnx'}")
    return 0

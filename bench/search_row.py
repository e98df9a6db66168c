"""One bench row: run one fresh search and reduce its result to the columns both search benches
(``search_quality`` and ``rl_quality``) record, so a strategy's row means the same whichever
bench wrote it.

Arm labels: a registry strategy name (``uniform``, ``optuna-tpe``, ...), an RL agent with its
mode (``ddpg-prune``, ``ddpg-joint``, ``td3-quantize``), either optionally ``@<hardware>``
(``ddpg-joint@bitfusion-sim``) since the row key has no hardware column.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.curve import episodes_to_fraction_of_best
from automl.records import TrialEvent
from automl.search.runner import SearchConfig, run_search

RESULTS = Path(__file__).resolve().parent / "results"
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
AGENTS = ("ddpg", "td3", "sac", "ppo")
RL_MODES = ("prune", "quantize", "joint")


@dataclass(frozen=True)
class Arm:
    label: str
    strategy: str
    rl_mode: str = "prune"
    hardware: str | None = None

    @classmethod
    def parse(cls, label: str) -> "Arm":
        name, _, hardware = label.partition("@")
        algo, _, mode = name.rpartition("-")
        if algo in AGENTS and mode in RL_MODES:
            return cls(label, algo, mode, hardware or None)
        return cls(label, name, "prune", hardware or None)

    @property
    def is_agent(self) -> bool:
        return self.strategy in AGENTS


def run_row(model: str, data: str, fraction: float, arm: Arm, seed: int, args: Any,
            workers: int | None = None, tag: str = "") -> dict[str, Any]:
    """One fresh search (any old output of the same cell is removed: a bench row is never a
    resumed search) and its row."""
    out = RESULTS / "search_quality" / f"{model}-{fraction}-{arm.label.replace('@', '-')}-s{seed}{tag}"
    shutil.rmtree(out, ignore_errors=True)
    config = SearchConfig(model=model, data=data, budgets=[f"latency_ms={fraction}x"], strategy=arm.strategy,
                          rl_mode=arm.rl_mode, hardware=arm.hardware, trials=args.trials, seed=seed,
                          finetune_epochs=args.finetune_epochs, out_dir=str(out), epochs=args.epochs,
                          max_train=args.max_train, val_limit=args.val_limit, workers=workers,
                          quick_table=args.quick_table,
                          recovery_steps=getattr(args, "recovery_steps", 0))
    stamps: list[float] = []
    t0 = time.perf_counter()
    r = run_search(config, on_event=lambda e: stamps.append(time.perf_counter())
                   if isinstance(e, TrialEvent) else None)
    trace = json.loads((out / "trace.json").read_text())
    accs = [t["accuracy"] if t.get("feasible") else None for t in trace]
    checks = r.latency_checks or [{}]
    row = {"model": model, "budget_fraction": fraction, "strategy": arm.label, "seed": seed,
           "hardware": r.hardware, "rl_mode": arm.rl_mode if arm.is_agent else None,
           "accuracy_original": r.accuracy_original,
           "accuracy_before_finetune": r.accuracy_before_finetune,
           "accuracy_after_finetune": r.accuracy_after_finetune,
           "accuracy_val_search": r.accuracy_val_search,
           "accuracy_val_best_scored": max((a for a in accs if a is not None), default=None),
           "latency_ms_measured": r.latency_ms_measured, "latency_ms_predicted": r.latency_ms_predicted,
           "latency_ms_budget": r.latency_ms_budget,
           "latency_ms_original_measured": r.latency_ms_original_measured,
           "latency_fraction_measured": r.latency_fraction_measured,
           "within_budget_5pct": r.latency_ms_measured <= 1.05 * r.latency_ms_budget,
           "latency_checks": len(r.latency_checks or []), "answer_source": checks[-1].get("source"),
           "latency_correction": r.latency_correction,
           "evaluations": r.evaluations, "failed_trials": r.failed_trials,
           "evaluations_to_99pct_best": episodes_to_fraction_of_best([{"accuracy": a} for a in accs]),
           "search_s": (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0,
           "wall_s": time.perf_counter() - t0, "data": data, "trials": args.trials,
           "finetune_epochs": args.finetune_epochs, "policy": r.policy.to_dict()}
    curve_path = out / "learning_curve.json"
    if curve_path.is_file():
        curve = json.loads(curve_path.read_text())
        row["episodes"] = len(curve["episodes"])
        row["episodes_to_99pct_best"] = curve["episodes_to_99pct_best"]
    return row


def error_row(model: str, fraction: float, label: str, seed: int, exc: Exception) -> dict[str, Any]:
    """A cell that failed is a result too (an unreachable budget, say)."""
    return {"model": model, "budget_fraction": fraction, "strategy": label, "seed": seed,
            "error": f"{type(exc).__name__}: {exc}"}


SUMMARY_KEYS = ("model", "budget_fraction", "strategy", "seed", "accuracy_before_finetune",
                "accuracy_after_finetune", "latency_ms_measured", "latency_ms_budget", "evaluations",
                "episodes_to_99pct_best", "wall_s", "error")

"""Running a search end to end: build the problem, drive a strategy's ask/tell loop with
evaluations on Ray, then finalize the best policy (apply, fine-tune, export, measure) and write
``result.json``, ``trace.json``, ``compressed.onnx`` and plots.

Every evaluation is appended to ``state/evaluations.jsonl`` as it completes; a search restarted
on the same ``out_dir`` answers already-scored policies from there (and Optuna resumes its own
study), so a stopped job continues instead of starting over.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core import Budget, Evaluation, Policy
from ..workflow import load_trained
from .base import StrategyOptions, Trial
from .evaluator import EvalPayload, LocalEvaluator, RayEvaluator
from .finalize import finalize, measure_reference_ms
from .problem import CompressionProblem, build_problem
from .registry import get_strategy

log = logging.getLogger(__name__)

EventSink = Callable[[dict[str, Any]], None]


class SearchCancelled(RuntimeError):
    """``should_stop`` asked the search to stop."""


class SearchFailed(RuntimeError):
    """The search ended without a single feasible, scored policy."""


@dataclass
class SearchConfig:
    model: str
    data: str = "digits"
    budgets: list[str] = field(default_factory=lambda: ["latency_ms=0.5x"])
    strategy: str = "uniform"
    trials: int = 20
    seed: int = 0
    hardware: str | None = None
    table: str | None = None
    finetune_epochs: float = 1.0
    out_dir: str = "out/search"
    ray_address: str | None = None
    weights: str | None = None
    rl_mode: str = "prune"
    epochs: int = 10
    workers: int | None = None
    use_ray: bool = True
    quick_table: bool = False
    quantize: bool = True
    finetune_steps: int = 0          # short-term fine-tune per evaluation (NetAdapt)
    objective: str = "latency_ms"    # second objective of multi-objective strategies
    allow_import: bool = False       # local CLI only: model given as package.module:function
    max_train: int | None = None
    threads: int = 1


def init_ray(address: str | None = None) -> None:
    """Embedded local Ray by default; an existing cluster with ``address`` or ``RAY_ADDRESS``."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                              "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local", not None: with no address Ray would join the last cluster `ray start` left
        # recorded on this machine (even a dead one) instead of starting its own.
        ray.init(address="local", include_dashboard=False, **kwargs)


def _policy_key(policy: Policy) -> str:
    return json.dumps(policy.to_dict(), sort_keys=True)


class EvaluationLog:
    """Append-only JSONL of every evaluation of this search (resume and trace)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                self.rows[row["key"]] = row

    def get(self, policy: Policy) -> dict[str, Any] | None:
        row = self.rows.get(_policy_key(policy))
        return None if row is None or row.get("error") else row

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["key"]] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def pareto_front(rows: list[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """Feasible, scored rows that no other row beats on both accuracy and ``objective``."""
    pts = [r for r in rows if r.get("feasible") and r.get("accuracy") is not None]
    front = [r for r in pts if not any(
        o["accuracy"] >= r["accuracy"] and o[objective] <= r[objective]
        and (o["accuracy"] > r["accuracy"] or o[objective] < r[objective]) for o in pts)]
    return sorted(front, key=lambda r: r[objective])


def run_search(config: SearchConfig, on_event: EventSink | None = None,
               should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run ``config``'s search and return (and write) its result."""
    t0 = time.perf_counter()
    emit = on_event or (lambda e: None)
    out = Path(config.out_dir)
    state_dir = out / "state"
    state_dir.mkdir(parents=True, exist_ok=True)

    emit({"type": "log", "message": f"loading {config.model} on {config.data}"})
    loaded = load_trained(config.model, config.data, seed=config.seed, epochs=config.epochs,
                          weights=config.weights, allow_import=config.allow_import,
                          progress=False, max_train=config.max_train)
    reference_ms = measure_reference_ms(loaded, config.threads)
    problem = build_problem(loaded, Budget.parse(config.budgets) if not isinstance(config.budgets, Budget)
                            else config.budgets, config.hardware, config.table, threads=config.threads,
                            quick_table=config.quick_table, quantize=config.quantize,
                            measured_reference_ms=reference_ms)
    strategy_cls = get_strategy(config.strategy)
    options = StrategyOptions(trials=config.trials, seed=config.seed, state_dir=state_dir,
                              objective=config.objective, extra={"rl_mode": config.rl_mode})
    strategy = strategy_cls(problem, options)
    emit({"type": "started", "strategy": config.strategy, "trials": config.trials,
          "limits": problem.limits, "reference": problem.reference})

    payload = EvalPayload(loaded.model, loaded.info, loaded.data.x_val, loaded.data.y_val,
                          loaded.data.calibration_batches(), loaded.data.x_train,
                          loaded.data.y_train, problem.channel_step, config.finetune_steps)
    if config.use_ray:
        init_ray(config.ray_address)
        evaluator: LocalEvaluator | RayEvaluator = RayEvaluator(payload, config.workers)
    else:
        evaluator = LocalEvaluator(payload)
    history = EvaluationLog(state_dir / "evaluations.jsonl")
    try:
        rows = _search_loop(problem, strategy, evaluator, history, config, emit, should_stop, t0)
    finally:
        evaluator.close()

    result = finalize(problem, rows, config, strategy_cls.multi_objective, out, emit)
    result["wall_s"] = time.perf_counter() - t0
    (out / "result.json").write_text(json.dumps(result, indent=2))
    emit({"type": "finished", "result": {k: result[k] for k in (
        "accuracy_before_finetune", "accuracy_after_finetune", "latency_ms_predicted",
        "latency_ms_measured", "evaluations", "wall_s")}})
    return result


def _search_loop(problem: CompressionProblem, strategy, evaluator, history: EvaluationLog,
                 config: SearchConfig, emit: EventSink, should_stop, t0: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = list(history.rows.values())
    best = max((r["accuracy"] for r in rows if r.get("feasible") and r.get("accuracy") is not None),
               default=None)
    index = 0
    while True:
        if should_stop is not None and should_stop():
            raise SearchCancelled("the search was cancelled")
        trials: list[Trial] = strategy.ask(evaluator.parallelism)
        if not trials:
            break
        costs = [problem.costs(t.policy) for t in trials]
        todo = [(t, c) for t, c in zip(trials, costs)
                if (problem.feasible(c) or t.intermediate) and history.get(t.policy) is None]
        fresh = iter(evaluator.evaluate([t.policy for t, _ in todo]))
        fresh_by_trial = {id(t): next(fresh) for t, _ in todo}
        for trial, c in zip(trials, costs):
            feasible = problem.feasible(c)
            cached = history.get(trial.policy)
            outcome = cached or fresh_by_trial.get(id(trial))
            if outcome is None:  # infeasible: a table lookup, no accuracy evaluation
                outcome = {"accuracy": None, "wall_s": 0.0, "error": None, "node": None}
            ev = Evaluation(trial.policy, outcome["accuracy"], c["latency_ms"], c["energy_mj"],
                            c["size_mb"], int(c["macs"]), feasible, outcome.get("error"),
                            outcome.get("wall_s", 0.0))
            strategy.tell(trial, ev)
            row = {"key": _policy_key(trial.policy), "trial": index, "strategy": config.strategy,
                   "accuracy": ev.accuracy, **c, "feasible": feasible, "error": ev.error,
                   "intermediate": trial.intermediate, "node": outcome.get("node"),
                   "wall_s": ev.wall_s, "policy": trial.policy.to_dict(), "params": _jsonable(trial.params)}
            if cached is None and (ev.accuracy is not None or ev.error is not None):
                history.add(row)
                rows.append(row)
            if feasible and ev.accuracy is not None and (best is None or ev.accuracy > best):
                best = ev.accuracy
            emit({"type": "trial", "index": index, "total": config.trials, "accuracy": ev.accuracy,
                  "latency_ms": c["latency_ms"], "energy_mj": c["energy_mj"], "size_mb": c["size_mb"],
                  "feasible": feasible, "error": ev.error, "best_accuracy": best,
                  "strategy": config.strategy, "wall_s": ev.wall_s, "cached": cached is not None,
                  "elapsed_s": time.perf_counter() - t0, **strategy.state()})
            index += 1
    return rows


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


def config_to_dict(config: SearchConfig) -> dict[str, Any]:
    return asdict(config)

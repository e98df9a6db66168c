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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..core import (DEFAULT_BASELINE_EPOCHS, DEFAULT_OBJECTIVE, DEFAULT_RL_MODE, DEFAULT_SEED,
                    DEFAULT_STRATEGY, DEFAULT_TRIALS, Budget, Evaluation, Policy, SearchCancelled)
from ..core import SearchFailed  # noqa: F401  (re-exported: callers catch runner.SearchFailed)
from ..compress import deployed_int8_layers
from ..data import DEFAULT_DATASET
from ..importance import DEFAULT_IMPORTANCE, channel_scores_for
from ..records import (FinishedEvent, JobEvent, LogEvent, SearchResult, StartedEvent, TrialEvent,
                       TrialOutcome)
from ..train import DEFAULT_FINETUNE_EPOCHS, DEFAULT_RECOVERY_STEPS
from ..workflow import load_trained
from .base import StrategyOptions, Trial
from .evaluator import EvalPayload, LocalEvaluator, RayEvaluator
from .finalize import finalize, measure_reference_ms
from .measured_budget import DeviceProbe, calibrate_latency
from .problem import CompressionProblem, build_problem
from latency_models.profile import DEFAULT_PROFILE, get_profile

from .registry import get_strategy
from .strategies.optuna_search import OptunaStrategy

log = logging.getLogger(__name__)

EventSink = Callable[[JobEvent], None]
"""Where ``run_search`` sends its events (typed records; ``.to_dict()`` for JSON)."""


@dataclass
class SearchConfig:
    model: str
    data: str = DEFAULT_DATASET
    budgets: list[str] = field(default_factory=lambda: ["latency_ms=0.5x"])
    strategy: str = DEFAULT_STRATEGY
    trials: int = DEFAULT_TRIALS
    seed: int = DEFAULT_SEED
    data_seed: int | None = None     # the train/val split's seed (default: seed); benchmarks vary
                                     # the search's seed on one baseline and one split
    hardware: str | None = None
    table: str | None = None
    finetune_epochs: float = DEFAULT_FINETUNE_EPOCHS
    out_dir: str = "out/search"
    ray_address: str | None = None
    weights: str | None = None
    rl_mode: str = DEFAULT_RL_MODE   # RL agents: prune, quantize or joint (channels + bits)
    agent_kwargs: dict[str, Any] = field(default_factory=dict)   # RL hyper-parameter overrides
    epochs: int = DEFAULT_BASELINE_EPOCHS
    workers: int | None = None
    use_ray: bool = True
    use_tune: bool = True            # Optuna strategies on Ray go through Ray Tune
    quick_table: bool = False
    quantize: bool = True
    recovery_steps: int = DEFAULT_RECOVERY_STEPS  # distillation steps before scoring each candidate
    importance: str = DEFAULT_IMPORTANCE   # how channels are priced and chosen: taylor or magnitude
    objective: str = DEFAULT_OBJECTIVE  # second objective of multi-objective strategies
    allow_import: bool = False       # local CLI only: model given as package.module:function
    max_train: int | None = None     # subsample the training split (benchmarks on MNIST)
    val_limit: int | None = None     # score candidates on the first N validation images
    threads: int = 1
    calibrate_latency: bool = True   # correct the table to the device near the budget first
    progress: bool = False           # progress bars on stderr (the CLI); the service sends events


WORKER_NICENESS_ENV = "RAY_worker_niceness"
"""Ray's setting (read when the embedded raylet starts) for its workers' ``nice`` value."""


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
        # Ray nices its workers to 15 by default: on a busy machine any other process (a test
        # run, a second job's driver) then starves the trials; the demo's trials took 550 s
        # instead of 110 s here. The search *is* this process's work, so its workers run at the
        # driver's priority (what Ray's own job supervisor does with the same variable).
        os.environ.setdefault(WORKER_NICENESS_ENV, "0")
        # "local", not None: with no address Ray would join the last cluster `ray start` left
        # recorded on this machine (even a dead one) instead of starting its own.
        ray.init(address="local", include_dashboard=False, **kwargs)


def _policy_key(policy: Policy) -> str:
    return json.dumps(policy.to_dict(), sort_keys=True)


class EvaluationLog:
    """Append-only JSONL of every evaluation of this search (resume and trace): one
    :class:`~automl.records.TrialOutcome` a line. Rows are kept in their dict form, which
    finalize and the measured-budget choice read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        text = path.read_text() if path.is_file() else ""
        # a line cut by a crash has no newline: the next row must not be glued onto it
        self._cut = bool(text) and not text.endswith("\n")
        for line in text.splitlines():
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            # a newer schema raises RecordError: better than resuming from rows misread
            row = TrialOutcome.from_dict(data).to_dict()
            self.rows[row["key"]] = row

    def get(self, policy: Policy) -> dict[str, Any] | None:
        row = self.rows.get(_policy_key(policy))
        return None if row is None or row.get("error") else row

    def add(self, outcome: TrialOutcome) -> dict[str, Any]:
        row = outcome.to_dict()
        self.rows[row["key"]] = row
        with self.path.open("a") as f:
            f.write(("\n" if self._cut else "") + json.dumps(row) + "\n")
            self._cut = False
            f.flush()
            os.fsync(f.fileno())
        return row


def run_search(config: SearchConfig, on_event: EventSink | None = None,
               should_stop: Callable[[], bool] | None = None) -> SearchResult:
    """Run ``config``'s search and return (and write, as ``result.json``) its result."""
    t0 = time.perf_counter()
    emit: EventSink = on_event or (lambda e: None)
    out = Path(config.out_dir)
    state_dir = out / "state"
    state_dir.mkdir(parents=True, exist_ok=True)

    emit(LogEvent(f"loading {config.model} on {config.data}"))
    data_seed = config.seed if config.data_seed is None else config.data_seed
    loaded = load_trained(config.model, config.data, seed=data_seed, epochs=config.epochs,
                          weights=config.weights, allow_import=config.allow_import,
                          progress=config.progress, max_train=config.max_train)
    measured_device = get_profile(config.hardware or DEFAULT_PROFILE).backend.measures_latency
    # relative latency budgets mean "of what this device measures"; a simulated accelerator's
    # own figures come from its table, so there the table's prediction is the reference
    reference_ms = measure_reference_ms(loaded, config.threads) if measured_device else None
    problem = build_problem(loaded, Budget.parse(config.budgets) if not isinstance(config.budgets, Budget)
                            else config.budgets, config.hardware, config.table, threads=config.threads,
                            quick_table=config.quick_table, quantize=config.quantize,
                            measured_reference_ms=reference_ms,
                            latency_judged_by_device=config.calibrate_latency)
    problem.channel_scores = channel_scores_for(config.importance, loaded.model, loaded.info,
                                                loaded.data.x_train, loaded.data.y_train, seed=config.seed)
    # one probe for the job: its calibration batches and exported reference serve both checks
    probe = DeviceProbe(problem, config.threads, config.val_limit)
    calibration: list[dict[str, Any]] = []
    if config.calibrate_latency and problem.profile.backend.measures_latency:  # a simulator needs none
        from tqdm.auto import tqdm

        # each calibration probe is a graph built, exported and timed: seconds each, so a bar
        bar = tqdm(total=len(problem.bits_choices) * 5, desc="calibrate latency", unit="probe",
                   leave=False, disable=not config.progress)
        probe.on_measure = lambda: bar.update(1)
        try:
            calibration = calibrate_latency(problem, probe.build, probe.measure, seed=config.seed,
                                            details=probe.last_figures)
        finally:
            probe.on_measure = None
            bar.close()
        if calibration:
            emit(LogEvent("latency table corrected to this device near the budget: "
                          + ", ".join(f"{k} x{f:.3f}" for k, f in problem.latency_correction.items())))
    precision_notes = problem.keep_precisions_that_pay()
    emit(LogEvent("precisions: " + "; ".join(f"{b} bits {why}" for b, why in precision_notes.items())))
    strategy_cls = get_strategy(config.strategy)
    options = StrategyOptions(trials=config.trials, seed=config.seed, state_dir=state_dir,
                              objective=config.objective,
                              extra={"rl_mode": config.rl_mode, "agent_kwargs": dict(config.agent_kwargs)})
    strategy = strategy_cls(problem, options)
    emit(StartedEvent(config.strategy, config.trials, dict(problem.limits), dict(problem.reference)))

    n_val = config.val_limit or len(loaded.data.x_val)
    payload = EvalPayload(loaded.model, loaded.info, loaded.data.x_val[:n_val], loaded.data.y_val[:n_val],
                          loaded.data.calibration_batches(), loaded.data.x_train,
                          loaded.data.y_train, problem.channel_step, config.recovery_steps,
                          scores=problem.channel_scores)
    rec = _Recorder(problem, config, EvaluationLog(state_dir / "evaluations.jsonl"), emit, t0)
    if config.use_ray:
        init_ray(config.ray_address)
    if config.use_ray and config.use_tune and isinstance(strategy, OptunaStrategy):
        _tune_loop(problem, strategy, payload, rec, config, state_dir, should_stop)
    else:
        evaluator = RayEvaluator(payload, config.workers) if config.use_ray else LocalEvaluator(payload)
        try:
            _search_loop(problem, strategy, evaluator, rec, should_stop)
        finally:
            evaluator.close()
    rows = rec.rows

    result = finalize(problem, rows, config, strategy_cls.multi_objective, out, emit, probe)
    result = replace(result, latency_calibration=calibration, importance=config.importance,
                     precision_notes=precision_notes, int8_layers=deployed_int8_layers(result.policy),
                     start_scores=_start_scores(getattr(strategy, "starts", {}), rows),
                     wall_s=time.perf_counter() - t0)
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    emit(FinishedEvent.of(result))
    return result


class _Recorder:
    """Records each scored (or cost-only) candidate: the evaluation log, the rows the result is
    chosen from, and the event stream. Shared by the ask/tell loop and the Ray Tune path."""

    def __init__(self, problem: CompressionProblem, config: SearchConfig, history: EvaluationLog,
                 emit: EventSink, t0: float) -> None:
        self.problem, self.config, self.history, self.emit, self.t0 = problem, config, history, emit, t0
        self.rows: list[dict[str, Any]] = list(history.rows.values())
        self.best = max((r["accuracy"] for r in self.rows
                         if r.get("feasible") and r.get("accuracy") is not None), default=None)
        self.index = 0

    def record(self, trial: Trial, costs: dict[str, float], outcome: dict[str, Any], cached: bool,
               extra_event: dict[str, Any] | None = None) -> Evaluation:
        feasible = self.problem.feasible(costs)
        ev = Evaluation(trial.policy, outcome["accuracy"], costs["latency_ms"], costs["energy_mj"],
                        costs["size_mb"], int(costs["macs"]), feasible, outcome.get("error"),
                        outcome.get("wall_s", 0.0))
        if not cached and (ev.accuracy is not None or ev.error is not None):
            self.rows.append(self.history.add(TrialOutcome(
                key=_policy_key(trial.policy), trial=self.index, strategy=self.config.strategy,
                policy=trial.policy, latency_ms=costs["latency_ms"], energy_mj=costs["energy_mj"],
                size_mb=costs["size_mb"], macs=costs["macs"], accuracy=ev.accuracy,
                feasible=feasible, error=ev.error, intermediate=trial.intermediate,
                node=outcome.get("node"), wall_s=ev.wall_s, params=_jsonable(trial.params))))
        if feasible and ev.accuracy is not None and (self.best is None or ev.accuracy > self.best):
            self.best = ev.accuracy
        self.emit(TrialEvent(index=self.index, total=self.config.trials, accuracy=ev.accuracy,
                             latency_ms=costs["latency_ms"], energy_mj=costs["energy_mj"],
                             size_mb=costs["size_mb"], feasible=feasible, error=ev.error,
                             best_accuracy=self.best, strategy=self.config.strategy,
                             wall_s=ev.wall_s, cached=cached,
                             elapsed_s=time.perf_counter() - self.t0,
                             strategy_state=_jsonable(extra_event or {})))
        self.index += 1
        return ev


def _search_loop(problem: CompressionProblem, strategy, evaluator, rec: _Recorder,
                 should_stop) -> None:
    """The ask/tell loop: cost every trial from the table, score the feasible ones (and a
    strategy's intermediate steps) in parallel, tell the strategy."""
    while True:
        if should_stop is not None and should_stop():
            raise SearchCancelled("the search was cancelled")
        trials: list[Trial] = strategy.ask(evaluator.parallelism)
        if not trials:
            break
        costs = [problem.costs(t.policy) for t in trials]
        todo = [t for t, c in zip(trials, costs)
                if (problem.feasible(c) or t.intermediate) and rec.history.get(t.policy) is None]
        fresh = dict(zip(map(id, todo), evaluator.evaluate([t.policy for t in todo])))
        for trial, c in zip(trials, costs):
            cached = rec.history.get(trial.policy)
            outcome = cached or fresh.get(id(trial)) or \
                {"accuracy": None, "wall_s": 0.0, "error": None, "node": None}  # cost only
            ev = rec.record(trial, c, outcome, cached is not None, strategy.state())
            strategy.tell(trial, ev)


def _tune_loop(problem: CompressionProblem, strategy, payload: EvalPayload, rec: _Recorder,
               config: SearchConfig, state_dir: Path, should_stop) -> None:
    """The Optuna strategies' distributed path: Ray Tune with the constraint-bridging searcher."""
    import ray

    from .tune_runner import run_tune

    def on_row(tune_config: dict, result: dict | None, error: str | None) -> None:
        policy = Policy.from_dict(tune_config["policy"])
        outcome = {"accuracy": None if result is None else result.get("accuracy"), "error": error,
                   "wall_s": 0.0 if result is None else result.get("eval_wall_s", 0.0),
                   "node": None if result is None else result.get("node")}
        rec.record(Trial(tune_config.get("trial_number", -1), policy), problem.costs(policy),
                   outcome, cached=False)

    workers = max(1, min(config.workers or int(ray.cluster_resources().get("CPU", 1)),
                         int(ray.cluster_resources().get("CPU", 1))))
    stopped = run_tune(problem, strategy, payload, config.trials - strategy.evaluations, workers,
                       state_dir, on_row, should_stop)
    if stopped:
        raise SearchCancelled("the search was cancelled")


def _start_scores(starts: dict[str, Policy], rows: list[dict[str, Any]]) -> dict[str, float]:
    """The search signal each of a strategy's starts got (label -> accuracy), where scored."""
    scored = {r["key"]: r["accuracy"] for r in rows if r.get("accuracy") is not None}
    return {label: scored[_policy_key(policy)] for label, policy in starts.items()
            if _policy_key(policy) in scored}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


"""The distributed path of the Optuna strategies: Ray Tune with a ``Searcher`` over the
strategy's own Optuna study, behind a ``ConcurrencyLimiter``.

Ray Tune's ``OptunaSearch`` passes no constraints to Optuna and keeps its study and trials in
private fields. ``StudySearcher`` is a plain Tune ``Searcher`` (public API: ``suggest`` and
``on_trial_complete``) that asks the strategy's study (same space, same storage, same
``trial.set_constraint`` values as the single-process path) until a proposal fits the budget,
so an infeasible candidate costs a table lookup in the driver and never a Tune trial, and tells
Optuna each evaluation. The model and validation data reach the trials once through
``tune.with_parameters`` (the object store), not once per trial.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import optuna
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from ..core import Evaluation, Policy
from .evaluator import EvalPayload, score_policy
from .problem import CompressionProblem
from .strategies.optuna_search import OptunaStrategy


class _DriverOnly:
    """Tune pickles its searcher, callbacks and stopper to checkpoint the experiment. These hold
    the problem (its predictor caches) and the job's callbacks, which live in the driver only;
    resuming goes through the Optuna storage, not Tune's restore, so they pickle to nothing."""

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class StudySearcher(_DriverOnly, Searcher):
    """Tune's search algorithm for a hwcompress Optuna strategy, budgets included."""

    def __init__(self, strategy: OptunaStrategy, budget_evals: int) -> None:
        metric = ["accuracy", strategy.options.objective] if strategy.multi_objective else "accuracy"
        mode = ["max", "min"] if strategy.multi_objective else "max"
        super().__init__(metric=metric, mode=mode)
        self.strategy = strategy
        self.budget_evals = budget_evals
        self.suggested = 0
        self.asked: dict[str, optuna.Trial] = {}   # Tune trial id -> the Optuna trial behind it

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.suggested >= self.budget_evals:
            return Searcher.FINISHED
        asked = self.strategy.ask_feasible()
        if asked is None:
            return Searcher.FINISHED
        ot, policy = asked
        self.asked[trial_id] = ot
        self.suggested += 1
        # the predicted costs travel with the trial so it reports the second objective as well
        return {"policy": policy.to_dict(), "trial_number": ot.number,
                "costs": self.strategy.problem.costs(policy)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot = self.asked.pop(trial_id, None)
        if ot is None:
            return  # told already (Tune may report a trial's end twice)
        policy = Policy.from_dict(result["config"]["policy"]) if result and "config" in result else Policy()
        acc = None if (error or not result) else result.get("accuracy")
        costs = self.strategy.problem.costs(policy)
        ev = Evaluation(policy, acc, costs["latency_ms"], costs["energy_mj"], costs["size_mb"],
                        int(costs["macs"]), True, "trial failed" if acc is None else None)
        self.strategy.tell_optuna(ot, ev)

    def save(self, checkpoint_path: str) -> None:
        pass  # the Optuna storage is the checkpoint

    def restore(self, checkpoint_path: str) -> None:
        pass


def _evaluate_trial(config: dict, payload: EvalPayload) -> dict:
    """The Tune trainable: score one policy; raise on failure so Tune records the trial as
    errored (with its error) and goes on."""
    import ray
    import torch

    torch.set_num_threads(1)
    out = score_policy(payload, config["policy"])
    if out["error"]:
        raise RuntimeError(out["error"])
    return {**config["costs"], "accuracy": out["accuracy"], "eval_wall_s": out["wall_s"],
            "node": ray.get_runtime_context().get_node_id()}


class _Events(_DriverOnly, tune.Callback):
    """Turns Tune's trial lifecycle into the runner's rows and events."""

    def __init__(self, on_row: Callable[[dict, dict | None, str | None], None]) -> None:
        self.on_row = on_row

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.on_row(trial.config, result, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        err = trial.error_file and Path(trial.error_file).read_text()[-500:] if trial.error_file else "error"
        self.on_row(trial.config, None, str(err).strip().splitlines()[-1] if err else "error")


class _StopWhen(_DriverOnly, tune.Stopper):
    def __init__(self, should_stop: Callable[[], bool] | None) -> None:
        self.should_stop = should_stop or (lambda: False)
        self.stopped = False

    def __call__(self, trial_id, result) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        self.stopped = self.stopped or bool(self.should_stop())
        return self.stopped


def run_tune(problem: CompressionProblem, strategy: OptunaStrategy, payload: EvalPayload,
             remaining: int, workers: int, state_dir: Path,
             on_row: Callable[[dict, dict | None, str | None], None],
             should_stop: Callable[[], bool] | None) -> bool:
    """Run ``remaining`` evaluations through Ray Tune; returns True if stopped by ``should_stop``."""
    if remaining <= 0:
        return False
    searcher = ConcurrencyLimiter(StudySearcher(strategy, remaining), max_concurrent=workers)
    stopper = _StopWhen(should_stop)
    trainable = tune.with_resources(tune.with_parameters(_evaluate_trial, payload=payload), {"cpu": 1})
    # Tune's new console output prints its experiment banner even at verbose=0; the CLI's bar
    # and the service's events are this search's progress, so Tune stays silent
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining, reuse_actors=True),
        run_config=tune.RunConfig(name=f"tune-{int(time.time())}", storage_path=str((state_dir / "tune").resolve()),
                                  callbacks=[_Events(on_row)], stop=stopper, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    tuner.fit()
    return stopper.stopped


__all__ = ["StudySearcher", "run_tune"]

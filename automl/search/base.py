"""The one interface every strategy speaks, in Optuna's ask/tell style.

A strategy *asks* for up to ``n`` trials (each a full policy) and is *told* each trial's
evaluation. The runner owns everything else: what a policy costs and whether it is feasible
(a table lookup), the expensive accuracy measurement (on Ray), events, resume and the result.
An RL episode that walks the layers is one ask; its reward is the tell.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..core import DEFAULT_OBJECTIVE, DEFAULT_SEED, DEFAULT_TRIALS, Evaluation, Policy
from .problem import CompressionProblem


@dataclass
class Trial:
    """One candidate: its policy, the numbers that produced it, and strategy-private state."""

    number: int
    policy: Policy
    params: dict[str, Any] = field(default_factory=dict)
    handle: Any = None
    intermediate: bool = False
    """A step on the way (NetAdapt's proposals at intermediate targets): scored even when it is
    over the final budget, but never chosen as the result unless it meets it."""


@dataclass
class StrategyOptions:
    """What a job says about the search effort; strategies take what applies to them."""

    trials: int = DEFAULT_TRIALS     # accuracy evaluations allowed
    seed: int = DEFAULT_SEED
    state_dir: Path | None = None    # where a strategy keeps state so a stopped search resumes
    objective: str = DEFAULT_OBJECTIVE  # second objective of multi-objective strategies
    extra: dict[str, Any] = field(default_factory=dict)


class Strategy(abc.ABC):
    """Base class of search strategies (see the module docstring)."""

    name: ClassVar[str] = "strategy"
    multi_objective: ClassVar[bool] = False

    def __init__(self, problem: CompressionProblem, options: StrategyOptions) -> None:
        self.problem = problem
        self.options = options
        self._numbers = 0

    def _trial(self, policy: Policy, params: dict[str, Any] | None = None, handle: Any = None,
               intermediate: bool = False) -> Trial:
        t = Trial(self._numbers, policy, params or {}, handle, intermediate)
        self._numbers += 1
        return t

    @abc.abstractmethod
    def ask(self, n: int) -> list[Trial]:
        """Up to ``n`` trials to evaluate now; an empty list means the strategy is finished."""

    @abc.abstractmethod
    def tell(self, trial: Trial, evaluation: Evaluation) -> None:
        """The evaluation of a trial this strategy asked for (infeasible ones carry no accuracy)."""

    def state(self) -> dict[str, Any]:
        """Progress a strategy wants recorded in the trace (e.g. NetAdapt's iteration)."""
        return {}

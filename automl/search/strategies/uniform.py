"""``uniform``: one keep ratio (and one bit-width) for every layer, the largest that meets the
budget, found by bisection on the table. The baseline everything else must beat."""

from __future__ import annotations

from ...core import Evaluation
from ..base import Strategy, Trial
from ..problem import CompressionProblem


def largest_feasible_ratio(problem: CompressionProblem, make, lo: float | None = None,
                           hi: float = 1.0, iterations: int = 24) -> float | None:
    """Bisection for the largest ``r`` in [lo, hi] with ``make(r)`` within budget (costs are
    monotone in ``r``); None when even ``lo`` is over."""
    lo = problem.min_keep_ratio if lo is None else lo
    if not problem.feasible(problem.costs(make(lo))):
        return None
    if problem.feasible(problem.costs(make(hi))):
        return hi
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if problem.feasible(problem.costs(make(mid))):
            lo = mid
        else:
            hi = mid
    return lo


class UniformStrategy(Strategy):
    """One trial per searchable bit-width: the largest uniform keep ratio meeting the budget."""

    name = "uniform"

    def __init__(self, problem, options) -> None:
        super().__init__(problem, options)
        self._pending: list[Trial] = []
        for bits in problem.bits_choices:
            r = largest_feasible_ratio(problem, lambda r, b=bits: problem.uniform_policy(r, b))
            if r is not None:
                self._pending.append(self._trial(problem.uniform_policy(r, bits),
                                                 {"keep_ratio": r, "bits": bits}))

    def ask(self, n: int) -> list[Trial]:
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def tell(self, trial: Trial, evaluation: Evaluation) -> None:
        pass


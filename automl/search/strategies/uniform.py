"""``uniform``: one keep ratio (and one bit-width) for every layer, the largest that meets the
budget, found by bisection on the table. The baseline everything else must beat."""

from __future__ import annotations

from ...core import Evaluation
from ..base import Strategy, Trial
from ..problem import largest_feasible_ratio

__all__ = ["UniformStrategy", "largest_feasible_ratio"]


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


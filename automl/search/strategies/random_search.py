"""``random``: random feasible policies by budget-bounded sampling.

Each trial draws a keep ratio per coupled group and a bit-width per layer, then shrinks the drawn
ratios together (bisection on a common scale) until the table says every budget holds, so no
accuracy evaluation is spent on an infeasible policy and samples land near the budget's edge,
where the accurate ones are."""

from __future__ import annotations

import numpy as np

from ...core import Evaluation, Policy
from ..base import Strategy, Trial
from .uniform import largest_feasible_ratio


def budget_bounded_policy(problem, rng: np.random.Generator,
                          bits: dict[str, tuple[int, int]]) -> tuple[Policy, float] | None:
    """A random keep ratio per coupled group, scaled down together (bisection on a common
    scale) until every budget holds; the policy and its scale, or None when even the smallest
    scale is over budget."""
    raw = {g: float(rng.uniform(problem.min_keep_ratio, 1.0)) for g in problem.groups}

    def make(scale: float) -> Policy:
        return problem.policy_from({g: max(problem.min_keep_ratio, r * scale) for g, r in raw.items()}, bits)

    scale = largest_feasible_ratio(problem, make, lo=0.0)
    return None if scale is None else (make(scale), scale)


class RandomStrategy(Strategy):
    name = "random"

    def __init__(self, problem, options) -> None:
        super().__init__(problem, options)
        self.rng = np.random.default_rng(options.seed)
        self._asked = 0

    def sample(self) -> Trial | None:
        p = self.problem
        for _ in range(20):
            bits = p.bits_for(lambda _name: int(self.rng.choice(p.bits_choices)))
            drawn = budget_bounded_policy(p, self.rng, bits)
            if drawn is not None:
                return self._trial(drawn[0], {"scale": drawn[1]})
        return None

    def ask(self, n: int) -> list[Trial]:
        out = []
        while len(out) < n and self._asked < self.options.trials:
            t = self.sample()
            if t is None:
                break
            out.append(t)
            self._asked += 1
        return out

    def tell(self, trial: Trial, evaluation: Evaluation) -> None:
        pass

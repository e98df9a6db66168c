"""``random``: random feasible policies by budget-bounded sampling.

Each trial draws a keep ratio per coupled group and a bit-width per layer, then shrinks the drawn
ratios together (bisection on a common scale) until the table says every budget holds, so no
accuracy evaluation is spent on an infeasible policy and samples land near the budget's edge,
where the accurate ones are."""

from __future__ import annotations

import numpy as np

from ...core import Evaluation
from ..base import Strategy, Trial
from .uniform import largest_feasible_ratio


class RandomStrategy(Strategy):
    name = "random"

    def __init__(self, problem, options) -> None:
        super().__init__(problem, options)
        self.rng = np.random.default_rng(options.seed)
        self._asked = 0

    def sample(self) -> Trial | None:
        p = self.problem
        for _ in range(20):
            raw = {g: float(self.rng.uniform(p.min_keep_ratio, 1.0)) for g in p.groups}
            bits = p.bits_for(lambda _name: int(self.rng.choice(p.bits_choices)))

            def make(scale: float, raw=raw, bits=bits):
                return p.policy_from({g: max(p.min_keep_ratio, r * scale) for g, r in raw.items()}, bits)

            scale = largest_feasible_ratio(p, make, lo=0.0)
            if scale is not None:
                return self._trial(make(scale), {"scale": scale})
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

"""Exploration noise with the schedule AMC and HAQ use.

AMC (``amc_search.py``) and HAQ explore with a normal distribution around the actor's action,
*truncated* to the action bounds (so exploring near a bound does not pile actions on it the
way clipping does), with sigma 0.5 decaying geometrically per episode after the warm-up
(×0.95 in AMC, ×0.99 in HAQ). The state is a NumPy generator plus the schedule, both
JSON-serialisable, so a resumed search continues the same noise stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class TruncatedNormalNoise:
    """``sample(mu, episode)``: mu + N(0, sigma(episode)) truncated to [low, high]."""

    def __init__(self, sigma: float = 0.5, decay: float = 0.95, warmup: int = 0, low: float = 0.0,
                 high: float = 1.0, seed: int = 0) -> None:
        self.sigma0 = float(sigma)
        self.decay = float(decay)
        self.warmup = int(warmup)
        self.low, self.high = float(low), float(high)
        self.rng = np.random.default_rng(seed)

    def sigma(self, episode: int) -> float:
        """Sigma for ``episode`` (0-based): constant through the warm-up, then decaying."""
        return self.sigma0 * self.decay ** max(0, episode - self.warmup)

    def sample(self, mu: np.ndarray, episode: int) -> np.ndarray:
        mu = np.clip(np.asarray(mu, dtype=np.float64), self.low, self.high)
        sigma = self.sigma(episode)
        if sigma <= 0:
            return mu.astype(np.float32)
        out = np.empty_like(mu)
        for i, m in np.ndenumerate(mu):
            # rejection sampling: at least half the mass of N(m, s) lies inside [low, high]
            # whenever m is inside, so this ends after ~2 draws on average
            for _ in range(1000):
                x = self.rng.normal(m, sigma)
                if self.low <= x <= self.high:
                    break
            else:
                x = m
            out[i] = x
        return out.astype(np.float32)

    def uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        """A warm-up action: uniform over the action box."""
        return self.rng.uniform(self.low, self.high, size=shape).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"sigma0": self.sigma0, "decay": self.decay, "warmup": self.warmup, "low": self.low,
                "high": self.high, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sigma0, self.decay, self.warmup = state["sigma0"], state["decay"], state["warmup"]
        self.low, self.high = state["low"], state["high"]
        self.rng.bit_generator.state = state["rng"]

"""Calibrating a net's regressed kernels on its own whole-model timings.

``hwcompress profile --kernels-from`` prices a net's layers with a
:class:`~latency_models.unseen.KernelRegressor` fitted on other nets and times only the whole
net at the remainder points. The regression's bias is uneven across kernel types: held out of
a table that knows VGG, ResNet-18's 7×7 entries came out 0.76× their measured time and its 3×3
ones 0.98–1.06× (BENCHMARKS.md, issue 14). A remainder curve over the activation ratio cannot
absorb a bias that moves with *which* layers a policy keeps, so the net read 64% within ±10%.

The remainder points already time the whole net at ~32 policies that keep different layers.
:class:`GroupMultipliers` fits one multiplier per (op, kernel size, precision) group of
regressed kernels on them — whole − fixed ≈ Σ_g α_g·K_g + a linear stand-in for the remainder
(constant, activation ratio, its int8 part, boundary ratio) — with a ridge that pulls each α_g
toward 1 (scaled by the group's size), its strength chosen by leave-one-out over the timed points
(no validation policy is used; "no correction" is one of the choices). The regressed entries are
scaled by their group's α; the remainder is then fitted as for any table. Measured entries are
never scaled: they count as fixed.

Read the multipliers as regression coefficients, not as each kernel kind's true error: a group
with a small share of the time (a stem conv, the classifier) is weakly identified and often
sits at a bound (:data:`MULTIPLIER_BOUNDS`) — it then stands in for how the policy's first or
last width moves the remainder. Leaving such groups at 1 was worse (MobileNetV2-1.0 held out:
80% within ±10% instead of 90%). What the leave-one-out guards is the prediction; measured on
the held-out families' validation policies (``python -m bench.lut_fidelity --holdout-calibrated``,
BENCHMARKS.md): MobileNetV2-1.0 @224 82% → 90% within ±10%, ResNet-18 @224 64% → 94%,
MobileNetV2-0.5 @32 87% → 91% (unscaled timings), ResNet-20 and VGG unchanged (96%, 88%).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from automl.core import ModelInfo, Policy

from .predictor import Predictor, policy_features
from .profile import HardwareProfile
from .table import LatencyTable, layer_key
from .unseen import KernelShape

RIDGES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)   # tried by leave-one-out; "none" (α = 1) as well
MULTIPLIER_BOUNDS = (0.3, 3.0)              # a regression off by more is a broken kernel sample
REMAINDER_TERMS = 4                         # constant, act ratio, int8 act ratio, boundary ratio


def kernel_group(key: str, precision: str) -> str:
    """The group a table entry is calibrated with: op and kernel size (``conv|k=3``), precision."""
    return f"{KernelShape.parse(key).group()}|{precision}"


@dataclass(frozen=True)
class WholeTiming:
    """One remainder point of the net: its whole-model time split the way the fit needs it."""

    whole_ms: float
    fixed_ms: float                          # overhead + Σ the net's measured (unscaled) kernels
    group_kernels_ms: Mapping[str, float]    # Σ regressed kernels per :func:`kernel_group`
    act_ratio: float
    int8_fraction: float
    boundary_ratio: float

    def remainder_terms(self) -> np.ndarray:
        return np.array([1.0, self.act_ratio, self.act_ratio * self.int8_fraction, self.boundary_ratio])


@dataclass(frozen=True)
class GroupMultipliers:
    """One multiplier per group of regressed kernels (module docstring); 1 for a group not fitted."""

    multipliers: dict[str, float] = field(default_factory=dict)
    ridge: float | None = None               # the leave-one-out choice; None: left at 1
    loo_rel_rmse: dict[str, float] = field(default_factory=dict)   # per ridge tried (and "none")

    def of(self, group: str) -> float:
        return self.multipliers.get(group, 1.0)

    @classmethod
    def fit(cls, timings: Sequence[WholeTiming], ridges: Sequence[float] = RIDGES) -> "GroupMultipliers":
        groups = sorted({g for t in timings for g, v in t.group_kernels_ms.items() if v > 0})
        if not groups or len(timings) < len(groups) + REMAINDER_TERMS + 2:
            return cls()                     # too few points to say anything per group
        k = np.array([[t.group_kernels_ms.get(g, 0.0) for g in groups] for t in timings])
        f = np.stack([t.remainder_terms() for t in timings])
        y = np.array([t.whole_ms - t.fixed_ms for t in timings])
        scale = np.sqrt((k ** 2).mean(axis=0)) + 1e-12
        loo = {"none": _loo_rel_rmse(k, f, y, scale, None)}
        for lam in ridges:
            loo[str(lam)] = _loo_rel_rmse(k, f, y, scale, lam)
        best = min(loo, key=loo.__getitem__)
        if best == "none":
            return cls({}, None, loo)
        alpha = _solve(k, f, y, scale, float(best))[:len(groups)]
        alpha = np.clip(alpha, *MULTIPLIER_BOUNDS)
        return cls({g: float(a) for g, a in zip(groups, alpha)}, float(best), loo)


def calibrate_regressed_kernels(table: LatencyTable, info: ModelInfo, profile: HardwareProfile,
                                timed: Sequence[tuple[Policy, float]]) -> GroupMultipliers:
    """Fit :class:`GroupMultipliers` for ``info``'s regressed kernels on its whole-model timings
    ``timed`` ((policy, whole_ms) at the remainder points), scale those entries of ``table`` by
    them and record the multipliers (times any recorded before: a re-fit corrects the scaled
    entries) in ``table.metadata.kernel_multipliers[model]``. A net with no regressed entry (its
    layers were timed) is left as it is."""
    keys = {layer_key(l) for l in info.layers}
    regressed = {(e.key, e.precision) for e in table.entries.values()
                 if e.key in keys and e.latency_source == "regressed"}
    if not regressed:
        return GroupMultipliers()
    # undo an earlier calibration first, so a re-fit (remainders re-timed) starts from the
    # regression's own guesses and the record stays one multiplier per group, not a product
    _scale(table, regressed, {g: 1.0 / a for g, a in
                              table.metadata.kernel_multipliers.get(info.model_name, {}).items()})
    pred = Predictor(table, profile, warn=False)
    plan = pred.plan(info)
    timings = []
    for policy, whole_ms in timed:
        fixed, groups = table.overhead_ms, {}
        for key, cin, cout, w, a, _, _ in plan.shapes(policy):
            precision = pred.precision(w, a)
            ms = pred.layer_cost(key, precision, cin, cout)[0]
            if (key, precision) in regressed:
                g = kernel_group(key, precision)
                groups[g] = groups.get(g, 0.0) + ms
            else:
                fixed += ms
        act, q, boundary = policy_features(info, policy, profile)
        timings.append(WholeTiming(whole_ms, fixed, groups, act, q, boundary))
    fit = GroupMultipliers.fit(timings)
    _scale(table, regressed, fit.multipliers)
    table.metadata.kernel_multipliers[info.model_name] = dict(sorted(fit.multipliers.items()))
    return fit


def _scale(table: LatencyTable, regressed: set[tuple[str, str]], multipliers: Mapping[str, float]) -> None:
    for e in list(table.entries.values()):
        a = multipliers.get(kernel_group(e.key, e.precision), 1.0)
        if (e.key, e.precision) in regressed and a != 1.0:
            table.add(replace(e, latency_ms=e.latency_ms * a))


def _solve(k: np.ndarray, f: np.ndarray, y: np.ndarray, scale: np.ndarray,
           ridge: float | None) -> np.ndarray:
    """[α…, β…] of y ≈ k·α + f·β with ridge·scale²·(α − 1)²; ``ridge=None``: α = 1 fixed."""
    n = k.shape[1]
    if ridge is None:
        beta = np.linalg.lstsq(f, y - k.sum(axis=1), rcond=None)[0]
        return np.concatenate([np.ones(n), beta])
    x = np.hstack([k, f])
    pull = np.zeros((n, x.shape[1]))
    pull[np.arange(n), np.arange(n)] = np.sqrt(ridge) * scale
    return np.linalg.lstsq(np.vstack([x, pull]), np.concatenate([y, np.sqrt(ridge) * scale]),
                           rcond=None)[0]


def _loo_rel_rmse(k: np.ndarray, f: np.ndarray, y: np.ndarray, scale: np.ndarray,
                  ridge: float | None) -> float:
    errors = []
    x = np.hstack([k, f])
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = _solve(k[keep], f[keep], y[keep], scale, ridge)
        errors.append((x[i] @ coef - y[i]) / y[i])
    return float(np.sqrt(np.mean(np.square(errors))))


__all__ = ["GroupMultipliers", "WholeTiming", "kernel_group", "calibrate_regressed_kernels", "RIDGES", "MULTIPLIER_BOUNDS"]

"""A model's kernels calibrated per kind on its own whole-model timings.

A table prices a policy as overhead + Σ kernels + remainder. The kernels are lone layers —
measured in isolation, or regressed from other nets (``hwcompress profile --kernels-from``) —
and what they miss of the graph differs by kernel kind: regressed, ResNet-18's 7×7 entries
came out 0.76× their measured time and its 3×3 ones ≈1× (held out of a table that knows VGG);
measured, a lone layer runs with its weights warm and its layout settled, which a graph does
not give every kind alike. The remainder is a curve over the activation ratio (plus glue terms);
it cannot absorb an error that moves with *which* layers a policy keeps.

The remainder points already time the whole model at ~32 policies that keep different layers.
:class:`GroupMultipliers` fits one multiplier per (op, kernel size, precision) group of the
model's kernels on them — whole − overhead ≈ Σ_g α_g·K_g + a linear stand-in for the remainder
(constant, activation ratio, its int8 part, boundary ratio) — with a ridge that pulls each α_g
toward 1 (scaled by the group's size), its strength chosen by leave-one-out over the timed points
(no validation policy is used; "no correction" is one of the choices). They are recorded per
model in the table's metadata and applied by the predictor to that model's kernels; the remainder
is then fitted on what is left, as before. The entries stay what was measured or regressed.

Read the multipliers as regression coefficients, not as each kernel kind's true in-graph cost: a
group with a small share of the time (a stem conv, the classifier) is weakly identified and often
sits at a bound (:data:`MULTIPLIER_BOUNDS`) — it then stands in for how the policy's first or
last width moves the remainder. Leaving such groups at 1 was worse (MobileNetV2-1.0 held out:
80% within ±10% instead of 90%). Measured on the stored validation policies (``python -m
bench.lut_fidelity --calibrate-stored``, BENCHMARKS.md, issue 14), within ±10% / ±5%:
MobileNetV2-1.0 @224 100% / 70% → 100% / 88%, ResNet-18 @224 92% / 58% → 100% / 68%, ResNet-20
@32 unchanged (no correction chosen), MobileNetV2-0.5 @32 96% / 76% → 96% / 74%, VGG @32
100% / 88% → 100% / 77%; held out (kernels regressed): MobileNetV2-1.0 82% → 90%, ResNet-18
64% → 94%, MobileNetV2-0.5 87% → 91%, ResNet-20 and VGG unchanged (96%, 88%).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from automl.core import ModelInfo, Policy

from .predictor import Predictor, policy_features
from .profile import HardwareProfile
from .table import LatencyTable
from .unseen import kernel_group

RIDGES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)   # tried by leave-one-out; "none" (α = 1) as well
MULTIPLIER_BOUNDS = (0.3, 3.0)              # past these a multiplier stands in for something else
REMAINDER_TERMS = 4                         # constant, act ratio, int8 act ratio, boundary ratio


@dataclass(frozen=True)
class WholeTiming:
    """One remainder point of a model: its whole-model time split the way the fit needs it."""

    whole_ms: float
    fixed_ms: float                          # what no multiplier applies to: the per-call overhead
    group_kernels_ms: Mapping[str, float]    # Σ the kernels per :func:`kernel_group`
    act_ratio: float
    int8_fraction: float
    boundary_ratio: float

    def remainder_terms(self) -> np.ndarray:
        return np.array([1.0, self.act_ratio, self.act_ratio * self.int8_fraction, self.boundary_ratio])


@dataclass(frozen=True)
class GroupMultipliers:
    """One multiplier per kernel group of a model (module docstring); 1 for a group not fitted."""

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


def calibrate_kernels(table: LatencyTable, info: ModelInfo, profile: HardwareProfile,
                      timed: Sequence[tuple[Policy, float]]) -> GroupMultipliers:
    """Fit :class:`GroupMultipliers` for ``info``'s kernels on its whole-model timings ``timed``
    ((policy, whole_ms) at the remainder points) and record them in
    ``table.metadata.kernel_multipliers[model]`` (empty: fitted, leave-one-out chose no
    correction), where :class:`~latency_models.predictor.Predictor` applies them to this model's
    kernels. The entries themselves are left as measured (or regressed): another model of the
    table that shares a layer shape is not moved. Any earlier record of the model is set aside
    first, so a re-fit starts from the entries again."""
    table.metadata.kernel_multipliers.pop(info.model_name, None)
    table.version += 1                       # predictors built on the table drop their caches
    pred = Predictor(table, profile, warn=False)
    plan = pred.plan(info)
    timings = []
    for policy, whole_ms in timed:
        groups: dict[str, float] = {}
        for key, cin, cout, w, a, _, _ in plan.shapes(policy):
            precision = pred.precision(w, a)
            g = kernel_group(key, precision)
            groups[g] = groups.get(g, 0.0) + pred.layer_cost(key, precision, cin, cout)[0]
        act, q, boundary = policy_features(info, policy, profile)
        timings.append(WholeTiming(whole_ms, table.overhead_ms, groups, act, q, boundary))
    fit = GroupMultipliers.fit(timings)
    table.metadata.kernel_multipliers[info.model_name] = dict(sorted(fit.multipliers.items()))
    table.version += 1
    return fit


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


__all__ = ["GroupMultipliers", "WholeTiming", "kernel_group", "calibrate_kernels", "RIDGES", "MULTIPLIER_BOUNDS"]

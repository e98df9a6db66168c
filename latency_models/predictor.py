"""Predicting a policy's latency and energy from a table: overhead + Σ kernels + remainder.

Interpolation between grid points is **bilinear in (in_channels, out_channels)** (linear in the
channel count for depthwise layers, whose in = out). Why not NetAdapt's cubic RBF: a layer's
work is bilinear in its channel counts (MACs = in·out·k²·H·W, weight bytes ∝ in·out, activation
bytes ∝ in and ∝ out), so a + b·in + c·out + d·in·out is the cost model's own form: bilinear
interpolation reproduces it exactly, stays monotone wherever the measured grid is monotone (an
RBF can overshoot between points), and costs a couple of bisections per lookup. Off the grid it
extrapolates linearly from the edge cell (proportionally when a dimension has a single point)
with an :class:`ExtrapolationWarning`, and never fails.

Each layer lookup is cached on (key, precision, in, out), so predicting a policy is a sum of
dictionary hits after the first few calls: a few microseconds per layer.
"""

from __future__ import annotations

import bisect
import warnings
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from automl.core import FLOAT_BITS, ModelInfo, Policy, kept_channels

from .devices.registry import kind_for_runtime
from .grid import same_residue
from .profile import PROFILES, HardwareProfile
from .table import LatencyTable, RemainderEntry, TableError, layer_key
from .unseen import kernel_group

if TYPE_CHECKING:
    from .unseen import UnseenModel


Curves = dict[float, tuple[list[float], list[float]]]
"""int8 share -> (activation ratios, remainder_ms) of one model."""


class ExtrapolationWarning(UserWarning):
    """A prediction left the measured grid; the number is a linear extrapolation."""


class StaleRemainderWarning(UserWarning):
    """A model's remainders were timed against kernel entries the table no longer holds."""


class MissingEntryError(TableError):
    """A layer shape was never profiled into this table."""


def _bracket(values: Sequence[int], x: float) -> tuple[int, int, float, bool]:
    """Indices (lo, hi) around ``x`` in sorted ``values`` and the weight of hi; True if outside."""
    n = len(values)
    if n == 1:
        return 0, 0, 0.0, x != values[0]
    i = bisect.bisect_left(values, x)
    if i < n and values[i] == x:
        return i, i, 0.0, False
    lo = min(max(i - 1, 0), n - 2)
    hi = lo + 1
    t = (x - values[lo]) / (values[hi] - values[lo])
    return lo, hi, t, x < values[0] or x > values[-1]


@dataclass
class Grid:
    """One layer key at one precision: values on a rectangular (in, out) grid."""

    in_values: list[int]
    out_values: list[int]
    latency: np.ndarray   # [len(in), len(out)]
    energy: np.ndarray
    diagonal: bool = False    # depthwise: in == out, indexed by out only

    def at(self, cin: int, cout: int) -> tuple[float, float, bool]:
        if self.diagonal:
            xs, lat_row, en_row = self._series(cout)
            lo, hi, t, outside = _bracket(xs, cout)
            lat = self._lerp1(lat_row, lo, hi, t, xs, cout)
            en = self._lerp1(en_row, lo, hi, t, xs, cout)
            return lat, en, outside
        i0, i1, ti, out_i = _bracket(self.in_values, cin)
        o0, o1, to, out_o = _bracket(self.out_values, cout)
        sx = cin / self.in_values[0] if len(self.in_values) == 1 else 1.0
        sy = cout / self.out_values[0] if len(self.out_values) == 1 else 1.0
        vals = []
        for arr in (self.latency, self.energy):
            v = ((1 - ti) * (1 - to) * arr[i0, o0] + ti * (1 - to) * arr[i1, o0]
                 + (1 - ti) * to * arr[i0, o1] + ti * to * arr[i1, o1])
            vals.append(max(0.0, float(v) * sx * sy))
        return vals[0], vals[1], out_i or out_o

    def _series(self, cout: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """The depthwise points to interpolate ``cout`` between: those of its own series
        (:func:`latency_models.grid.same_residue`) when at least two of them bracket it, else all."""
        idx = [k for k, o in enumerate(self.out_values) if same_residue(o, cout)]
        if len(idx) >= 2 and self.out_values[idx[0]] <= cout <= self.out_values[idx[-1]]:
            return ([self.out_values[k] for k in idx], self.latency[0][idx], self.energy[0][idx])
        return self.out_values, self.latency[0], self.energy[0]

    @staticmethod
    def _lerp1(row: np.ndarray, lo: int, hi: int, t: float, xs: Sequence[int], x: float) -> float:
        if len(xs) == 1:
            return max(0.0, float(row[0]) * x / xs[0])
        return max(0.0, float((1 - t) * row[lo] + t * row[hi]))


def build_grid(table: LatencyTable, key: str, precision: str) -> Grid | None:
    points = table.grid(key, precision)
    if not points:
        return None
    diagonal = key.startswith("depthwise")
    if diagonal:
        by_out = {o: e for (_, o), e in sorted(points.items())}
        outs = sorted(by_out)
        lat = np.array([[by_out[o].latency_ms for o in outs]])
        en = np.array([[by_out[o].energy_mj for o in outs]])
        return Grid([outs[0]], outs, lat, en, diagonal=True)
    ins = sorted({i for i, _ in points})
    outs = sorted({o for _, o in points})
    lat = np.full((len(ins), len(outs)), np.nan)
    en = np.full_like(lat, np.nan)
    for (i, o), e in points.items():
        lat[ins.index(i), outs.index(o)] = e.latency_ms
        en[ins.index(i), outs.index(o)] = e.energy_mj
    if np.isnan(lat).any():  # a half-built table: fill holes with a least-squares bilinear fit
        lat, en = _fill(ins, outs, lat), _fill(ins, outs, en)
    return Grid(ins, outs, lat, en)


def _fill(ins: list[int], outs: list[int], arr: np.ndarray) -> np.ndarray:
    ii, oo = np.meshgrid(np.array(ins, float), np.array(outs, float), indexing="ij")
    feats = np.stack([np.ones_like(ii), ii, oo, ii * oo], -1)
    known = ~np.isnan(arr)
    coef, *_ = np.linalg.lstsq(feats[known], arr[known], rcond=None)
    out = arr.copy()
    out[~known] = np.maximum(feats[~known] @ coef, 0.0)
    return out


def _piecewise(xs: list[float], ys: list[float], x: float) -> float:
    if len(xs) == 1:
        return ys[0] * x / xs[0] if xs[0] else ys[0]
    lo, hi, t, _ = _bracket(xs, x)  # type: ignore[arg-type]
    return (1 - t) * ys[lo] + t * ys[hi]


def profile_of(table: LatencyTable) -> HardwareProfile:
    md = table.metadata
    base = PROFILES.get(md.device)
    if base is None:
        base = HardwareProfile(md.device, kind_for_runtime(md.runtime), md.runtime, tuple(md.precisions))
    return HardwareProfile(base.name, base.kind, base.runtime, tuple(md.precisions),
                           md.channel_step, md.threads, md.batch, base.params)


def policy_features(info: ModelInfo, policy: Policy, profile: HardwareProfile,
                    channel_step: int | None = None) -> tuple[float, float, float]:
    """(activation ratio, int8 share, boundary ratio) of ``policy``: what the remainder scales
    with. Pooling and residual adds touch every activation (ratio: kept volume / full volume);
    int8 and fp32 models differ in their glue (int8 share of the kept volume); where an int8
    layer follows an fp32 one or the reverse, a quantize or dequantize op runs on the tensor in
    between (boundary volume / full volume, layers taken in execution order)."""
    plan = ModelPlan(info, profile.channel_step if channel_step is None else channel_step)
    return plan.features(plan.shapes(policy), profile.precision_for)


class ModelPlan:
    """A traced model compiled for fast prediction: per layer, its table key, its coupling
    group and its full channels, so turning a policy into channel counts is a few list
    operations. It computes exactly what :func:`automl.core.policy_layer_shapes` computes
    (tests/test_latency_predictor.py checks them against each other on random policies); that
    function builds dataclasses per layer and takes ~3 µs a layer, too slow for µs predictions.
    """

    def __init__(self, info: ModelInfo, channel_step: int) -> None:
        self.info = info
        self.step = channel_step
        groups = info.prune_groups
        names = list(groups)
        self.group_leaders = [(groups[g][0], info.layer(groups[g][0]).out_channels) for g in names]
        gindex = {g: i for i, g in enumerate(names)}
        self.layers = []
        for layer in info.layers:
            og = gindex.get(layer.prune_group) if layer.prunable else None
            ig = gindex.get(layer.input_group) if layer.input_group is not None else None
            self.layers.append((layer.name, layer_key(layer), og, layer.out_channels, ig,
                                layer.in_channel_multiplier, layer.in_channels,
                                layer.op == "depthwise", layer.out_hw[0] * layer.out_hw[1],
                                layer.in_hw[0] * layer.in_hw[1]))
        self.full_volume = sum(l.out_channels * l.out_hw[0] * l.out_hw[1] for l in info.layers)

    def shapes(self, policy: Policy) -> list[tuple[str, int, int, int, int, int, int]]:
        """Per layer: (key, in, out, w_bits, a_bits, output area, input area)."""
        pl = policy.layers
        kept = []
        for leader, channels in self.group_leaders:
            lp = pl.get(leader)
            kept.append(kept_channels(channels, lp.keep_ratio if lp is not None else 1.0, self.step))
        out = []
        for name, key, og, out_full, ig, mult, in_full, dw, area, in_area in self.layers:
            c_out = kept[og] if og is not None else out_full
            c_in = c_out if dw else (kept[ig] * mult if ig is not None else in_full)
            lp = pl.get(name)
            w, a = (lp.w_bits, lp.a_bits) if lp is not None else (FLOAT_BITS, FLOAT_BITS)
            out.append((key, c_in, c_out, w, a, area, in_area))
        return out

    def features(self, shapes, precision_for) -> tuple[float, float, float]:
        kept = int8 = boundary = 0.0
        prev = None
        for _, cin, cout, w, a, area, in_area in shapes:
            p = precision_for(w, a)
            v = cout * area
            kept += v
            if p == "int8":
                int8 += v
            if prev is not None and p != prev:
                boundary += cin * in_area
            prev = p
        full = self.full_volume or 1.0
        return kept / full, (int8 / kept if kept else 0.0), boundary / full


class Predictor:
    """Predicts (latency_ms, energy_mj) of policies of models whose layers are in ``table``."""

    def __init__(self, table: LatencyTable, profile: HardwareProfile | None = None,
                 warn: bool = True, unseen: "UnseenModel | None" = None) -> None:
        """``unseen``: what to predict from when the table lacks a layer shape or a model's
        remainder (:mod:`latency_models.unseen`); without it a missing shape is an error."""
        self.table = table
        self.unseen = unseen
        self.profile = profile or profile_of(table)
        self.warn = warn
        self._grids: dict[tuple[str, str], Grid | None] = {}
        self._warned: set[tuple] = set()
        self._version = table.version
        self._curves: dict[tuple, RemainderModel | None] = {}
        self._plans: dict[int, ModelPlan] = {}
        self._prec: dict[tuple[int, int], str] = {}
        self._multipliers: dict[str, dict[tuple[str, str], float] | None] = {}
        self.layer_cost = lru_cache(maxsize=65536)(self._layer_cost)

    def _refresh(self) -> None:
        if self.table.version != self._version:
            self._grids.clear()
            self._curves.clear()
            self._multipliers.clear()
            self.layer_cost.cache_clear()
            self._version = self.table.version

    def _layer_cost(self, key: str, precision: str, cin: int, cout: int) -> tuple[float, float]:
        gk = (key, precision)
        if gk not in self._grids:
            self._grids[gk] = build_grid(self.table, key, precision)
        grid = self._grids[gk]
        if grid is None and self.unseen is not None:
            guess = self.unseen.kernels.predict(key, precision, cin, cout)
            if guess is not None:
                return guess
        if grid is None:
            raise MissingEntryError(
                f"latency table ({self.table.metadata.device}) has no entries for layer shape "
                f"{key!r} at precision {precision!r}; profile this model with "
                "`hwcompress profile --model NAME --out TABLE` (same input size)")
        lat, en, outside = grid.at(cin, cout)
        if outside and self.warn and gk + (cin, cout) not in self._warned:
            self._warned.add(gk + (cin, cout))
            warnings.warn(f"{key} at {precision}, in={cin} out={cout} is outside the measured grid "
                          f"(in {grid.in_values[0]}..{grid.in_values[-1]}, out "
                          f"{grid.out_values[0]}..{grid.out_values[-1]}): extrapolated linearly",
                          ExtrapolationWarning, stacklevel=3)
        return lat, en

    def plan(self, info: ModelInfo) -> ModelPlan:
        plan = self._plans.get(id(info))
        if plan is None or plan.info is not info:
            plan = self._plans[id(info)] = ModelPlan(info, self.profile.channel_step)
        return plan

    def precision(self, w: int, a: int) -> str:
        """The table precision (``fp32``, ``int8``, ...) that a layer with ``w``/``a`` bits runs at."""
        p = self._prec.get((w, a))
        if p is None:
            p = self._prec[(w, a)] = self.profile.precision_for(w, a)
        return p

    def predict(self, info: ModelInfo, policy: Policy) -> tuple[float, float]:
        """(latency_ms, energy_mj) of ``info`` compressed by ``policy``: the runtime's per-call
        overhead + Σ layer kernels + the model's remainder."""
        self._refresh()
        plan = self.plan(info)
        shapes = plan.shapes(policy)
        lat, en, int8_lat = self._kernel_sum(shapes, self.multipliers(info))
        rem = self._remainder(info, *plan.features(shapes, self.precision), int8_kernels_ms=int8_lat)
        # a remainder corrects the kernels (isolated entries carry costs a graph shares) but
        # never takes away more than half of them: a fitted one (curves far from their points,
        # the cross-model fit for an unseen net) could otherwise predict a negative latency
        rem = max(rem, -0.5 * lat)
        return self.table.overhead_ms + lat + rem, en

    def kernels(self, info: ModelInfo, policy: Policy) -> tuple[float, float]:
        """Σ of the layer kernels' (latency_ms, energy_mj) under ``policy``."""
        self._refresh()
        return self._kernel_sum(self.plan(info).shapes(policy), self.multipliers(info))[:2]

    def int8_kernels_ms(self, info: ModelInfo, policy: Policy) -> float:
        """Σ of the int8 layers' kernel latency under ``policy`` (part of :meth:`kernels`)."""
        return self.kernel_sums(info, policy)[2]

    def kernel_sums(self, info: ModelInfo, policy: Policy) -> tuple[float, float, float]:
        """(Σ latency_ms, Σ energy_mj, Σ latency_ms of the int8 layers) of the layer kernels
        under ``policy``: :meth:`kernels` and :meth:`int8_kernels_ms` in one pass."""
        self._refresh()
        return self._kernel_sum(self.plan(info).shapes(policy), self.multipliers(info))

    def multipliers(self, info: ModelInfo) -> dict[tuple[str, str], float] | None:
        """The in-graph multipliers fitted for this model on its whole-model timings
        (:mod:`latency_models.kernel_calibration`), per (layer key, precision) of its layers, or
        None (a table from before them, or a model whose fit chose no correction). Resolved
        once per model: a search predicts thousands of policies."""
        name = info.model_name
        if name not in self._multipliers:
            groups = self.table.metadata.kernel_multipliers.get(name)
            self._multipliers[name] = {
                (k, p): groups.get(kernel_group(k, p), 1.0)
                for k in {layer_key(l) for l in info.layers} for p in self.profile.precisions
            } if groups else None
        return self._multipliers[name]

    def _kernel_sum(self, shapes, multipliers: dict[tuple[str, str], float] | None = None
                    ) -> tuple[float, float, float]:
        """(Σ latency, Σ energy, Σ latency of the int8 layers); each kernel's latency times its
        multiplier when given (energy is the kernels' own)."""
        lat = en = int8_lat = 0.0
        for key, cin, cout, w, a, _, _ in shapes:
            precision = self.precision(w, a)
            l, e = self.layer_cost(key, precision, cin, cout)
            if multipliers:
                l *= multipliers.get((key, precision), 1.0)
            lat += l
            en += e
            if precision == "int8":
                int8_lat += l
        return lat, en, int8_lat

    def remainder_ms(self, info: ModelInfo, policy: Policy) -> float:
        plan = self.plan(info)
        shapes = plan.shapes(policy)
        return self._remainder(info, *plan.features(shapes, self.precision),
                               int8_kernels_ms=self._kernel_sum(shapes, self.multipliers(info))[2])

    def _remainder(self, info: ModelInfo, act: float, q: float, boundary: float = 0.0,
                   int8_kernels_ms: float = 0.0) -> float:
        rk = (info.model_name, tuple(info.input_shape))
        if rk not in self._curves:
            rows = self.table.remainders_for(info.model_name, info.input_shape)
            self._curves[rk] = RemainderModel.fit(rows) if rows else None
            if rows and self.warn:
                self._warn_if_stale(info, rows)
        curves = self._curves[rk]
        if curves is None and self.unseen is not None and self.unseen.remainder is not None:
            return self.unseen.remainder.at(info, act, q, boundary)
        if curves is None:
            if self.warn and ("remainder", info.model_name) not in self._warned:
                self._warned.add(("remainder", info.model_name))
                warnings.warn(f"latency table has no measured remainder for model "
                              f"{info.model_name!r} at input {list(info.input_shape)}: predicting "
                              "the sum of layer kernels only (expect an under-estimate)",
                              ExtrapolationWarning, stacklevel=3)
            return 0.0
        return curves.at(act, q, boundary, int8_kernels_ms)

    def _warn_if_stale(self, info: ModelInfo, rows: Sequence[RemainderEntry]) -> None:
        """Warn when the unpruned model's kernels no longer sum to what they summed to when its
        remainders were timed: a remainder is the whole minus *those* kernels, so after entries
        were re-measured or merged in (a regressed table's kernels replaced by measured ones,
        ``lut merge``) it double-counts or drops the difference, silently."""
        ref = [r for r in rows if r.source == "measured" and r.kernels_ms > 0
               and r.act_ratio >= 0.999 and r.int8_fraction == 0 and r.boundary_ratio == 0]
        if not ref:
            return
        try:
            now = self._kernel_sum(self.plan(info).shapes(Policy()), self.multipliers(info))[0]
        except TableError:
            return
        then = ref[0].kernels_ms
        if abs(now - then) > STALE_REMAINDER_SHARE * ref[0].whole_ms:
            warnings.warn(
                f"latency table: the remainders of model {info.model_name!r} at input "
                f"{list(info.input_shape)} were timed when its unpruned layer kernels summed to "
                f"{then:.4f} ms; they now sum to {now:.4f} ms (entries re-measured or merged since): "
                "predictions are off by the difference; re-run `hwcompress profile` on this model "
                "to re-time them", StaleRemainderWarning, stacklevel=4)


STALE_REMAINDER_SHARE = 0.03
"""How far (share of the unpruned model's whole latency) the kernels may move under a model's
remainders before :class:`StaleRemainderWarning`: the run-to-run spread of a re-profiled table."""

LINE_FIT_POINTS = 5


def _remainder_curves(rows: Sequence[RemainderEntry]) -> Curves:
    """Per int8 share, the remainder over the activation ratio: through the points when there
    are few, a Theil–Sen line when there are ≥ ``LINE_FIT_POINTS`` distinct ratios. Why the
    line: some int8 graphs run far off their neighbours (ResNet-20 int8 at 0.75 width measured
    0.40 ms, twice as much remainder as random policies of the same volume at 0.24 ms, in
    repeated measurements), and a curve through every point carries one such graph's cost to
    every policy near it; the median of pairwise slopes ignores it."""
    from scipy.stats import theilslopes

    curves: Curves = {}
    for frac in sorted({round(r.int8_fraction, 6) for r in rows}):
        pts = sorted((r.act_ratio, r.remainder_ms) for r in rows if round(r.int8_fraction, 6) == frac)
        ux = sorted({x for x, _ in pts})
        if len(ux) >= LINE_FIT_POINTS:
            slope, intercept, *_ = theilslopes([y for _, y in pts], [x for x, _ in pts])
            lo, hi = ux[0], ux[-1]
            curves[frac] = ([lo, hi], [float(intercept + slope * lo), float(intercept + slope * hi)])
            continue
        # identical act ratios (a model too narrow to prune further): average them
        uy = [float(np.mean([y for x, y in pts if x == u])) for u in ux]
        curves[frac] = (ux, uy)
    return curves


def _remainder_at(curves: Curves, act: float, q: float) -> float:
    """Linear in the activation ratio along each measured precision, then linear in the int8
    share between the all-fp32 and all-int8 curves."""
    fracs = sorted(curves)
    vals = [_piecewise(*curves[f], act) for f in fracs]
    if len(fracs) == 1:
        return vals[0]
    return _piecewise(fracs, vals, min(max(q, fracs[0]), fracs[-1]))


@dataclass
class RemainderModel:
    """A model's remainder: curves over the activation ratio for uniform-precision models; a
    mixed model adds ``ms_per_boundary`` × boundary ratio (the quantize/dequantize and layout
    glue where precision switches) and ``int8_slowdown`` × Σ its int8 kernels (an int8 kernel
    runs ~1.2–1.3× its table entry anywhere in a mixed graph but 0.9–1.1× in an all-int8 one,
    ``python -m bench.mixed_nodes``), both fitted on the mixed calibration points."""

    curves: Curves
    ms_per_boundary: float = 0.0
    int8_slowdown: float = 0.0

    @classmethod
    def fit(cls, rows: Sequence[RemainderEntry]) -> "RemainderModel":
        uniform = [r for r in rows if r.boundary_ratio == 0]
        mixed = [r for r in rows if r.boundary_ratio > 0]
        curves = _remainder_curves(uniform or rows)
        if not mixed:
            return cls(curves)
        residual = np.array([r.remainder_ms - _remainder_at(curves, r.act_ratio, r.int8_fraction)
                             for r in mixed])
        if any(r.int8_kernels_ms is None for r in mixed):   # a table from before the int8 term
            return cls(curves, _median_slope(residual, np.array([r.boundary_ratio for r in mixed])))
        x = np.array([[r.boundary_ratio, r.int8_kernels_ms] for r in mixed])
        k, slowdown = _trimmed_nnls(x, residual)
        return cls(curves, k, slowdown)

    def uniform_at(self, act: float, q: float) -> float:
        """The remainder of a uniform-precision model (no boundary term)."""
        return _remainder_at(self.curves, act, q)

    def at(self, act: float, q: float, boundary: float = 0.0, int8_kernels_ms: float = 0.0) -> float:
        if boundary <= 0:
            return self.uniform_at(act, q)
        return self.uniform_at(act, q) + self.ms_per_boundary * boundary + self.int8_slowdown * int8_kernels_ms


def _median_slope(y: np.ndarray, x: np.ndarray) -> float:
    """The median of per-point slopes y/x: one cost per unit of x that one odd point cannot set."""
    return float(np.median(y / x))


def _trimmed_nnls(x: np.ndarray, y: np.ndarray) -> tuple[float, ...]:
    """Non-negative least squares (both terms are costs), refitted once without the points whose
    residual is more than 3 robust sigmas out: now and then ORT leaves the fp32 convs of one mixed
    graph off its fast NCHWc path (VGG: 1.08 ms instead of ~0.4), and one such graph would
    otherwise set the cost for all. Chosen over the median boundary slope alone because it
    predicts each table's own left-out mixed calibration points better on all four fidelity
    cells (leave-one-out mean error 4.0–4.7% vs 4.4–7.4%: ``python -m bench.mixed_residual``)."""
    from scipy.optimize import nnls

    coef = nnls(x, y)[0]
    resid = y - x @ coef
    mad = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    keep = np.abs(resid) <= 3 * mad if mad > 0 else np.ones(len(y), bool)
    if len(y) >= 6 and 0 < keep.sum() < len(y):
        coef = nnls(x[keep], y[keep])[0]
    return tuple(float(c) for c in coef)


_PREDICTORS: "weakref.WeakKeyDictionary[LatencyTable, Predictor]" = weakref.WeakKeyDictionary()


def predict(model_info: ModelInfo, policy: Policy, table: LatencyTable) -> tuple[float, float]:
    """(latency_ms, energy_mj) of ``model_info`` under ``policy`` on ``table``'s device."""
    pred = _PREDICTORS.get(table)
    if pred is None:
        pred = _PREDICTORS[table] = Predictor(table)
    return pred.predict(model_info, policy)


__all__ = ["Predictor", "predict", "policy_features", "ExtrapolationWarning", "MissingEntryError",
           "StaleRemainderWarning",
           "Grid", "build_grid"]

"""A layer at other channel counts, and the grid of (in, out) counts a table holds for it.

Pure arithmetic on :class:`automl.core.LayerInfo` (no torch, no runtime): shared by the
measuring profiler and by the simulators, which price the same grid without a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from automl.core import LayerInfo, ModelInfo, kept_channels

from .energy import HorowitzEnergyModel, precision_bits
from .table import LatencyTable, layer_key

# Grid points per channel axis when the user names none, for every model. A kernel's time is
# bilinear in its channel counts (latency_models.predictor), so a few points pin it, and what
# lone kernels miss in the graph is fitted on whole-model timings anyway (remainder, per-kind
# multipliers). 32x32 nets had 12 until their tables cut to exact 3- and 5-point grids predicted
# their measured policies as well on the Xeon (bench.grid_density); on the AMD host (channel
# step 8) 12 points read 94% / 70% within +-10% / +-5% against 5 points' 92% / 60% for
# MobileNetV2-0.5 at 3x the entries (BENCHMARKS.md): `--grid-points 12` buys that back. The
# table is most of what a first search waits for (issue 12's check: 482 entries instead of 862).
DEFAULT_POINTS = 5
# Inner grid points are moved to the nearest channel count that is a multiple of this (1: not
# moved). Off: on the AMD host (channel step 8) tables with points at multiples of 16, built back
# to back with the default ones and judged on the same fresh timings (python -m bench.grid_align),
# predicted two cells better within +-5% and two worse (MobileNetV2-0.5 @32 88% vs 77%, VGG @32 88%
# vs 94%; BENCHMARKS.md, "Grid alignment"): no gain beyond which channel counts happen to be on the
# grid. At channel step 16 (the Xeon) every choice is a multiple of 16 already.
GRID_ALIGN = 1
# A depthwise kernel's time is interpolated between grid points of its own series: channel
# counts that are multiples of this, or the others (latency_models.predictor.Grid). ORT's int8
# depthwise kernel on the AVX2 host runs a multiple of 16 channels in about the fp32 time and an
# odd multiple of 8 up to 2.5x slower (python -m bench.channel_sweep), so one line through both
# zigzags: on the stored timings of five AMD cells, interpolating within the series read 77 -> 85%
# within +-5% for MobileNetV2-0.5 @32 and better on all four MobileNetV2-1.0 @224 runs
# (python -m bench.depthwise_series); on a fresh table and policies 62 -> 68% (BENCHMARKS.md).
# At channel step 16 (the Xeon) there is one series.
DEPTHWISE_RESIDUE = 16
MIN_POINTS, MAX_POINTS = 2, 32   # a bilinear fit needs 2; 32 per axis is already ~1000 entries a layer


def check_points(points: int) -> int:
    """``points`` per channel axis, refused outside ``MIN_POINTS..MAX_POINTS`` with its name: a
    grid grows as points² per layer and precision, so an unbounded value is hours of profiling."""
    if not MIN_POINTS <= int(points) <= MAX_POINTS:
        raise ValueError(f"grid_points: {points} is outside {MIN_POINTS}..{MAX_POINTS}")
    return int(points)


def layer_at(layer: LayerInfo, cin: int, cout: int) -> LayerInfo:
    """``layer`` with other channel counts (and its MACs/params recomputed)."""
    if layer.op == "depthwise":
        cin = cout
    groups = cout if layer.op == "depthwise" else 1
    if layer.op == "linear":
        macs, params = cin * cout, cin * cout + cout
    else:
        k2 = layer.kernel * layer.kernel
        macs = layer.out_hw[0] * layer.out_hw[1] * cout * (cin // groups) * k2
        params = cout * (cin // groups) * k2
    return LayerInfo(name=layer.name, op=layer.op, in_channels=cin, out_channels=cout,
                     kernel=layer.kernel, stride=layer.stride, padding=layer.padding, groups=groups,
                     in_hw=layer.in_hw, out_hw=layer.out_hw, macs=macs, params=params,
                     has_bn=layer.has_bn, activation=layer.activation)


def layer_energy_mj(model: HorowitzEnergyModel, layer: LayerInfo, cin: int, cout: int,
                    precision: str) -> float:
    at = layer_at(layer, cin, cout)
    w, a = precision_bits(precision)
    in_elems = at.in_channels * (1 if at.op == "linear" else at.in_hw[0] * at.in_hw[1])
    out_elems = at.out_channels * (1 if at.op == "linear" else at.out_hw[0] * at.out_hw[1])
    return model.layer_energy_mj(at.macs, at.weight_count, in_elems, out_elems, w, a)


# ---- the grid ------------------------------------------------------------------------------
def _spread(candidates: Sequence[int], n: int, align: int = 1) -> list[int]:
    """``n`` values spread evenly over sorted ``candidates`` (always the first and last), each
    inner one moved to the nearest candidate that is a multiple of ``align`` (when one is)."""
    cands = sorted(set(candidates))
    if len(cands) <= n:
        return cands
    idx = np.unique(np.round(np.linspace(0, len(cands) - 1, n)).astype(int))
    values = [cands[i] for i in idx]
    aligned = [c for c in cands if c % align == 0] if align > 1 else []
    if not aligned:
        return values
    inner = {min(aligned, key=lambda c: (abs(c - v), c)) for v in values[1:-1]}
    return sorted({values[0], values[-1], *inner})


def same_residue(a: int, b: int) -> bool:
    """Whether two channel counts are in the same depthwise series (:data:`DEPTHWISE_RESIDUE`)."""
    return (a % DEPTHWISE_RESIDUE == 0) == (b % DEPTHWISE_RESIDUE == 0)


def channel_choices(channels: int, step: int) -> list[int]:
    """Every channel count a policy can keep of ``channels`` (see :func:`kept_channels`)."""
    step = max(1, step)
    out = {kept_channels(channels, k * step / channels, step) for k in range(1, channels // step + 2)}
    out.add(channels)
    return sorted(out)


@dataclass
class GridPlan:
    """The (in, out) points to measure for one layer key."""

    key: str
    layer: LayerInfo          # a representative layer (shape fields only matter)
    in_values: list[int]
    out_values: list[int]

    def points(self) -> list[tuple[int, int]]:
        if self.layer.op == "depthwise":
            return [(c, c) for c in self.out_values]
        return [(i, o) for i in self.in_values for o in self.out_values]


def plan_grid(info: ModelInfo, channel_step: int, points: int = DEFAULT_POINTS,
              align: int | None = None) -> list[GridPlan]:
    """One grid per distinct layer key; each member layer's full (in, out) is on its grid.
    ``align`` (default :data:`GRID_ALIGN`) moves inner points to multiples of it."""
    align = GRID_ALIGN if align is None else max(1, int(align))
    by_key: dict[str, list[LayerInfo]] = {}
    for layer in info.layers:
        by_key.setdefault(layer_key(layer), []).append(layer)
    group_channels = {layer.prune_group: layer.out_channels for layer in info.layers
                      if layer.prune_group is not None}
    points = check_points(points)
    plans = []
    for key, members in by_key.items():
        ins: set[int] = set()
        outs: set[int] = set()
        in_full: set[int] = set()
        out_full: set[int] = set()
        for layer in members:
            out_full.add(layer.out_channels)
            if layer.prunable and layer.prune_group is not None:
                outs.update(channel_choices(layer.out_channels, channel_step))
            else:
                outs.add(layer.out_channels)
            in_full.add(layer.in_channels)
            if layer.input_group is not None and layer.input_group in group_channels:
                m = layer.in_channel_multiplier
                ins.update(c * m for c in channel_choices(group_channels[layer.input_group], channel_step))
            else:
                ins.add(layer.in_channels)
        out_values = sorted(set(_spread(sorted(outs), points, align)) | out_full)
        in_values = sorted(set(_spread(sorted(ins), points, align)) | in_full)
        plans.append(GridPlan(key, members[0], in_values, out_values))
    return plans


def missing_points(table: LatencyTable, plans: Sequence[GridPlan],
                   precisions: Sequence[str]) -> list[tuple[GridPlan, int, int, str]]:
    """(plan, in, out, precision) of every grid point ``table`` has no entry for: what a
    measured, regressed or simulated fill still has to price (each resumes from it)."""
    return [(plan, cin, cout, prec) for plan in plans for cin, cout in plan.points()
            for prec in precisions if not table.has(plan.key, prec, cin, cout)]

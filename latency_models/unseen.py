"""Predicting nets a table never profiled, from what it measured of other nets.

A table holds measured grids for the layer shapes (keys) of the models it profiled, and each
model's remainder (whole − overhead − Σ kernels). A net it never saw has keys with no grid and
no remainder. nn-Meter's lesson is that kernels, not whole models, generalise: a conv kernel's
time follows its work whichever net it sits in. So:

- :class:`KernelRegressor`: per (op, kernel size, precision), a non-negative linear model of the
  layer's time in its work terms — MACs, input, output and weight elements, a constant — fitted
  on every measured entry of the table, weighted for *relative* error (each row divided by its
  latency). Non-negative and linear, it extrapolates with the work (a 224×224 layer from 32×32
  ones) where a tree model would flatten out. A (op, kernel) group with too few entries falls
  back to the op's pooled fit.
  Its guesses can also be written into a table as ``regressed`` entries (``hwcompress profile
  --kernels-from``, :func:`latency_models.profiler.regress_layers`), so a net is priced without
  timing one of its layers, and only its whole-model remainder is measured.
- :class:`CrossModelRemainder`: the remainder of an unseen net from the remainders measured on
  the others, least squares in absolute terms — the kept activation elements (what pooling,
  residual adds and layout changes touch), those of int8 layers (isolated int8 entries include a
  quantize and a dequantize that vanish between int8 layers in a graph), the elements where
  precision switches, the layer count, a constant.

Both plug into :class:`latency_models.predictor.Predictor` as its ``unseen`` fallback: a key
with no grid goes to the regressor, a model with no remainder to the cross-model fit. Only the
core types are imported: the caller passes the traced :class:`ModelInfo` of the table's models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from automl.core import ModelInfo

from .table import LatencyTable

MIN_GROUP_ENTRIES = 8
REMAINDER_MODES = ("none", "cross-model")
RELATIVE_FLOOR_MS = 0.02   # relative weighting stops here (see _relative_nnls)


@dataclass(frozen=True)
class KernelShape:
    """A table key read back: the layer's op and geometry (channels aside)."""

    op: str
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    in_hw: tuple[int, int] = (1, 1)

    @classmethod
    def parse(cls, key: str) -> "KernelShape":
        parts = key.split("|")
        fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if parts[0] == "linear":
            return cls("linear")
        h, w = (int(v) for v in fields["hw"].split("x"))
        return cls(parts[0], int(fields["k"]), int(fields["s"]), int(fields["p"]), (h, w))

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.op == "linear":
            return (1, 1)
        return tuple((d + 2 * self.padding - self.kernel) // self.stride + 1  # type: ignore[return-value]
                     for d in self.in_hw)

    def features(self, cin: int, cout: int) -> np.ndarray:
        """[1, MACs, input, output, weight elements] in millions (the constant in units of 1)."""
        (h, w), (oh, ow) = self.in_hw, self.out_hw
        if self.op == "linear":
            macs, inp, out, wts = cin * cout, cin, cout, cin * cout
        elif self.op == "depthwise":
            macs = cout * self.kernel ** 2 * oh * ow
            inp, out, wts = cout * h * w, cout * oh * ow, cout * self.kernel ** 2
        else:
            macs = cin * cout * self.kernel ** 2 * oh * ow
            inp, out, wts = cin * h * w, cout * oh * ow, cin * cout * self.kernel ** 2
        return np.array([1.0, macs / 1e6, inp / 1e6, out / 1e6, wts / 1e6])

    def group(self) -> str:
        return self.op if self.op == "linear" else f"{self.op}|k={self.kernel}"


@lru_cache(maxsize=4096)
def kernel_group(key: str, precision: str) -> str:
    """A table entry's kernel kind: op and kernel size (``conv|k=3``) and precision — what the
    regressor pools its fits by and what a model's in-graph multipliers are kept per
    (:mod:`latency_models.kernel_calibration`)."""
    return f"{KernelShape.parse(key).group()}|{precision}"


@dataclass
class KernelRegressor:
    """Non-negative linear models of a kernel's time and energy in its work (module docstring)."""

    latency: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    energy: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    rows: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def fit(cls, table: LatencyTable) -> "KernelRegressor":
        by_group: dict[tuple[str, str], list[tuple[np.ndarray, float, float]]] = {}
        for e in table.entries.values():
            if e.latency_ms <= 0 or e.latency_source == "regressed":   # its own output: never
                continue
            shape = KernelShape.parse(e.key)
            row = (shape.features(e.in_channels, e.out_channels), e.latency_ms, e.energy_mj)
            by_group.setdefault((shape.group(), e.precision), []).append(row)
            by_group.setdefault((shape.op, e.precision), []).append(row)
            by_group.setdefault(("*", e.precision), []).append(row)
        reg = cls()
        for gk, rows in by_group.items():
            x = np.stack([r[0] for r in rows])
            reg.rows[gk] = len(rows)
            reg.latency[gk] = _relative_nnls(x, np.array([r[1] for r in rows]))
            reg.energy[gk] = _relative_nnls(x, np.array([max(r[2], 1e-12) for r in rows]))
        return reg

    def coefficients(self, shape: KernelShape, precision: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The (op, kernel) fit, else the op's, else every op's at this precision (a net whose
        classifier shape the table never saw: every zoo net shares ``linear|act=none``)."""
        for gk in ((shape.group(), precision), (shape.op, precision), ("*", precision)):
            if self.rows.get(gk, 0) >= MIN_GROUP_ENTRIES:
                return self.latency[gk], self.energy[gk]
        for gk in ((shape.op, precision), ("*", precision)):
            if gk in self.latency:
                return self.latency[gk], self.energy[gk]
        return None

    def predict(self, key: str, precision: str, cin: int, cout: int) -> tuple[float, float] | None:
        """(latency_ms, energy_mj) of this kernel, or None when the table has nothing at this
        precision."""
        shape = KernelShape.parse(key)
        coef = self.coefficients(shape, precision)
        if coef is None:
            return None
        f = shape.features(cin, cout)
        return float(f @ coef[0]), float(f @ coef[1])


def _relative_nnls(x: np.ndarray, y: np.ndarray, floor: float = RELATIVE_FLOOR_MS) -> np.ndarray:
    """argmin_{c ≥ 0} Σ ((x·c − y) / max(y, floor))²: relative error, so small kernels count as
    much as big — down to ``floor``. Below it a kernel's time is within the noise of the per-call
    overhead subtracted from it (entries clip at 1e-5 ms), and weighting those by 1/y let a few
    dozen clipped entries of a kernel sample pull every coefficient to ~0 (issue 14)."""
    w = 1.0 / np.maximum(y, floor)
    coef, _ = nnls(x * w[:, None], y * w)
    return coef


def full_volume_m(info: ModelInfo) -> float:
    """The uncompressed model's activation elements (millions): what the ratios are relative to."""
    return sum(l.out_channels * l.out_hw[0] * l.out_hw[1] for l in info.layers) / 1e6


def remainder_features(info: ModelInfo, act_ratio: float, int8_fraction: float,
                       boundary_ratio: float, full: float | None = None) -> np.ndarray:
    """[1, kept activation, int8 activation, boundary elements (millions), layer count / 100]."""
    full = full_volume_m(info) if full is None else full
    kept = act_ratio * full
    return np.array([1.0, kept, kept * int8_fraction, boundary_ratio * full, len(info.layers) / 100])


@dataclass
class CrossModelRemainder:
    """A remainder for any net, fitted on the remainders the table measured on its models."""

    coef: np.ndarray
    models: list[str]
    _volumes: dict[int, float] = field(default_factory=dict, repr=False)

    @classmethod
    def fit(cls, table: LatencyTable, infos: Mapping[str, ModelInfo]) -> "CrossModelRemainder | None":
        x, y, used = [], [], []
        for name, info in infos.items():
            rows = table.remainders_for(name, info.input_shape)
            for r in rows:
                x.append(remainder_features(info, r.act_ratio, r.int8_fraction, r.boundary_ratio))
                y.append(r.remainder_ms)
            if rows:
                used.append(name)
        if len(y) < 5:
            return None
        # a small ridge, relative to each term's scale: three or four models leave some terms
        # nearly collinear (the layer count takes one value per model)
        xa, ya = np.stack(x), np.array(y)
        gram = xa.T @ xa
        lam = np.diag(1e-6 * np.diag(gram) + 1e-12)
        coef = np.linalg.solve(gram + lam, xa.T @ ya)
        return cls(coef, used)

    def at(self, info: ModelInfo, act_ratio: float, int8_fraction: float, boundary_ratio: float) -> float:
        # the model's volume once per model, not per prediction (a search predicts thousands)
        full = self._volumes.get(id(info))
        if full is None:
            full = self._volumes[id(info)] = full_volume_m(info)
        return float(remainder_features(info, act_ratio, int8_fraction, boundary_ratio, full) @ self.coef)


@dataclass
class UnseenModel:
    """The fallback a :class:`~latency_models.predictor.Predictor` uses for what its table lacks."""

    kernels: KernelRegressor
    remainder: CrossModelRemainder | None

    @classmethod
    def fit(cls, table: LatencyTable, infos: Mapping[str, ModelInfo],
            remainder: str = "none") -> "UnseenModel":
        """``remainder='none'`` (the default) predicts an unseen net as the sum of its kernels, as
        nn-Meter does; ``'cross-model'`` adds :class:`CrossModelRemainder`. Measured leave-one-
        family-out over the zoo (BENCHMARKS.md, issue 14) the cross-model remainder made every
        family worse — its sign differs by family (MobileNets' remainders are negative: isolated
        kernels over-count; ResNet-18's positive: adds and pooling), so three or four other
        families cannot say which an unseen one has — e.g. VGG 0% within ±10% with it, 61%
        without."""
        if remainder not in REMAINDER_MODES:
            raise ValueError(f"remainder: {remainder!r} is not one of {REMAINDER_MODES}")
        return cls(KernelRegressor.fit(table),
                   CrossModelRemainder.fit(table, infos) if remainder == "cross-model" else None)


def table_without(table: LatencyTable, models: Sequence[ModelInfo]) -> LatencyTable:
    """A copy of ``table`` that never saw ``models``: their remainders and every entry whose
    key is one of their layers' keys dropped (also where another model shares the key, so the
    copy knows nothing measured at their shapes)."""
    from .table import layer_key

    from .table import TableMetadata

    keys = {layer_key(l) for info in models for l in info.layers}
    names = {info.model_name for info in models}
    md = TableMetadata(**table.metadata.to_dict())
    md.input_shapes = {m: s for m, s in md.input_shapes.items() if m not in names}
    md.kernel_multipliers = {m: k for m, k in md.kernel_multipliers.items() if m not in names}
    return LatencyTable(md, [e for e in table.entries.values() if e.key not in keys],
                        [r for r in table.remainders if r.model not in names],
                        table.overhead_ms, table.overhead_source)


__all__ = ["KernelShape", "kernel_group", "KernelRegressor", "CrossModelRemainder", "UnseenModel",
           "table_without", "remainder_features"]

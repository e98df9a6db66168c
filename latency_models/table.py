"""The latency lookup table (LUT): a versioned JSON file of measured per-layer latencies.

One table holds the numbers of one device + runtime + thread count + batch size. It has three
kinds of rows, because a whole-model prediction is ``overhead + Σ layer kernels + remainder``
(see ``latency_models/predictor.py``):

* ``entries``: one layer kernel (conv / depthwise / linear, with its folded BN and fused
  activation, as the runtime executes it) at one (in, out) channel count and one precision;
* ``remainders``: per model, what the whole model costs beyond its layer kernels (input
  handling, pooling, residual adds, quantize/dequantize boundaries), measured at a few uniform
  widths and both precisions;
* ``overhead_ms``: the runtime's per-call cost, measured once and counted once per model.

Every number says where it came from (``measured``, ``modeled`` or ``simulated``). The format
is written down in docs/lut-format.md; bump :data:`SCHEMA_VERSION` when it changes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from automl.core import HwcompressError, LayerInfo

FORMAT_NAME = "hwcompress-latency-table"
SCHEMA_VERSION = 2  # 2: int8 entries time the kernel uint8 -> uint8, without the lone layer's Q/DQ
SOURCES = ("measured", "modeled", "simulated", "regressed")
# "regressed": a kernel of a net the table never timed layer by layer, priced by
# latency_models.unseen.KernelRegressor from the measured entries (``hwcompress profile
# --kernels-from``); never fitted on again, and a measured entry always replaces it in a merge

# Metadata fields that must agree between a table and the request it is used for (and between
# two tables that are merged): numbers from another device or thread count mean nothing here.
COMPAT_FIELDS = ("device", "runtime", "threads", "batch", "hardware")


class TableError(HwcompressError, ValueError):
    """A table file is unreadable, corrupted, truncated or of an unknown schema."""


class TableMismatchError(TableError):
    """A table was made for other conditions (device, threads, ...) than requested."""


def layer_key(layer: LayerInfo) -> str:
    """The shape part of a layer that a table entry is keyed by (channels and precision aside).

    Two layers with the same key cost the same at the same channels, so one grid serves both
    (ResNet-20's stage convs share a key)."""
    act = layer.activation or "none"
    if layer.op == "linear":
        return f"linear|act={act}"
    h, w = layer.in_hw
    return (f"{layer.op}|k={layer.kernel}|s={layer.stride}|p={layer.padding}|hw={h}x{w}"
            f"|bn={int(layer.has_bn)}|act={act}")


@dataclass
class TableEntry:
    """One layer kernel at one channel count and precision."""

    key: str
    in_channels: int
    out_channels: int
    precision: str
    latency_ms: float               # kernel time: the isolated run minus the per-call overhead
    iqr_ms: float = 0.0
    raw_median_ms: float = 0.0      # the isolated run's median, overhead included
    repeats: int = 0                # per block; the fastest of ``blocks`` block medians is kept
    blocks: int = 1
    remeasured: bool = False        # a block was re-run because its IQR was too wide
    latency_source: str = "measured"
    energy_mj: float = 0.0
    energy_source: str = "modeled"

    @property
    def ident(self) -> tuple[str, str, int, int]:
        return (self.key, self.precision, self.in_channels, self.out_channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TableEntry":
        return cls(**_checked(cls, d, "entry"))


@dataclass
class RemainderEntry:
    """A model's whole measured latency minus its predicted kernels, at one operating point.

    ``act_ratio`` is the policy's activation volume relative to the full model (what pooling,
    adds and quantize/dequantize boundaries scale with); ``int8_fraction`` is the share of that
    volume produced by int8 layers; ``boundary_ratio`` is the activation volume entering layers
    whose precision differs from the previous layer's (where int8 and fp32 meet, quantize /
    dequantize ops run), relative to the full model's activation volume; ``int8_kernels_ms`` is
    the int8 layers' share of ``kernels_ms`` (their kernels run slower inside a mixed graph than
    inside an all-int8 one, which the mixed remainder carries)."""

    model: str
    input_shape: list[int]
    act_ratio: float
    int8_fraction: float
    remainder_ms: float
    whole_ms: float
    kernels_ms: float
    source: str = "measured"
    remainder_energy_mj: float = 0.0
    boundary_ratio: float = 0.0
    int8_kernels_ms: float | None = None    # Σ of the int8 layers' kernels (None: not recorded)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RemainderEntry":
        return cls(**_checked(cls, d, "remainder"))


def _checked(cls, d: Any, what: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise TableError(f"{what}: expected an object, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = required - set(d)
    if missing:
        raise TableError(f"{what}: missing fields {sorted(missing)} in {dict(d)!r:.200}")
    unknown = set(d) - names
    if unknown:
        raise TableError(f"{what}: unknown fields {sorted(unknown)}")
    out = dict(d)
    for f in fields(cls):
        if f.name not in out:
            continue
        v = out[f.name]
        if f.type in ("int",) and (isinstance(v, bool) or not isinstance(v, int)):
            raise TableError(f"{what}: field {f.name}={v!r} is not an integer")
        if f.type == "float" or (f.type == "float | None" and v is not None):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TableError(f"{what}: field {f.name}={v!r} is not a finite number")
            out[f.name] = float(v)
        if f.type == "str" and not isinstance(v, str):
            raise TableError(f"{what}: field {f.name}={v!r} is not a string")
    for src in ("latency_source", "energy_source", "source"):
        if src in out and out[src] not in SOURCES:
            raise TableError(f"{what}: {src}={out[src]!r} is not one of {list(SOURCES)}")
    return out


@dataclass
class TableMetadata:
    """Under what conditions the numbers were taken."""

    device: str                     # the hardware profile name, e.g. "cpu-ort"
    runtime: str                    # "onnxruntime", "torch", "bitfusion-sim"
    runtime_version: str
    threads: int
    batch: int
    hardware: str                   # CPU / GPU model string, or the simulated accelerator's name
    channel_step: int
    precisions: list[str]
    input_shapes: dict[str, list[int]] = field(default_factory=dict)   # model -> (C, H, W)
    created: str = ""
    hwcompress_version: str = ""
    energy_model: str = ""
    notes: str = ""
    # the int8 export the whole-model remainders were timed with (onnx_runtime.INT8_EXPORT):
    # the export decides which glue runs between int8 and fp32 layers, so a change makes the
    # remainders stale (the per-layer entries time lone layers and stay valid)
    int8_export: str = ""
    # per model: the multiplier per kernel group (op, kernel size, precision) that the predictor
    # applies to its kernels, fitted on its whole-model timings (latency_models.kernel_calibration);
    # a model missing here predicts from its entries as they are
    kernel_multipliers: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TableMetadata":
        if not isinstance(d, Mapping):
            raise TableError("metadata: expected an object")
        names = {f.name for f in fields(cls)}
        missing = {"device", "runtime", "runtime_version", "threads", "batch", "hardware",
                   "channel_step", "precisions"} - set(d)
        if missing:
            raise TableError(f"metadata: missing fields {sorted(missing)}")
        unknown = set(d) - names
        if unknown:
            raise TableError(f"metadata: unknown fields {sorted(unknown)}")
        for k in ("threads", "batch", "channel_step"):
            if isinstance(d[k], bool) or not isinstance(d[k], int) or d[k] < 1:
                raise TableError(f"metadata: {k}={d[k]!r} must be a positive integer")
        _check_multipliers(d.get("kernel_multipliers", {}))
        return cls(**dict(d))


def _check_multipliers(value: Any) -> None:
    """``kernel_multipliers``: model → {kernel group → a positive finite number}; the predictor
    multiplies kernels by them, so anything else is refused here, by field, not mid-search."""
    if not isinstance(value, Mapping):
        raise TableError("metadata: kernel_multipliers must be an object (model -> {group: number})")
    for model, groups in value.items():
        if not isinstance(groups, Mapping):
            raise TableError(f"metadata: kernel_multipliers[{model!r}] must be an object (group -> number)")
        for group, a in groups.items():
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not (math.isfinite(a) and a > 0):
                raise TableError(f"metadata: kernel_multipliers[{model!r}][{group!r}]={a!r} must be a "
                                 "positive number")


class LatencyTable:
    """Entries indexed by (key, precision, in, out), plus per-model remainders and overhead."""

    def __init__(self, metadata: TableMetadata, entries: Iterable[TableEntry] = (),
                 remainders: Iterable[RemainderEntry] = (), overhead_ms: float = 0.0,
                 overhead_source: str = "measured") -> None:
        self.metadata = metadata
        self.entries: dict[tuple[str, str, int, int], TableEntry] = {}
        for e in entries:
            self.add(e)
        self.remainders: list[RemainderEntry] = list(remainders)
        self.overhead_ms = float(overhead_ms)
        self.overhead_source = overhead_source
        self.version = 0  # bumped on every change, so predictors can drop their caches

    # ---- content ---------------------------------------------------------------------------
    def add(self, entry: TableEntry) -> None:
        self.entries[entry.ident] = entry
        self.version = getattr(self, "version", 0) + 1

    def has(self, key: str, precision: str, cin: int, cout: int) -> bool:
        return (key, precision, cin, cout) in self.entries

    def keys(self) -> list[str]:
        return sorted({k for k, _, _, _ in self.entries})

    def grid(self, key: str, precision: str) -> dict[tuple[int, int], TableEntry]:
        return {(i, o): e for (k, p, i, o), e in self.entries.items() if k == key and p == precision}

    def remainders_for(self, model: str, input_shape: Iterable[int]) -> list[RemainderEntry]:
        shape = [int(v) for v in input_shape]
        return [r for r in self.remainders if r.model == model and list(r.input_shape) == shape]

    def reference_ms(self, model: str, input_shape: Iterable[int]) -> float | None:
        """The unpruned all-fp32 model's whole latency as measured when its remainders were
        (the full-width fp32 remainder point), or None. What ``lut validate --relative`` scales a
        measurement timed beside the same model to (:mod:`latency_models.validate`), for a host
        whose speed drifts between building a table and validating it."""
        full = [r.whole_ms for r in self.remainders_for(model, input_shape)
                if r.act_ratio >= 0.999 and r.int8_fraction == 0 and r.boundary_ratio == 0]
        return full[0] if full else None

    def set_remainders(self, model: str, input_shape: Iterable[int], rows: list[RemainderEntry]) -> None:
        shape = [int(v) for v in input_shape]
        self.remainders = [r for r in self.remainders
                           if not (r.model == model and list(r.input_shape) == shape)] + rows
        self.version += 1

    # ---- compatibility -----------------------------------------------------------------------
    def check_compatible(self, request: Mapping[str, Any]) -> None:
        """Raise :class:`TableMismatchError` naming every field of ``request`` (device, runtime,
        threads, batch, hardware, channel_step) that disagrees with this table."""
        bad = []
        for k, want in request.items():
            if want is None:
                continue
            have = getattr(self.metadata, k, None)
            if have != want:
                bad.append(f"{k}: table has {have!r}, requested {want!r}")
        if bad:
            raise TableMismatchError(
                f"latency table for device {self.metadata.device!r} does not match the request "
                f"({'; '.join(bad)}); profile this device with `hwcompress profile` instead of "
                "reusing numbers taken under other conditions")

    def compat_request(self) -> dict[str, Any]:
        return {k: getattr(self.metadata, k) for k in COMPAT_FIELDS}

    # ---- merge -----------------------------------------------------------------------------
    def merge(self, other: "LatencyTable", prefer: str = "tighter") -> "LatencyTable":
        """Union of two tables taken under the same conditions (else :class:`TableMismatchError`).

        Where both hold an entry, a measured one beats a regressed one (whose IQR of 0 is no
        measurement's); otherwise ``prefer='tighter'`` keeps the one with the smaller relative
        IQR (the more trustworthy measurement), ``'other'`` takes ``other``'s."""
        self.check_compatible(other.compat_request())
        if other.metadata.channel_step != self.metadata.channel_step:
            raise TableMismatchError(f"channel_step: {self.metadata.channel_step} vs "
                                     f"{other.metadata.channel_step}")
        md = TableMetadata(**self.metadata.to_dict())
        md.precisions = sorted(set(md.precisions) | set(other.metadata.precisions))
        md.input_shapes = {**md.input_shapes, **other.metadata.input_shapes}
        out = LatencyTable(md, self.entries.values(), self.remainders, self.overhead_ms,
                           self.overhead_source)
        for e in other.entries.values():
            mine = out.entries.get(e.ident)
            if mine is None or _measured_over(e, mine) or (not _measured_over(mine, e) and (
                    prefer == "other" or (prefer == "tighter" and _rel_iqr(e) < _rel_iqr(mine)))):
                out.add(e)
        for model, shape in other.metadata.input_shapes.items():
            rows = other.remainders_for(model, shape)
            if rows and (prefer == "other" or not out.remainders_for(model, shape)):
                out.set_remainders(model, shape, rows)
                # the multipliers its rows were computed with travel with them
                md.kernel_multipliers.pop(model, None)
                if model in other.metadata.kernel_multipliers:
                    md.kernel_multipliers[model] = dict(other.metadata.kernel_multipliers[model])
        if not out.overhead_ms:
            out.overhead_ms = other.overhead_ms
        return out

    # ---- file ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "metadata": self.metadata.to_dict(),
            "overhead_ms": self.overhead_ms,
            "overhead_source": self.overhead_source,
            "entries": [e.to_dict() for e in sorted(self.entries.values(), key=lambda e: e.ident)],
            "remainders": [r.to_dict() for r in self.remainders],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "table") -> "LatencyTable":
        if not isinstance(d, Mapping):
            raise TableError(f"{where}: expected a JSON object at the top level")
        if d.get("format") != FORMAT_NAME:
            raise TableError(f"{where}: not a latency table (format={d.get('format')!r}, "
                             f"expected {FORMAT_NAME!r})")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TableError(f"{where}: schema_version {version!r} is not supported "
                             f"(this hwcompress reads version {SCHEMA_VERSION}); re-profile")
        for k in ("metadata", "entries", "remainders", "overhead_ms"):
            if k not in d:
                raise TableError(f"{where}: missing top-level field {k!r}")
        if not isinstance(d["entries"], list) or not isinstance(d["remainders"], list):
            raise TableError(f"{where}: 'entries' and 'remainders' must be lists")
        try:
            md = TableMetadata.from_dict(d["metadata"])
            entries = [TableEntry.from_dict(e) for e in d["entries"]]
            rems = [RemainderEntry.from_dict(r) for r in d["remainders"]]
        except TableError as exc:
            raise TableError(f"{where}: {exc}") from None
        except TypeError as exc:
            raise TableError(f"{where}: malformed row ({exc})") from None
        oh = d["overhead_ms"]
        if isinstance(oh, bool) or not isinstance(oh, (int, float)) or not math.isfinite(oh):
            raise TableError(f"{where}: overhead_ms={oh!r} is not a finite number")
        for e in entries:
            if e.precision not in md.precisions:
                raise TableError(f"{where}: entry {e.ident} has precision {e.precision!r} "
                                 f"not listed in metadata.precisions {md.precisions}")
        return cls(md, entries, rems, float(oh), d.get("overhead_source", "measured"))

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename), so an interrupted profile never leaves a
        truncated table behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        path = Path(path)
        if not path.is_file():
            raise TableError(f"latency table {path}: file not found")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise TableError(f"latency table {path}: unreadable ({exc})") from None
        if not text.strip():
            raise TableError(f"latency table {path}: file is empty")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TableError(f"latency table {path}: corrupted or truncated JSON at line "
                             f"{exc.lineno} column {exc.colno} ({exc.msg}); re-run "
                             "`hwcompress profile` with the same --out to rebuild it") from None
        return cls.from_dict(data, where=f"latency table {path}")

    def summary(self) -> dict[str, Any]:
        md = self.metadata
        by_source: dict[str, int] = {}
        for e in self.entries.values():
            by_source[e.latency_source] = by_source.get(e.latency_source, 0) + 1
        return {"device": md.device, "runtime": f"{md.runtime} {md.runtime_version}",
                "hardware": md.hardware, "threads": md.threads, "batch": md.batch,
                "channel_step": md.channel_step, "precisions": md.precisions,
                "models": md.input_shapes, "entries": len(self.entries), "layer_keys": len(self.keys()),
                "remainders": len(self.remainders), "overhead_ms": self.overhead_ms,
                "sources": by_source, "created": md.created,
                "hwcompress_version": md.hwcompress_version, "energy_model": md.energy_model,
                "kernel_multipliers": md.kernel_multipliers}


def _rel_iqr(e: TableEntry) -> float:
    return e.iqr_ms / e.raw_median_ms if e.raw_median_ms > 0 else math.inf


def _measured_over(a: TableEntry, b: TableEntry) -> bool:
    """Whether ``a`` was measured and ``b`` only regressed (a merge keeps ``a`` then)."""
    return a.latency_source == "measured" and b.latency_source == "regressed"

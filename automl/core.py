"""Core types shared by every part of hwcompress.

This module imports nothing of ours (and not torch) so that ``latency_models`` can depend on it
without depending on the rest of ``automl`` (see docs/architecture.md). Every type here is a
plain dataclass with a JSON round-trip, because policies, budgets and evaluations travel over
gRPC, through Ray's object store and into SQLite.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Mapping

# -- defaults: one named constant per default, read by the CLI, the service, the search and the
# agents alike (they once said 30 trials in one place and 20 in another) ------------------------
DEFAULT_STRATEGY = "uniform"
DEFAULT_TRIALS = 20
"""Accuracy evaluations a search may spend (episodes for an RL agent)."""
DEFAULT_SEED = 0
DEFAULT_BASELINE_EPOCHS = 10
"""Training epochs of a zoo model's baseline (part of its cache key)."""
DEFAULT_OBJECTIVE = "latency_ms"
"""The second objective of multi-objective strategies."""
DEFAULT_RL_MODE = "joint"
"""What an RL agent decides in a local search: channels and bits together. (The service's
``RL_MODE_UNSPECIFIED`` means ``prune`` by its API contract; see services/catalog.py.)"""


FLOAT_BITS = 32
"""A bit-width of 32 means "not quantized" (float)."""

ALLOWED_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, FLOAT_BITS)

LAYER_OPS = ("conv", "depthwise", "linear")


# -- errors: one root; every error hwcompress raises on purpose derives from it --------------------
class HwcompressError(Exception):
    """The root of hwcompress's own errors, so a caller can tell "hwcompress refused or failed"
    from a bug with one ``except``.

    ``field`` names what was wrong when one thing was: a spec field path (``budgets[1].value``),
    a budget metric, a layer, a record field; ``None`` otherwise. ``reason`` is the message
    without the field. Subclasses keep their builtin base (``ValueError``, ``RuntimeError``) so
    existing ``except ValueError`` still catches them."""

    def __init__(self, message: str = "", *, field: str | None = None,
                 reason: str | None = None) -> None:
        if not message and field is not None:
            message = f"{field}: {reason}"
        super().__init__(message)
        self.field = field
        self.reason = reason if reason is not None else message

    def __reduce__(self) -> tuple[Any, ...]:
        # keep field/reason (and a subclass's own attributes) across pickling: Ray ships
        # exceptions between processes, and a subclass's __init__ may take other arguments
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_error(cls: type, args: tuple[Any, ...], state: dict[str, Any]) -> HwcompressError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class PolicyError(HwcompressError, ValueError):
    """A policy is malformed; ``field`` is the layer, the message names the bad value."""


class BudgetError(HwcompressError, ValueError):
    """A budget is malformed or unreachable; ``field`` is its metric (or the text given when no
    metric could be read), the message names the budget."""


class SearchCancelled(HwcompressError, RuntimeError):
    """``should_stop`` asked the search to stop."""


class SearchFailed(HwcompressError, RuntimeError):
    """The search ended without a single feasible, scored policy."""


@dataclass(frozen=True)
class LayerInfo:
    """One conv / depthwise conv / linear layer as found by tracing the model once.

    ``in_hw``/``out_hw`` are the spatial sizes of its input and output feature maps ((1, 1) for a
    linear layer). ``prune_group`` names the coupling group whose output channels must be pruned
    together (residual adds, depthwise convs); ``None`` for layers whose outputs are never pruned
    (the classifier). ``prunable`` is False for such layers. ``input_group`` names the group whose
    kept channels become this layer's input channels (None: its input is never pruned, e.g. the
    image); ``in_channel_multiplier`` is how many input features each such channel feeds (a
    linear layer after flattening a 4×4 map: 16).
    """

    name: str
    op: str
    in_channels: int
    out_channels: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    macs: int = 0
    params: int = 0
    has_bn: bool = False
    activation: str | None = None
    prune_group: str | None = None
    prunable: bool = True
    index: int = 0
    input_group: str | None = None
    in_channel_multiplier: int = 1

    def __post_init__(self) -> None:
        if self.op not in LAYER_OPS:
            raise ValueError(f"LayerInfo {self.name}: op must be one of {LAYER_OPS}, got {self.op!r}")

    @property
    def weight_count(self) -> int:
        """Number of weights (without bias) at full width."""
        if self.op == "linear":
            return self.in_channels * self.out_channels
        return self.out_channels * (self.in_channels // self.groups) * self.kernel * self.kernel

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_hw"] = list(self.in_hw)
        d["out_hw"] = list(self.out_hw)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerInfo":
        d = dict(d)
        d["in_hw"] = tuple(d.get("in_hw", (1, 1)))
        d["out_hw"] = tuple(d.get("out_hw", (1, 1)))
        return cls(**d)


@dataclass(frozen=True)
class ModelInfo:
    """A traced model: its input shape and its layers in execution order."""

    model_name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    layers: tuple[LayerInfo, ...]
    total_macs: int = 0
    total_params: int = 0

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def prunable_layers(self) -> list[LayerInfo]:
        return [layer for layer in self.layers if layer.prunable]

    @property
    def prune_groups(self) -> dict[str, list[str]]:
        """Group name -> member layer names, in layer order (the group's leader first)."""
        groups: dict[str, list[str]] = {}
        for layer in self.layers:
            if layer.prunable and layer.prune_group is not None:
                groups.setdefault(layer.prune_group, []).append(layer.name)
        return groups

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "layers": [layer.to_dict() for layer in self.layers],
            "total_macs": self.total_macs,
            "total_params": self.total_params,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelInfo":
        return cls(
            model_name=d["model_name"],
            input_shape=tuple(d["input_shape"]),  # type: ignore[arg-type]
            num_classes=int(d["num_classes"]),
            layers=tuple(LayerInfo.from_dict(x) for x in d["layers"]),
            total_macs=int(d.get("total_macs", 0)),
            total_params=int(d.get("total_params", 0)),
        )


def _check_bits(layer: str, field_name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and (math.isnan(value) or not value.is_integer())
    ):
        raise PolicyError(f"layer {layer!r}: {field_name}={value!r} is not an integer bit-width "
                          f"(allowed: {list(ALLOWED_BITS)})", field=layer)
    value = int(value)
    if value not in ALLOWED_BITS:
        raise PolicyError(f"layer {layer!r}: {field_name}={value} is not allowed "
                          f"(allowed: {list(ALLOWED_BITS)}; 32 means float)", field=layer)
    return value


@dataclass(frozen=True)
class LayerPolicy:
    """What to do with one layer: keep this fraction of its output channels, at these bit-widths.

    ``a_bits`` quantizes the layer's *input* activation (as HAQ does); 32 means float.
    """

    keep_ratio: float = 1.0
    w_bits: int = FLOAT_BITS
    a_bits: int = FLOAT_BITS

    def validated(self, layer: str) -> "LayerPolicy":
        r = self.keep_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or math.isnan(float(r)):
            raise PolicyError(f"layer {layer!r}: keep_ratio={r!r} is not a number in (0, 1]", field=layer)
        if not 0.0 < float(r) <= 1.0:
            raise PolicyError(f"layer {layer!r}: keep_ratio={r!r} is outside (0, 1]", field=layer)
        return LayerPolicy(float(r), _check_bits(layer, "w_bits", self.w_bits),
                           _check_bits(layer, "a_bits", self.a_bits))


@dataclass
class Policy:
    """Layer name -> :class:`LayerPolicy`. Layers that are absent are left untouched."""

    layers: dict[str, LayerPolicy] = field(default_factory=dict)

    def __getitem__(self, name: str) -> LayerPolicy:
        return self.layers.get(name, LayerPolicy())

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def items(self) -> Iterable[tuple[str, LayerPolicy]]:
        return self.layers.items()

    @classmethod
    def full(cls, layer_names: Iterable[str]) -> "Policy":
        """The identity policy: every layer at full width, float."""
        return cls({name: LayerPolicy() for name in layer_names})

    @classmethod
    def uniform(cls, info: ModelInfo, keep_ratio: float, w_bits: int = FLOAT_BITS,
                a_bits: int = FLOAT_BITS) -> "Policy":
        return cls({layer.name: LayerPolicy(keep_ratio if layer.prunable else 1.0, w_bits, a_bits)
                    for layer in info.layers})

    def validate(self, info: ModelInfo | None = None) -> "Policy":
        """Return a validated copy; raise :class:`PolicyError` naming the layer and the value."""
        known = set(info.layer_names) if info is not None else None
        out: dict[str, LayerPolicy] = {}
        for name, lp in self.layers.items():
            if known is not None and name not in known:
                raise PolicyError(f"layer {name!r} is not a layer of model "
                                  f"{info.model_name!r} (known: {sorted(known)})",  # type: ignore[union-attr]
                                  field=name)
            if not isinstance(lp, LayerPolicy):
                raise PolicyError(f"layer {name!r}: expected a LayerPolicy, got {type(lp).__name__}",
                                  field=name)
            out[name] = lp.validated(name)
            if info is not None and not info.layer(name).prunable and out[name].keep_ratio != 1.0:
                raise PolicyError(f"layer {name!r}: keep_ratio={out[name].keep_ratio} but its output "
                                  "channels cannot be pruned (it produces the model's output)", field=name)
        return Policy(out)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": {n: asdict(lp) for n, lp in self.layers.items()}}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Policy":
        if not isinstance(d, Mapping) or not isinstance(d.get("layers"), Mapping):
            raise PolicyError("policy JSON must be an object with a 'layers' object")
        layers: dict[str, LayerPolicy] = {}
        for name, lp in d["layers"].items():
            if not isinstance(lp, Mapping):
                raise PolicyError(f"layer {name!r}: expected an object with keep_ratio, w_bits, a_bits",
                                  field=name)
            unknown = set(lp) - {"keep_ratio", "w_bits", "a_bits"}
            if unknown:
                raise PolicyError(f"layer {name!r}: unknown fields {sorted(unknown)}", field=name)
            layers[name] = LayerPolicy(lp.get("keep_ratio", 1.0), lp.get("w_bits", FLOAT_BITS),
                                       lp.get("a_bits", FLOAT_BITS))
        return cls(layers)

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def kept_channels(channels: int, keep_ratio: float, channel_step: int = 1) -> int:
    """Channels kept of ``channels`` at ``keep_ratio``: rounded to a multiple of
    ``channel_step`` (the hardware's vector width), never below 1 and never above ``channels``."""
    if keep_ratio >= 1.0:
        return channels  # 1.0 always means untouched, even off the step grid
    step = max(1, int(channel_step))
    k = int(round(keep_ratio * channels / step)) * step
    if k <= 0:
        k = min(step, channels)
    return max(1, min(channels, k))


@dataclass(frozen=True)
class LayerShape:
    """A layer's channel counts after a policy is applied (what a latency table is keyed by)."""

    in_channels: int
    out_channels: int
    w_bits: int = FLOAT_BITS
    a_bits: int = FLOAT_BITS


def policy_layer_shapes(info: ModelInfo, policy: Policy, channel_step: int = 1) -> dict[str, LayerShape]:
    """Each layer's (in, out) channels under ``policy`` without building the model.

    A coupled group keeps the channel count of its leader's keep ratio (its first layer), which
    is exactly what :func:`automl.compress.apply_policy` removes, so predictions and the built
    model agree.
    """
    groups = info.prune_groups
    full = {layer.name: layer for layer in info.layers}
    kept: dict[str, int] = {}
    for group, members in groups.items():
        leader = full[members[0]]
        kept[group] = kept_channels(leader.out_channels, policy[leader.name].keep_ratio, channel_step)
    shapes: dict[str, LayerShape] = {}
    for layer in info.layers:
        lp = policy[layer.name]
        out_c = kept[layer.prune_group] if (layer.prunable and layer.prune_group in kept) else layer.out_channels
        if layer.input_group is not None and layer.input_group in kept:
            in_c = kept[layer.input_group] * layer.in_channel_multiplier
        else:
            in_c = layer.in_channels
        if layer.op == "depthwise":
            in_c = out_c
        shapes[layer.name] = LayerShape(in_c, out_c, lp.w_bits, lp.a_bits)
    return shapes


def policy_macs_and_size(info: ModelInfo, policy: Policy, channel_step: int = 1) -> tuple[int, float]:
    """(MACs, size in MB) of ``info`` under ``policy``, computed from the channel counts alone.

    Size counts conv / linear weights at their ``w_bits`` and biases and BN affine parameters at
    32 bits, as :func:`automl.compress.model_cost` does for a built model."""
    shapes = policy_layer_shapes(info, policy, channel_step)
    macs = 0
    bits = 0
    for layer in info.layers:
        s = shapes[layer.name]
        if layer.op == "linear":
            weights = s.in_channels * s.out_channels
            layer_macs = weights
        else:
            groups = s.out_channels if layer.op == "depthwise" else layer.groups
            weights = s.out_channels * (s.in_channels // groups) * layer.kernel * layer.kernel
            layer_macs = layer.out_hw[0] * layer.out_hw[1] * weights
        per_channel_extra = (layer.params - layer.weight_count) / layer.out_channels
        extra = per_channel_extra * s.out_channels + (2 * s.out_channels if layer.has_bn else 0)
        macs += layer_macs
        bits += weights * s.w_bits + extra * FLOAT_BITS
    return macs, bits / 8 / 1e6


BUDGET_METRICS = ("latency_ms", "energy_mj", "size_mb", "macs")


def _budget_error(metric: str, reason: str, name: str | None = None) -> BudgetError:
    """``budget METRIC: reason``, with ``field`` the metric."""
    return BudgetError(f"budget {name or metric}: {reason}", field=metric, reason=reason)


@dataclass(frozen=True)
class BudgetTerm:
    """One limit: ``metric <= value`` (absolute) or ``<= value × the uncompressed model``."""

    metric: str
    value: float
    relative: bool = False

    def __post_init__(self) -> None:
        if self.metric not in BUDGET_METRICS:
            raise _budget_error(self.metric, f"unknown metric (known: {list(BUDGET_METRICS)})",
                                name=repr(self.metric))
        v = self.value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise _budget_error(self.metric, f"value {v!r} must be a finite number > 0")
        if self.relative and v > 1.0:
            raise _budget_error(self.metric, f"relative value {v}x is above 1x "
                                "(the uncompressed model already meets it)")

    def absolute(self, reference: float) -> float:
        return self.value * reference if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}{'x' if self.relative else ''}"

    def to_text(self) -> str:
        """The exact text form (``repr`` of the value, where ``str`` rounds to 6 digits):
        ``BudgetTerm.parse(t.to_text()) == t``. What the service stores."""
        return f"{self.metric}={self.value!r}{'x' if self.relative else ''}"

    @classmethod
    def parse(cls, text: str) -> "BudgetTerm":
        """Parse ``latency_ms=0.5x`` or ``size_mb=0.2``: the one parser of the text form, used by
        the search, both CLIs, the service's stored specs and ``submit --spec`` files. Raises
        :class:`BudgetError` whose ``field`` is the metric (or the text when it has no ``=``)."""
        if "=" not in text:
            raise _budget_error(text, "expected METRIC=VALUE or METRIC=FRACTIONx with METRIC one "
                                f"of {list(BUDGET_METRICS)}", name=repr(text))
        metric, raw = (s.strip() for s in text.split("=", 1))
        relative = raw.lower().endswith("x")
        try:
            value = float(raw[:-1] if relative else raw)
        except ValueError:
            raise _budget_error(metric, f"{raw!r} is not a number") from None
        return cls(metric, value, relative)


@dataclass(frozen=True)
class Budget:
    """Any combination of limits; all must hold."""

    terms: tuple[BudgetTerm, ...] = ()

    @classmethod
    def parse(cls, texts: Iterable[str]) -> "Budget":
        terms = tuple(BudgetTerm.parse(t) for t in texts)
        seen = [t.metric for t in terms]
        dupes = {m for m in seen if seen.count(m) > 1}
        if dupes:
            raise _budget_error(sorted(dupes)[0], "given more than once")
        return cls(terms)

    def resolve(self, reference: Mapping[str, float]) -> dict[str, float]:
        """Absolute limits, given the uncompressed model's metrics."""
        return {t.metric: t.absolute(reference[t.metric]) for t in self.terms}

    def to_list(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in self.terms]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]]) -> "Budget":
        return cls(tuple(BudgetTerm(i["metric"], float(i["value"]), bool(i.get("relative", False)))
                         for i in items))


@dataclass
class Evaluation:
    """The outcome of scoring one policy: accuracy plus predicted cost, and feasibility."""

    policy: Policy
    accuracy: float | None = None
    latency_ms: float | None = None
    energy_mj: float | None = None
    size_mb: float | None = None
    macs: int | None = None
    feasible: bool = True
    error: str | None = None
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "policy"}
        d["policy"] = self.policy.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Evaluation":
        d = dict(d)
        d["policy"] = Policy.from_dict(d["policy"])
        return cls(**d)

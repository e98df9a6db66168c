"""Typed records at the engine's boundaries: what a search tells the world and leaves on disk.

- job events (:class:`LogEvent`, :class:`StartedEvent`, :class:`TrialEvent`,
  :class:`FinishedEvent`): what ``run_search`` passes to its ``on_event`` sink; the service
  stores them, streams them and keeps its job progress from them;
- :class:`TrialOutcome`: one row of ``state/evaluations.jsonl`` (resume) and ``trace.json``;
- :class:`SearchResult`: what ``run_search`` returns and writes as ``result.json``.

The service reads only these (``services/jobs.py``, ``services/convert.py``, the CLIs), so a
field the engine stops writing fails here, not as a silent ``None`` in a dashboard.

Every record has ``to_dict()`` (JSON-ready, with ``schema_version``) and ``from_dict()``, which
reads its own version and older ones: a missing optional field takes its default, a missing
``schema_version`` means 1 (what was written before records were versioned, so events already
in a job database and old ``result.json`` files still read), unknown fields are ignored (an
addition within a version), and a *newer* version is refused with :class:`RecordError` naming
the record, rather than read wrong.

This module imports only :mod:`automl.core` and the standard library.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Mapping, TypeVar, Union

from .core import HwcompressError, Policy

SCHEMA_KEY = "schema_version"
"""The key of every record's version in its dict form."""


class RecordError(HwcompressError, ValueError):
    """A record's dict cannot be read: ``field`` names the field (``schema_version`` for a
    version this code does not know)."""


R = TypeVar("R")


def _read(cls: type[R], d: Mapping[str, Any], **decoded: Any) -> R:
    """``cls`` from ``d``: check its version, take the fields ``cls`` declares (``decoded``
    overrides the raw values of those that need conversion), refuse a missing required one."""
    if not isinstance(d, Mapping):
        raise RecordError(f"{cls.__name__}: expected an object, got {type(d).__name__}",
                          field=cls.__name__)
    version = d.get(SCHEMA_KEY, 1)
    current = cls.SCHEMA_VERSION  # type: ignore[attr-defined]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RecordError(f"{cls.__name__}: {SCHEMA_KEY} {version!r} is not a version number",
                          field=SCHEMA_KEY)
    if version > current:
        raise RecordError(f"{cls.__name__}: {SCHEMA_KEY} {version} is newer than this hwcompress "
                          f"reads ({current}); upgrade hwcompress to read it", field=SCHEMA_KEY)
    kind = getattr(cls, "kind", None)
    if kind is not None and d.get("type", kind) != kind:
        raise RecordError(f"{cls.__name__}: type {d.get('type')!r} is not {kind!r}", field="type")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in decoded:
            kwargs[f.name] = decoded[f.name]
        elif f.name in d:
            kwargs[f.name] = d[f.name]
        elif f.default is MISSING and f.default_factory is MISSING:
            raise RecordError(f"{cls.__name__}: required field {f.name!r} is missing", field=f.name)
    return cls(**kwargs)


def _plain(record: Any, **encoded: Any) -> dict[str, Any]:
    """``record``'s fields as a dict after its version; ``encoded`` replaces the values of fields
    that are not JSON themselves."""
    out: dict[str, Any] = {SCHEMA_KEY: record.SCHEMA_VERSION}
    for f in fields(record):
        out[f.name] = encoded[f.name] if f.name in encoded else getattr(record, f.name)
    return out


def _finite(value: Any) -> float | None:
    """A number as float, or None for None/NaN/inf/non-numbers (no accuracy is no accuracy)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# -- job events -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogEvent:
    """A line for a person: what the search is doing now."""

    SCHEMA_VERSION: ClassVar[int] = 1
    kind: ClassVar[str] = "log"

    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **_plain(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LogEvent":
        return _read(cls, d)


@dataclass(frozen=True)
class StartedEvent:
    """The search starts its trials: the absolute limits it works to and the uncompressed
    model's metrics they were resolved against."""

    SCHEMA_VERSION: ClassVar[int] = 1
    kind: ClassVar[str] = "started"

    strategy: str = ""
    trials: int = 0
    limits: dict[str, float] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **_plain(self, limits=dict(self.limits), reference=dict(self.reference))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StartedEvent":
        return _read(cls, d, limits=dict(d.get("limits") or {}), reference=dict(d.get("reference") or {}))


@dataclass(frozen=True)
class TrialEvent:
    """One trial scored (or only costed, when over budget: ``accuracy`` None). ``index`` counts
    the trials of this search from 0, also across a resume (a replayed trial keeps its index
    and has ``cached`` True). ``strategy_state`` is what the strategy reports about its progress
    (NetAdapt's iteration, an RL agent's episode and noise)."""

    SCHEMA_VERSION: ClassVar[int] = 1
    kind: ClassVar[str] = "trial"

    index: int
    total: int = 0
    accuracy: float | None = None
    latency_ms: float | None = None
    energy_mj: float | None = None
    size_mb: float | None = None
    feasible: bool = False
    error: str | None = None
    best_accuracy: float | None = None
    strategy: str = ""
    wall_s: float = 0.0
    cached: bool = False
    elapsed_s: float | None = None
    strategy_state: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **_plain(self, strategy_state=dict(self.strategy_state))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialEvent":
        known = {f.name for f in fields(cls)} | {"type", SCHEMA_KEY}
        # before schema_version 1 was written, the strategy's state was spread among the fields
        state = {k: v for k, v in d.items() if k not in known}
        state.update(d.get("strategy_state") or {})
        index = d.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise RecordError(f"TrialEvent: index {index!r} is not an integer", field="index")
        return _read(cls, d, strategy_state=state, feasible=bool(d.get("feasible")),
                     cached=bool(d.get("cached")), total=int(d.get("total") or 0),
                     wall_s=_finite(d.get("wall_s")) or 0.0)


@dataclass(frozen=True)
class FinishedEvent:
    """The search is done: the headline numbers of its :class:`SearchResult`."""

    SCHEMA_VERSION: ClassVar[int] = 1
    kind: ClassVar[str] = "finished"

    accuracy_before_finetune: float | None = None
    accuracy_after_finetune: float | None = None
    latency_ms_predicted: float | None = None
    latency_ms_measured: float | None = None
    evaluations: int = 0
    wall_s: float = 0.0

    @classmethod
    def of(cls, result: "SearchResult") -> "FinishedEvent":
        return cls(**{f.name: getattr(result, f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        # the numbers nest under "result", as they always have in stored events
        plain = _plain(self)
        return {"type": self.kind, SCHEMA_KEY: plain.pop(SCHEMA_KEY), "result": plain}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FinishedEvent":
        inner = d.get("result")
        if not isinstance(inner, Mapping):
            raise RecordError("FinishedEvent: 'result' must be an object", field="result")
        return _read(cls, {**inner, SCHEMA_KEY: d.get(SCHEMA_KEY, 1)})


JobEvent = Union[LogEvent, StartedEvent, TrialEvent, FinishedEvent]
EVENT_TYPES: dict[str, type] = {c.kind: c for c in (LogEvent, StartedEvent, TrialEvent, FinishedEvent)}
"""Every event kind the engine emits, by its ``type``."""


def event_from_dict(d: Mapping[str, Any]) -> JobEvent:
    """The event a dict (an event's ``to_dict()``, or an event stored before records existed)
    holds, by its ``type``."""
    kind = d.get("type") if isinstance(d, Mapping) else None
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise RecordError(f"event: unknown type {kind!r} (known: {sorted(EVENT_TYPES)})", field="type")
    return cls.from_dict(d)  # type: ignore[attr-defined,no-any-return]


# -- evaluations ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialOutcome:
    """One candidate the search scored: a row of ``state/evaluations.jsonl`` (a restarted
    search answers its policy from here) and of ``trace.json``. ``key`` identifies the policy
    (its canonical JSON); costs are the table's predictions, ``macs``/``size_mb`` computed."""

    SCHEMA_VERSION: ClassVar[int] = 1

    key: str
    trial: int
    strategy: str
    policy: Policy
    latency_ms: float
    energy_mj: float
    size_mb: float
    macs: float
    accuracy: float | None = None
    feasible: bool = False
    error: str | None = None
    intermediate: bool = False
    node: str | None = None
    wall_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self, policy=self.policy.to_dict(), params=dict(self.params))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialOutcome":
        if not isinstance(d, Mapping) or "policy" not in d:
            raise RecordError("TrialOutcome: required field 'policy' is missing", field="policy")
        return _read(cls, d, policy=Policy.from_dict(d["policy"]), params=dict(d.get("params") or {}))


# -- the result -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParetoPoint:
    """A policy no other scored one beats on both accuracy and the second objective."""

    SCHEMA_VERSION: ClassVar[int] = 1

    accuracy: float
    latency_ms: float
    energy_mj: float
    size_mb: float
    policy: Policy

    def to_dict(self) -> dict[str, Any]:
        d = _plain(self, policy=self.policy.to_dict())
        del d[SCHEMA_KEY]  # versioned by the SearchResult that holds it
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ParetoPoint":
        return _read(cls, d, policy=Policy.from_dict(d.get("policy") or {"layers": {}}))


@dataclass(frozen=True)
class SearchResult:
    """What a search answers (``result.json``): the chosen policy, its accuracy before and after
    the final fine-tune and as exported, its predicted and measured cost against each budget,
    and how the search went. ``*_budget`` are absolute limits (None: no such budget);
    ``latency_checks`` and ``latency_calibration`` are the device measurements the choice and
    the table correction were made on (see ``automl.search.measured_budget``)."""

    SCHEMA_VERSION: ClassVar[int] = 1

    model: str
    dataset: str
    strategy: str
    policy: Policy
    hardware: str = ""
    seed: int = 0
    budgets: list[str] = field(default_factory=list)
    accuracy_val_search: float | None = None
    accuracy_original: float | None = None
    accuracy_before_finetune: float | None = None
    accuracy_after_finetune: float | None = None
    accuracy_deployed: float | None = None
    accuracy_deployed_images: int = 0
    int8_weight_bits: int | None = None
    """Bits the deployed graph's int8 layers store their weights in (read off the graph): 8, or
    7 where this CPU's int8 GEMM saturates (ORT's ``reduce_range``); None when no layer is int8."""
    finetune_epochs: float = 0.0
    latency_ms_predicted: float | None = None
    latency_ms_predicted_table: float | None = None
    latency_correction: dict[str, float] = field(default_factory=dict)
    latency_ms_measured: float | None = None
    latency_ms_measured_source: str = ""
    latency_ms_measured_raw: float | None = None
    latency_fraction_measured: float | None = None
    latency_ms_cpu_ort: float | None = None
    latency_ms_original_measured: float | None = None
    latency_ms_budget: float | None = None
    latency_within_budget_measured: bool | None = None
    latency_checks: list[dict[str, Any]] = field(default_factory=list)
    energy_mj_predicted: float | None = None
    energy_mj_budget: float | None = None
    size_mb: float | None = None
    size_mb_budget: float | None = None
    macs: int | None = None
    macs_budget: float | None = None
    params: int | None = None
    evaluations: int = 0
    failed_trials: int = 0
    nodes: list[str] = field(default_factory=list)
    pareto: list[ParetoPoint] | None = None
    """Multi-objective strategies only (absent from the dict otherwise)."""
    latency_calibration: list[dict[str, Any]] = field(default_factory=list)
    importance: str = "magnitude"
    """How channels were priced and chosen: ``taylor`` (first-order Taylor, the allocation's
    starts) or ``magnitude`` (L2 weight magnitude)."""
    precision_notes: dict[str, str] = field(default_factory=dict)
    """Per precision (bits), whether the search tried it and why (the table's price of it at
    the widths the budget leaves float)."""
    int8_layers: list[str] = field(default_factory=list)
    """Layers the deployed graph runs as int8 kernels."""
    start_scores: dict[str, float] = field(default_factory=dict)
    """The search signal of its starts (``uniform-32``, ``allocation-0.5-32``, ...): the answer's
    ``accuracy_val_search`` beside what one ratio for every layer scored."""
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = _plain(self, policy=self.policy.to_dict(), budgets=list(self.budgets),
                   precision_notes=dict(self.precision_notes), int8_layers=list(self.int8_layers),
                   start_scores=dict(self.start_scores),
                   latency_correction=dict(self.latency_correction),
                   latency_checks=[dict(c) for c in self.latency_checks], nodes=list(self.nodes),
                   pareto=None if self.pareto is None else [p.to_dict() for p in self.pareto],
                   latency_calibration=[dict(c) for c in self.latency_calibration])
        if d["pareto"] is None:
            del d["pareto"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchResult":
        if not isinstance(d, Mapping) or "policy" not in d:
            raise RecordError("SearchResult: required field 'policy' is missing", field="policy")
        pareto = d.get("pareto")
        return _read(cls, d, policy=Policy.from_dict(d["policy"]),
                     pareto=None if pareto is None else [ParetoPoint.from_dict(p) for p in pareto])

"""What this server accepts, and the validation of a JobSpec against it.

The server never lets a client name a file path or a Python module: models are zoo names (or
factories the operator registered) or uploads the server checked, datasets are names the
operator registered (``--dataset NAME=SPEC``) plus the built-in ``digits[@SIZE]``, latency tables
are ids the operator registered (``--latency-table ID=PATH``).

Validation turns a proto ``JobSpec`` into the plain, normalised spec dict the job manager stores
and the search work function reads, or raises :class:`SpecError` naming the field, which the
servicer maps to INVALID_ARGUMENT (or NOT_FOUND for an unknown upload). :meth:`Catalog.validate`
is cheap (names, numbers, lengths, enums: microseconds, no data loaded) because it runs on the
RPC thread; :meth:`Catalog.check_reachable` needs the model traced at the dataset's input shape,
so the job runs it when it starts (see :func:`services.work.validated`), never the RPC thread.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from automl.core import (BUDGET_METRICS, DEFAULT_BASELINE_EPOCHS, DEFAULT_STRATEGY, BudgetError, BudgetTerm,
                         ModelInfo, Policy, policy_macs_and_size)
from automl.data import DEFAULT_DATASET, DataError, load_dataset, parse_spec
from automl.models import build_model, is_known_model, zoo_names
from automl.train import DEFAULT_FINETUNE_EPOCHS
from latency_models.profile import DEFAULT_PROFILE, PROFILES, HardwareProfile

from .convert import PB_TO_METRIC, budget_from_pb
from .errors import SpecError, short

log = logging.getLogger(__name__)

# Upper bounds past which a budget is a typo, not a wish (the unit is in the metric's name).
ABSURD_ABSOLUTE = {"latency_ms": 1e6, "energy_mj": 1e6, "size_mb": 1e5, "macs": 1e15}
MIN_RELATIVE = 1e-3
FALLBACK_STRATEGIES = ("uniform", "random", "netadapt", "optuna-tpe", "optuna-nsga2")
RL_MODES = {0: "prune", 1: "prune", 2: "quantize", 3: "joint"}
"""``hwcompress.v1.RlMode`` -> the agents' mode names (agents/env.py MODES); 0 is UNSPECIFIED,
which the API documents as ``prune`` (a local ``hwcompress search`` defaults to
``automl.core.DEFAULT_RL_MODE``, joint)."""
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_NAME_CHARS = 128
MAX_INPUT_SIDE = 128
"""Largest ``digits@SIZE`` a job may ask for: at 256 one load of the data is ~0.5 GB."""


def check_length(value: str, field_name: str, limit: int = MAX_NAME_CHARS) -> None:
    """Refuse an over-long string before anything else looks at it."""
    if len(value) > limit:
        raise SpecError(field_name, f"{len(value)} characters; at most {limit}")


def strategy_names() -> list[str]:
    """The search runner's registry (agents register themselves there)."""
    try:
        from automl.search.registry import strategy_names as names
        return list(names())
    except ImportError:  # the runner is not installed: the strategies it is known to ship
        return list(FALLBACK_STRATEGIES)


@lru_cache(maxsize=64)
def _traced(model: str, dataset_spec: str) -> tuple[ModelInfo, int]:
    """The model's layers at the dataset's input shape (cheap: a fresh model traced once)."""
    from automl.space import trace_model

    data = load_dataset(dataset_spec)
    net = build_model(model, data.in_channels, data.num_classes)
    return trace_model(net, data.input_shape, model), data.num_classes


@dataclass
class Catalog:
    """The server's registries and limits."""

    datasets: dict[str, str] = field(default_factory=dict)   # name -> automl.data spec
    tables: dict[str, str] = field(default_factory=dict)     # table id -> file path
    table_profiles: dict[str, str] = field(default_factory=dict)  # table id -> profile name
    max_trials: int = 10_000
    max_finetune_epochs: float = 100.0
    max_baseline_epochs: int = 500
    lookup_upload: Callable[[str], dict[str, Any] | None] = lambda _id: None

    # -- listings --------------------------------------------------------------------------
    def models(self) -> list[str]:
        return zoo_names()

    def dataset_names(self) -> list[str]:
        return sorted({"digits", *self.datasets})

    def profiles(self) -> dict[str, HardwareProfile]:
        return dict(PROFILES)

    def resolve_dataset(self, name: str, field_name: str = "dataset") -> str:
        """A registered name (optionally ``@SIZE``) -> the spec ``automl.data`` loads."""
        if not name:
            return DEFAULT_DATASET
        check_length(name, field_name)
        if any(c in name for c in "/\\:") or name.startswith("."):
            raise SpecError(field_name, f"{short(name)} looks like a path or module; give a dataset "
                                        f"name registered on the server ({self.dataset_names()})")
        base, _, size = name.partition("@")
        if base == "digits":  # the built-in one
            spec = "digits"
        elif base in self.datasets:
            spec = self.datasets[base]
        else:
            raise SpecError(field_name, f"unknown dataset {short(base)} (registered: {self.dataset_names()})")
        if size:
            spec = f"{spec.split('@')[0]}@{size}"
        try:
            _, _, side = parse_spec(spec)
        except DataError as exc:
            raise SpecError(field_name, f"size {short(size)}: {str(exc).rpartition(': ')[2]}") from None
        if side is not None and side > MAX_INPUT_SIDE:
            raise SpecError(field_name, f"size {side} is over this server's limit of {MAX_INPUT_SIDE}")
        return spec

    # -- the JobSpec -----------------------------------------------------------------------
    def validate(self, spec: Any) -> dict[str, Any]:
        """Proto JobSpec -> normalised spec dict. Raises :class:`SpecError`."""
        out: dict[str, Any] = {}
        for name in ("model", "uploaded_model_id", "dataset", "hardware_profile", "latency_table",
                     "strategy", "idempotency_key"):
            check_length(getattr(spec, name), name)
        source = spec.WhichOneof("model_source")
        if source == "uploaded_model_id":
            upload = self.lookup_upload(spec.uploaded_model_id)
            if upload is None:
                raise SpecError("uploaded_model_id", f"no uploaded model {short(spec.uploaded_model_id)}",
                                not_found=True)
            out["model"] = upload["architecture"]
            out["weights"] = upload["path"]
            out["uploaded_model_id"] = upload["id"]
            dataset_name = spec.dataset or upload["dataset"]
        else:
            if not spec.model:
                raise SpecError("model", "required: a model name or uploaded_model_id "
                                         f"(models: {self.models()})")
            if not is_known_model(spec.model):
                raise SpecError("model", f"unknown model {short(spec.model)} (known: {self.models()})")
            out["model"] = spec.model
            out["weights"] = None
            dataset_name = spec.dataset
        out["dataset"] = dataset_name or DEFAULT_DATASET
        out["data"] = self.resolve_dataset(out["dataset"])

        profile = spec.hardware_profile or DEFAULT_PROFILE
        if profile not in PROFILES:
            raise SpecError("hardware_profile", f"unknown profile {short(profile)} (known: {sorted(PROFILES)})")
        out["hardware"] = profile
        if spec.latency_table:
            if spec.latency_table not in self.tables:
                raise SpecError("latency_table", f"unknown table id {short(spec.latency_table)} "
                                                 f"(registered: {sorted(self.tables)})")
            table_profile = self.table_profiles.get(spec.latency_table)
            if table_profile and table_profile != profile:
                raise SpecError("latency_table", f"table {spec.latency_table!r} was measured for "
                                                 f"profile {table_profile!r}, not {profile!r}")
            out["table"] = self.tables[spec.latency_table]
        else:
            out["table"] = None
        out["latency_table"] = spec.latency_table or None

        strategy = spec.strategy or DEFAULT_STRATEGY
        names = strategy_names()
        if strategy not in names:
            raise SpecError("strategy", f"unknown strategy {short(strategy)} (known: {names})")
        out["strategy"] = strategy
        trials = spec.trials if spec.trials else None
        if trials is None:
            raise SpecError("trials", "must be ≥ 1 (trials for a search, episodes for an RL agent)")
        if trials < 1 or trials > self.max_trials:
            raise SpecError("trials", f"{trials} is outside 1..{self.max_trials}")
        out["trials"] = int(trials)
        out["seed"] = int(spec.seed)
        if spec.seed < 0 or spec.seed >= 2**32:
            raise SpecError("seed", f"{spec.seed} is outside 0..2^32-1")
        ft = spec.finetune_epochs if spec.HasField("finetune_epochs") else DEFAULT_FINETUNE_EPOCHS
        if not math.isfinite(ft) or ft < 0 or ft > self.max_finetune_epochs:
            raise SpecError("finetune_epochs", f"{ft!r} is outside 0..{self.max_finetune_epochs:g}")
        out["finetune_epochs"] = float(ft)
        epochs = spec.baseline_epochs or DEFAULT_BASELINE_EPOCHS
        if epochs < 1 or epochs > self.max_baseline_epochs:
            raise SpecError("baseline_epochs", f"{epochs} is outside 1..{self.max_baseline_epochs}")
        out["epochs"] = int(epochs)
        if spec.rl_mode not in RL_MODES:
            raise SpecError("rl_mode", f"{spec.rl_mode} is not an RlMode (RL_MODE_PRUNE=1, "
                                       "RL_MODE_QUANTIZE=2, RL_MODE_JOINT=3; 0: prune)")
        out["rl_mode"] = RL_MODES[spec.rl_mode]
        if spec.idempotency_key and not IDEMPOTENCY_KEY_RE.match(spec.idempotency_key):
            raise SpecError("idempotency_key", "must be 1-128 characters of [A-Za-z0-9._:-]")
        out["budgets"] = self._budgets(spec)
        return out

    def _budgets(self, spec: Any) -> list[str]:
        if not spec.budgets:
            raise SpecError("budgets", f"at least one budget is required (metrics: {list(BUDGET_METRICS)})")
        if len(spec.budgets) > len(BUDGET_METRICS):
            raise SpecError("budgets", f"{len(spec.budgets)} budgets; at most one per metric "
                                       f"({len(BUDGET_METRICS)})")
        terms: list[BudgetTerm] = []
        seen: set[str] = set()
        for i, b in enumerate(spec.budgets):
            where = f"budgets[{i}]"
            metric = PB_TO_METRIC.get(b.metric)  # 0 is UNSPECIFIED
            if metric is None:
                raise SpecError(f"{where}.metric", f"{b.metric} is not a BudgetMetric; must be one of "
                                                   f"{list(BUDGET_METRICS)} (1..{len(BUDGET_METRICS)})")
            if metric in seen:
                raise SpecError(f"{where}.metric", f"{metric} is given more than once")
            seen.add(metric)
            try:
                term = budget_from_pb(b)
            except BudgetError as exc:
                raise SpecError(f"{where}.value", str(exc)) from None
            if term.relative and term.value < MIN_RELATIVE:
                raise SpecError(f"{where}.value", f"{metric}={term.value:g}x is absurd "
                                                  f"(below {MIN_RELATIVE:g}x of the uncompressed model)")
            if not term.relative and term.value > ABSURD_ABSOLUTE[metric]:
                raise SpecError(f"{where}.value", f"{metric}={term.value:g} is absurd "
                                                  f"(above {ABSURD_ABSOLUTE[metric]:g})")
            terms.append(term)
        return [t.to_text() for t in terms]

    def check_reachable(self, out: dict[str, Any]) -> None:
        """Size and MACs are computed from channel counts alone, so a budget no policy can meet
        is refused before the search starts; latency/energy need the latency table, which the
        search checks first thing. Traces the model at the dataset's shape, so the job runs it
        (bounded by the job concurrency), not the RPC thread."""
        terms = [BudgetTerm.parse(text) for text in out["budgets"]]
        static = [(i, t) for i, t in enumerate(terms) if t.metric in ("size_mb", "macs")]
        if not static:
            return
        try:
            from automl.search.problem import MIN_KEEP_RATIO, searchable_bits
        except ImportError:
            MIN_KEEP_RATIO, searchable_bits = 0.1, None  # noqa: N806
        try:
            info, _ = _traced(out["model"], out["data"])
        except (ValueError, OSError) as exc:
            raise SpecError("dataset", f"cannot load {out['dataset']!r}: {exc}") from None
        profile = PROFILES[out["hardware"]]
        bits = min(searchable_bits(profile)) if searchable_bits else 8
        full_macs, full_size = policy_macs_and_size(info, Policy.full(info.layer_names), profile.channel_step)
        small = Policy.uniform(info, MIN_KEEP_RATIO, bits, bits)
        min_macs, min_size = policy_macs_and_size(info, small, profile.channel_step)
        reference = {"macs": float(full_macs), "size_mb": full_size}
        smallest = {"macs": float(min_macs), "size_mb": min_size}
        for i, t in static:
            limit = t.absolute(reference[t.metric])
            if smallest[t.metric] > limit:
                raise SpecError(f"budgets[{i}].value",
                                f"{t} is unreachable for {out['model']} on {profile.name}: the "
                                f"smallest reachable {t.metric} is {smallest[t.metric]:.4g} "
                                f"(uncompressed {reference[t.metric]:.4g})")

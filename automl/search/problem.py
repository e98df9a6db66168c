"""A compression problem: the trained model, its data, the hardware and its latency table, and the
budgets. It answers the two questions every strategy asks: what does a policy cost (a table
lookup, microseconds) and is it feasible. Accuracy is measured elsewhere (the evaluator), because
that is the expensive part and runs on Ray.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from latency_models.onnx_runtime import INT8_EXPORT
from latency_models.predictor import Predictor
from latency_models.profile import DEFAULT_PROFILE, HardwareProfile, get_profile
from latency_models.table import LatencyTable, TableError

from ..core import (FLOAT_BITS, Budget, BudgetError, LayerPolicy, ModelInfo, Policy,
                    policy_macs_and_size)
from ..importance import ChannelScores
from ..workflow import LoadedModel

log = logging.getLogger(__name__)

PRECISION_MARGIN = 0.02
"""A narrower precision is searched only where the table prices it at least this much faster."""

MIN_KEEP_RATIO = 0.1
"""The smallest keep ratio a strategy proposes (AMC uses 0.2; lower lets tight budgets be met)."""


def searchable_bits(profile: HardwareProfile) -> tuple[int, ...]:
    """Bit-widths worth searching on ``profile``: on a CPU only what it executes differently
    (float and int8), on a bit-flexible accelerator every width from 2 to 8 (its backend's
    ``search_bits``)."""
    return profile.backend.search_bits()


@dataclass
class CompressionProblem:
    """Everything a strategy needs to propose and judge policies for one job."""

    loaded: LoadedModel
    profile: HardwareProfile
    table: LatencyTable
    budget: Budget
    quantize: bool = True
    min_keep_ratio: float = MIN_KEEP_RATIO
    reference_overrides: dict[str, float] = field(default_factory=dict)
    latency_correction: dict[str, float] = field(default_factory=dict)
    """Measured / table-predicted latency near the budget on the device itself, keyed
    ``"<bits>/uniform"`` and ``"<bits>/mixed"`` (``measured_budget.calibrate_latency``); empty
    means the table is taken as is."""
    channel_scores: ChannelScores | None = None
    """Each group's channel importance where the job prices channels by it (Taylor): pruning
    removes the lowest, and the latency-aware allocation seeds the search from it; None prunes by
    weight magnitude and seeds with uniform policies only."""
    predictor: Predictor = field(init=False)
    reference: dict[str, float] = field(init=False)
    limits: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        if not self.budget.terms:
            raise BudgetError("budget: at least one of latency_ms, energy_mj, size_mb, macs is required")
        self.predictor = Predictor(self.table, self.profile, warn=False)
        self.reference = {**self.costs(Policy.full(self.info.layer_names)), **self.reference_overrides}
        self.limits = self.budget.resolve(self.reference)
        self.bits_choices = searchable_bits(self.profile) if self.quantize else (FLOAT_BITS,)
        # Per-layer bit-widths only where the table can price them: on ORT CPU a graph mixing
        # int8 and fp32 layers pays Q/DQ at every boundary and sometimes leaves ORT's fast conv
        # path, which the per-layer table does not predict (10-50% of mixed policies within ±10%,
        # BENCHMARKS.md); there one precision is chosen for the whole model.
        self.per_layer_bits = self.profile.backend.per_layer_bits

    @property
    def info(self) -> ModelInfo:
        return self.loaded.info

    @property
    def channel_step(self) -> int:
        return self.profile.channel_step

    @property
    def groups(self) -> dict[str, list[str]]:
        return self.info.prune_groups

    def costs(self, policy: Policy) -> dict[str, float]:
        """Predicted latency and energy (the table) and computed MACs and size of ``policy``."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            latency_ms, energy_mj = self.predictor.predict(self.info, policy)
        latency_ms *= self.correction_for(policy)
        macs, size_mb = policy_macs_and_size(self.info, policy, self.channel_step)
        return {"latency_ms": latency_ms, "energy_mj": energy_mj, "size_mb": size_mb, "macs": float(macs)}

    @staticmethod
    def correction_key(bits: int, uniform: bool) -> str:
        return f"{bits}/{'uniform' if uniform else 'mixed'}"

    def correction_for(self, policy: Policy) -> float:
        """The device correction that applies to ``policy``: that of its precision and shape
        (one keep ratio everywhere, or not: the table errs differently on the two, see
        ``calibrate_latency``); the largest, most cautious one when none was measured for it."""
        if not self.latency_correction:
            return 1.0
        bits = {lp.w_bits for lp in policy.layers.values()}
        ratios = {round(policy[members[0]].keep_ratio, 6) for members in self.groups.values()}
        if len(bits) == 1:
            key = self.correction_key(next(iter(bits)), len(ratios) <= 1)
            if key in self.latency_correction:
                return self.latency_correction[key]
        return max(self.latency_correction.values())

    def violation(self, costs: dict[str, float]) -> dict[str, float]:
        """Per budget: relative excess over the limit (≤ 0 means met). Optuna's constraint form."""
        return {m: costs[m] / limit - 1.0 for m, limit in self.limits.items()}

    def resource(self, costs: dict[str, float]) -> float:
        """The tightest budget's cost over its limit: ≤ 1 means every budget holds."""
        return max(costs[m] / limit for m, limit in self.limits.items())

    def feasible(self, costs: dict[str, float], tolerance: float = 0.0) -> bool:
        return self.resource(costs) <= 1.0 + tolerance

    # --- policies built from a few numbers -------------------------------------------------
    def policy_from(self, keep: dict[str, float], bits: dict[str, tuple[int, int]] | None = None) -> Policy:
        """A full policy from per-group keep ratios and per-layer (w_bits, a_bits)."""
        layers: dict[str, LayerPolicy] = {}
        ratio_of = {m: keep.get(g, 1.0) for g, members in self.groups.items() for m in members}
        for layer in self.info.layers:
            wb, ab = (bits or {}).get(layer.name, (FLOAT_BITS, FLOAT_BITS))
            layers[layer.name] = LayerPolicy(ratio_of.get(layer.name, 1.0), wb, ab)
        return Policy(layers)

    def bits_for(self, draw) -> dict[str, tuple[int, int]]:
        """Per-layer (w_bits, a_bits) from ``draw(name) -> bits``: one draw per layer where the
        hardware prices mixed precision, one for the whole model otherwise."""
        if self.per_layer_bits:
            return {layer.name: (draw(layer.name),) * 2 for layer in self.info.layers}
        b = draw("all")
        return {layer.name: (b, b) for layer in self.info.layers}

    def uniform_policy(self, keep_ratio: float, bits: int = FLOAT_BITS) -> Policy:
        return self.policy_from({g: keep_ratio for g in self.groups},
                                {layer.name: (bits, bits) for layer in self.info.layers})

    def keep_precisions_that_pay(self, margin: float = PRECISION_MARGIN) -> dict[str, str]:
        """Drop each narrower precision that is not faster than float where the budget is, and
        say why for every precision (bits -> reason): ``result.json``'s ``precision_notes``.

        Why: on a CPU without VNNI ORT's int8 kernels are slower than fp32 at narrow widths and
        faster at wide ones, and the model-wide int8 answer at keep 0.45 measured the same as
        fp32 at those widths (0.345x vs 0.348x): int8 risked accuracy for no speed. So at the
        widths the budget leaves float (its largest uniform policy within budget), a precision
        stays searchable only if the (device-corrected) table prices it at least ``margin``
        faster there. Float always stays; so does a precision without which the budget cannot
        be met."""
        notes: dict[str, str] = {}
        if FLOAT_BITS not in self.bits_choices or len(self.bits_choices) < 2 or "latency_ms" not in self.limits:
            return {str(b): "searched" for b in self.bits_choices}
        ratio = largest_feasible_ratio(self, lambda r: self.uniform_policy(r, FLOAT_BITS))
        if ratio is None:
            return {str(b): "searched: float alone cannot meet the latency budget" for b in self.bits_choices}
        float_ms = self.costs(self.uniform_policy(ratio, FLOAT_BITS))["latency_ms"]
        kept = [FLOAT_BITS]
        notes[str(FLOAT_BITS)] = f"searched: {float_ms:.4f} ms at keep {ratio:.2f} everywhere"
        for bits in self.bits_choices:
            if bits == FLOAT_BITS:
                continue
            ms = self.costs(self.uniform_policy(ratio, bits))["latency_ms"]
            pays = ms <= float_ms * (1 - margin)
            verdict = "searched" if pays else "not searched"
            notes[str(bits)] = (f"{verdict}: {ms:.4f} ms at keep {ratio:.2f} everywhere, "
                                f"{ms / float_ms:.2f}x float's {float_ms:.4f} ms")
            if pays:
                kept.append(bits)
        self.bits_choices = tuple(b for b in self.bits_choices if b in kept)
        return notes

    def smallest_costs(self) -> dict[str, float]:
        """Per metric, the least any uniform policy at the smallest keep ratio reaches (the
        narrowest bit-width is not always the fastest: int8 kernels can be slower than float)."""
        options = [self.costs(self.uniform_policy(self.min_keep_ratio, b)) for b in self.bits_choices]
        return {m: min(o[m] for o in options) for m in options[0]}

    def check_reachable(self, skip: tuple[str, ...] = ()) -> None:
        """Fail fast, naming the budget and the smallest value reachable, when no policy of this
        space can meet a budget. ``skip``: metrics judged later by measuring (see
        :func:`build_problem`)."""
        smallest = self.smallest_costs()
        for metric, limit in self.limits.items():
            if metric in skip:
                continue
            if smallest[metric] > limit:
                term = next(t for t in self.budget.terms if t.metric == metric)
                raise BudgetError(
                    f"budget {term}: {metric} ≤ {limit:.4g} is unreachable for {self.info.model_name} "
                    f"on {self.profile.name}: the smallest reachable value is {smallest[metric]:.4g} "
                    f"(uncompressed {self.reference[metric]:.4g}; keep ratio ≥ {self.min_keep_ratio}, "
                    f"bits ≥ {min(self.bits_choices)})")


def largest_feasible_ratio(problem: "CompressionProblem", make, lo: float | None = None,
                           hi: float = 1.0, iterations: int = 24) -> float | None:
    """Bisection for the largest ``r`` in [lo, hi] with ``make(r)`` within budget (costs are
    monotone in ``r``); None when even ``lo`` is over."""
    lo = problem.min_keep_ratio if lo is None else lo
    if not problem.feasible(problem.costs(make(lo))):
        return None
    if problem.feasible(problem.costs(make(hi))):
        return hi
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if problem.feasible(problem.costs(make(mid))):
            lo = mid
        else:
            hi = mid
    return lo


def load_or_build_table(model_name: str, info: ModelInfo, profile: HardwareProfile,
                        table_path: str | None = None, quick: bool = False,
                        num_classes: int = 10) -> LatencyTable:
    """The table given, or this model's table for ``profile`` built on first use and cached."""
    from ..profiling import profile_model, stale_remainders

    if table_path:
        table = LatencyTable.load(table_path)
        table.check_compatible(profile.compat_request())
        if stale_remainders(table):
            warnings.warn(f"latency table {table_path}: its remainders were timed with int8 export "
                          f"{table.metadata.int8_export or 'qdq-1'!r}, this hwcompress deploys "
                          f"{INT8_EXPORT!r} (different glue between int8 and fp32 layers); run "
                          f"`hwcompress profile --model {model_name} --out {table_path}` again to "
                          "re-time them (the layer entries are kept)", stacklevel=2)
        return table
    from ..train import cache_dir

    safe = model_name.replace(":", "_").replace("/", "_")
    shape = "x".join(str(v) for v in info.input_shape)
    path = cache_dir() / "tables" / f"{profile.name}-t{profile.threads}-{safe}-{shape}{'-quick' if quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        try:
            table = LatencyTable.load(path)
        except TableError as exc:  # made by an older hwcompress: our cache, so measure afresh
            log.info("cached latency table %s is stale (%s); rebuilding", path.name, exc)
            path.unlink()  # else the profiler would try to resume it and refuse it the same way
        else:
            if stale_remainders(table):   # profile_model keeps the entries, times whole models again
                log.info("cached latency table %s: remainders timed with int8 export %r, now %r; "
                         "re-measuring them", path.name, table.metadata.int8_export, INT8_EXPORT)
            elif table.remainders_for(model_name, info.input_shape) or not profile.backend.measures_latency:
                return _calibrated(table, model_name, info, path)
    kernels = device_kernels_path(profile)
    if kernels.is_file() and not quick and profile.backend.measures_latency:
        try:
            sample = LatencyTable.load(kernels)
        except TableError as exc:
            log.warning("device kernel table %s unusable (%s): timing every layer", kernels, exc)
        else:
            log.info("pricing %s's layers from this device's kernel table %s; timing its whole-model "
                     "remainder only (cached at %s)", model_name, kernels, path)
            return profile_model(model_name, info.input_shape, profile, out=path,
                                 num_classes=num_classes, progress=True, kernels_from=sample)
    log.info("building the %s latency table for %s at %s (first use; cached at %s)",
             profile.name, model_name, list(info.input_shape), path)
    return profile_model(model_name, info.input_shape, profile, out=path, quick=quick,
                         num_classes=num_classes, progress=True)


def device_kernels_path(profile: HardwareProfile) -> Path:
    """Where this device's kernel table lives (``hwcompress lut kernels --into-cache`` writes it):
    when present, a model with no table of its own has its layers priced from it and only its
    whole-model remainder timed (``profile --kernels-from``), minutes instead of a full build."""
    from ..train import cache_dir

    return cache_dir() / "tables" / f"{profile.name}-t{profile.threads}-kernels.json"


def _calibrated(table: LatencyTable, model_name: str, info: ModelInfo, path: Path) -> LatencyTable:
    """Our cached table as built before the per-kind kernel calibration: calibrated on the
    whole-model timings it stored (``hwcompress lut calibrate``; nothing is timed) and saved.
    A user's own table (``--table``) is left as given."""
    from ..profiling import calibrate_if_missing

    if info.model_name != model_name or not table.remainders_for(model_name, info.input_shape):
        return table
    try:
        if calibrate_if_missing(table, info, path):
            log.info("cached latency table %s: kernels calibrated per kind on its stored "
                     "whole-model timings %s", path.name, table.metadata.kernel_multipliers[model_name])
    except TableError as exc:   # remainders from another procedure: predict as before
        log.info("cached latency table %s not calibrated: %s", path.name, exc)
    return table


def build_problem(loaded: LoadedModel, budgets: list[str] | Budget, hardware: str | None = None,
                  table: str | None = None, threads: int = 1, quick_table: bool = False,
                  quantize: bool = True, measured_reference_ms: float | None = None,
                  latency_judged_by_device: bool = False) -> CompressionProblem:
    """The problem of one job. A relative latency budget (``latency_ms=0.5x``) is a fraction of
    ``measured_reference_ms`` (the uncompressed model measured on the device) when given, which
    is what a user means by "half as fast"; otherwise of the table's prediction.

    ``latency_judged_by_device``: the caller will time the smallest policy on the device before
    searching (``calibrate_latency``), so the table alone does not refuse a latency budget: a
    budget near the floor is decided by the device as it runs now, as the peers' are (this VM
    runs small graphs in faster and slower stretches; Torch-Pruning's narrowest ResNet-20 read
    0.32x in one and 0.415x in another, while the table put ours at 0.36x)."""
    profile = get_profile(hardware or DEFAULT_PROFILE, threads)
    budget = budgets if isinstance(budgets, Budget) else Budget.parse(budgets)
    lut = load_or_build_table(loaded.name, loaded.info, profile, table, quick=quick_table,
                              num_classes=loaded.data.num_classes)
    overrides = {}
    if measured_reference_ms is not None:
        overrides["latency_ms"] = measured_reference_ms
    problem = CompressionProblem(loaded, profile, lut, budget, quantize=quantize,
                                 reference_overrides=overrides)
    skip = ("latency_ms",) if latency_judged_by_device and profile.backend.measures_latency else ()
    problem.check_reachable(skip)
    return problem


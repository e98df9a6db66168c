"""Profiling orchestration: whole models built by the engine, timed by the leaf runtime.

``latency_models`` measures single layers and predicts; everything that needs a whole model as
it is deployed — the zoo, tracing, ``automl.compress`` to prune and quantize it, the export —
lives here, one layer up, so ``latency_models`` never imports the engine (docs/architecture.md).

- :func:`profile_model`: build (or continue) a model's table: layer entries, then remainders.
- :func:`measure_remainders`: whole-model timings at a few widths; what the kernels do not explain.
- :func:`validate_model`: ``hwcompress lut validate``: predicted vs measured on random policies.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from latency_models.energy import HorowitzEnergyModel
from latency_models.predictor import Predictor, policy_features, profile_of
from latency_models.profile import HardwareProfile
from latency_models.grid import DEFAULT_POINTS, check_points
from latency_models.kernel_calibration import calibrate_kernels
from latency_models.profiler import open_table, profile_layers, regress_layers
from latency_models.onnx_runtime import INT8_EXPORT
from latency_models.sampling import MODEL_WINDOW, sample_model_times
from latency_models.timing import (MODEL_BUDGET_S, CudaRunner, Runner, ort_runner, time_together,
                                   torch_runner)
from latency_models.table import LatencyTable, RemainderEntry, TableError
from latency_models.unseen import KernelRegressor, UnseenModel, table_without
from latency_models.validate import PolicyTiming, table_profile, validate_predictions

from .core import FLOAT_BITS, LayerPolicy, ModelInfo, Policy

QUICK_POINTS = 3
QUICK_WIDTHS = (1.0, 0.5)
DEFAULT_WIDTHS = (1.0, 0.75, 0.5, 0.25)
RANDOM_REMAINDER_POINTS = 4   # per precision, beside the uniform widths (full tables only)
MIXED_POINTS_FACTOR = 3       # random mixed-precision points: this many times as many
# Why three times: one boundary cost is fitted from them (the median of per-model slopes), and the
# slopes of random mixes spread widely (`python -m bench.mixed_residual`, 224 on the Intel host:
# 1.3-5.2 ms per unit of boundary volume for MobileNetV2-1.0, -4.8-19.8 for ResNet-18); with 4 the
# fit under-priced the validation's mixed policies by a median 11% / 8% (BENCHMARKS.md, issue 14).
REMAINDER_SEED = 1000          # not lut validate's seed: calibration and validation policies differ


def uniform_policy(info: ModelInfo, keep_ratio: float, precision: str) -> Policy:
    bits = 8 if precision == "int8" else FLOAT_BITS
    return Policy.uniform(info, keep_ratio, bits, bits)


def mixed_policy(info: ModelInfo, keep_ratio: float, phase: int) -> Policy:
    """Every other layer 8-bit (starting at ``phase``): the most int8/fp32 boundaries."""
    return Policy({layer.name: LayerPolicy(keep_ratio if layer.prunable else 1.0,
                                           *((8, 8) if (i + phase) % 2 == 0 else (FLOAT_BITS, FLOAT_BITS)))
                   for i, layer in enumerate(info.layers)})


def deployed_runner(model: nn.Module, policy: Policy, info: ModelInfo, profile: HardwareProfile,
                    calib: list[torch.Tensor]) -> Runner:
    """The compressed model as deployed, ready to time: built with
    :func:`automl.compress.apply_policy` and, on ONNX Runtime, ``export_deployable``."""
    from .compress import apply_policy, export_deployable

    compressed = apply_policy(model, policy, info, calib, channel_step=profile.channel_step)
    if profile.backend.runs_onnx:
        onnx_bytes = export_deployable(compressed, policy, info, info.input_shape, calib)
        return ort_runner(onnx_bytes, info.input_shape, profile.threads, profile.batch,
                          budget_s=MODEL_BUDGET_S, whole_model=True)
    return torch_runner(compressed, info.input_shape, profile.threads, profile.batch,
                        profile.backend.torch_device, budget_s=MODEL_BUDGET_S, whole_model=True)


def reference_runner(model: nn.Module, info: ModelInfo, profile: HardwareProfile,
                     calib: list[torch.Tensor]) -> Runner | None:
    """The unpruned all-fp32 model as deployed, to time beside others (None where timing is
    not interleaved: a CUDA runner times one model with device events)."""
    runner = deployed_runner(model, uniform_policy(info, 1.0, "fp32"), info, profile, calib)
    return None if isinstance(runner, CudaRunner) else runner


def measure_model_ms(model: nn.Module, policy: Policy, info: ModelInfo, profile: HardwareProfile,
                     calib: list[torch.Tensor], reference: Runner | None = None) -> PolicyTiming:
    """The compressed model's latency as deployed (``uncontended_ms`` of
    :func:`latency_models.sampling.sample_model_times`, and its IQR); with a ``reference`` runner
    (:func:`reference_runner`), timed interleaved with it in the same budget, its figure beside."""
    runner = deployed_runner(model, policy, info, profile, calib)
    if reference is None:     # (a CUDA device never has one: reference_runner)
        stats = runner.time()
        return PolicyTiming(stats.uncontended_ms, stats.iqr_ms)
    own, ref = sample_model_times([runner.fns, reference.fns])
    return PolicyTiming(own.uncontended_ms, own.iqr_ms, ref.uncontended_ms)


def measure_models_ms(model: nn.Module, policies: Sequence[Policy], info: ModelInfo,
                      profile: HardwareProfile, calib: list[torch.Tensor],
                      reference: Runner | None = None,
                      on_timed: Callable[[int], object] | None = None) -> list[PolicyTiming]:
    """Compressed models as deployed, timed :data:`MODEL_WINDOW` at a time (their chunks
    interleaved over their budgets summed, :func:`latency_models.timing.time_together`), each
    read as if alone: a second-long slow stretch of the machine then covers part of each
    reading, not one whole. The window also bounds what is held: one window's sessions at a
    time, however many policies are passed. ``on_timed(n)`` after each window (a progress bar).
    With a ``reference``, each is timed beside it in turn (:func:`measure_model_ms`)."""
    timings: list[PolicyTiming] = []
    size = 1 if reference is not None else MODEL_WINDOW
    for start in range(0, len(policies), size):
        window = policies[start:start + size]
        if reference is not None:
            timings.append(measure_model_ms(model, window[0], info, profile, calib, reference))
        else:
            runners = [deployed_runner(model, p, info, profile, calib) for p in window]
            timings += [PolicyTiming(s.uncontended_ms, s.iqr_ms) for s in time_together(runners)]
        if on_timed is not None:
            on_timed(len(window))
    return timings


def remainder_policies(info: ModelInfo, profile: HardwareProfile,
                       widths: Sequence[float] = DEFAULT_WIDTHS, random_points: int = 0) -> list[Policy]:
    """The whole-model points a table's remainder is fitted on: uniform widths × precisions;
    ``random_points`` random keep ratios per precision and ``MIXED_POINTS_FACTOR`` times as many
    random mixed-precision ones (policies shaped like a search's: alternating-precision models
    alone set a boundary cost that under-predicted random mixed ResNet-20 policies by 7%); and,
    with int8, two alternating mixed-precision models per pruned width. The first point is the
    unpruned model at the first precision (fp32: the table's reference)."""
    import numpy as np

    from latency_models.validate import sample_policy

    points = [uniform_policy(info, w, prec) for w in widths for prec in profile.precisions]
    rng = np.random.default_rng(REMAINDER_SEED)
    modes = ["int8" if prec == "int8" else "fp32" for prec in profile.precisions]
    if "int8" in profile.precisions and "fp32" in profile.precisions:
        modes.append("mixed")   # random per-layer precision: the boundary cost as policies have it
    for mode in modes:
        points += [sample_policy(info, rng, mode, min_keep=0.25)[0] for _ in range(random_points)]
    if "mixed" in modes:   # drawn after the others, so those stay the policies they always were
        points += [sample_policy(info, rng, "mixed", min_keep=0.25)[0]
                   for _ in range((MIXED_POINTS_FACTOR - 1) * random_points)]
    if "int8" in profile.precisions and "fp32" in profile.precisions:
        # pruned widths only: at full width ORT sometimes leaves the fp32 convs of a mixed
        # ResNet-20 off its NCHWc path (0.5 ms slower), which is not a boundary cost
        mixed_widths = [w for w in widths if w < 1.0][:2] or list(widths[:1])
        points += [mixed_policy(info, w, phase) for w in mixed_widths for phase in (0, 1)]
    return points


def measure_remainders(table: LatencyTable, model: nn.Module, info: ModelInfo,
                       profile: HardwareProfile, calib: list[torch.Tensor],
                       widths: Sequence[float] = DEFAULT_WIDTHS, progress: bool = True,
                       random_points: int = 0) -> None:
    """Time the whole model at :func:`remainder_policies`' points and store the remainders
    (:func:`store_remainders`). The full-width fp32 point is the table's reference
    (:meth:`LatencyTable.reference_ms`).

    Points are timed :data:`MODEL_WINDOW` at a time, interleaved (:func:`measure_models_ms`),
    and not scaled by a reference timed beside them: a scaled timing carries the reference's
    noise too, and on a steady host that costs more than the drift it cancels (MobileNetV2-1.0
    at 224, 2026-12-05: two passes of a policy agreed within ±5% for 94% of policies unscaled,
    84% scaled; BENCHMARKS.md)."""
    from tqdm.auto import tqdm

    points = remainder_policies(info, profile, widths, random_points)
    with tqdm(total=len(points), desc=f"remainder {info.model_name}", disable=not progress) as bar:
        timings = measure_models_ms(model, points, info, profile, calib, on_timed=bar.update)
    store_remainders(table, info, profile, [(p, t.ms) for p, t in zip(points, timings, strict=True)])


def store_remainders(table: LatencyTable, info: ModelInfo, profile: HardwareProfile,
                     timed: Sequence[tuple[Policy, float]]) -> None:
    """Store whole − overhead − kernels for each (policy, whole_ms) of ``timed``. The model's
    kernels are first calibrated per kind on these same timings
    (:func:`latency_models.kernel_calibration.calibrate_kernels`), so its remainder carries only
    what that leaves."""
    calibrate_kernels(table, info, profile, timed)
    rows: list[RemainderEntry] = []
    pred = Predictor(table, profile, warn=False)
    for policy, whole_ms in timed:
        kernels_ms, _, int8_kernels_ms = pred.kernel_sums(info, policy)
        act_ratio, int8_frac, boundary = policy_features(info, policy, profile)
        rows.append(RemainderEntry(model=info.model_name, input_shape=list(info.input_shape),
                                   act_ratio=act_ratio, int8_fraction=int8_frac,
                                   remainder_ms=whole_ms - table.overhead_ms - kernels_ms,
                                   whole_ms=whole_ms, kernels_ms=kernels_ms,
                                   boundary_ratio=boundary,
                                   int8_kernels_ms=int8_kernels_ms))
    table.set_remainders(info.model_name, info.input_shape, rows)
    table.metadata.input_shapes[info.model_name] = list(info.input_shape)
    table.metadata.int8_export = INT8_EXPORT


def stored_timings(table: LatencyTable, info: ModelInfo,
                   profile: HardwareProfile) -> list[tuple[Policy, float]]:
    """The (policy, whole_ms) pairs a table's remainder rows of ``info`` were computed from: the
    policies re-derived (:func:`remainder_policies` is seeded; a full table's points or a quick
    one's), each checked against its row. For re-fitting without timing again (a table from
    before a fitting change: :func:`recalibrate`)."""
    rows = table.remainders_for(info.model_name, info.input_shape)
    for widths, random_points in ((DEFAULT_WIDTHS, RANDOM_REMAINDER_POINTS), (QUICK_WIDTHS, 0)):
        points = remainder_policies(info, profile, widths, random_points)
        if len(rows) == len(points) and all(
                abs(policy_features(info, p, profile)[0] - r.act_ratio) <= 1e-6 for p, r in zip(points, rows)):
            return [(p, r.whole_ms) for p, r in zip(points, rows)]
    raise TableError(f"latency table: the {len(rows)} remainder rows of {info.model_name!r} are not "
                     "the points of today's procedure; profile it again to re-time them")


def recalibrate(table: LatencyTable, model_name: str, num_classes: int = 10,
                info: ModelInfo | None = None) -> dict[str, float]:
    """``hwcompress lut calibrate``: re-fit ``model_name``'s kernel multipliers
    (:mod:`latency_models.kernel_calibration`) and remainder on the whole-model timings ``table``
    stored, timing nothing; returns the multipliers. For a table built before the calibration
    existed (it predicts as before until then). ``info``: the model's trace when the caller has
    it (else the model is built by name)."""
    if model_name not in table.metadata.input_shapes:
        raise TableError(f"latency table has no model {model_name!r} (it has "
                         f"{sorted(table.metadata.input_shapes)})")
    if info is None:
        info = load_model_and_info(model_name, table.metadata.input_shapes[model_name], num_classes)[1]
    profile = profile_of(table)   # the table's own: nothing is timed, so any machine may re-fit it
    if stale_remainders(table) or not table.remainders_for(model_name, info.input_shape):
        raise TableError(f"latency table: {model_name!r} has no current remainder timings to "
                         "calibrate on; run `hwcompress profile` on it")
    store_remainders(table, info, profile, stored_timings(table, info, profile))
    return table.metadata.kernel_multipliers[model_name]


def calibrate_if_missing(table: LatencyTable, info: ModelInfo, path: str | Path) -> bool:
    """A table that holds ``info``'s remainders but no kernel multipliers for it (built before
    the per-kind calibration) calibrated on its stored timings (:func:`recalibrate`) and saved
    to ``path``; False when it had them already. A :class:`TableError` (remainder rows from
    another procedure) is the caller's to handle."""
    if info.model_name in table.metadata.kernel_multipliers:
        return False
    recalibrate(table, info.model_name, info=info)
    table.save(path)
    return True


def stale_remainders(table: LatencyTable) -> bool:
    """Whether ``table``'s remainders were timed with another int8 export than today's
    (:data:`latency_models.onnx_runtime.INT8_EXPORT`): the export decides the glue between int8
    and fp32 layers, which only whole-model timings see."""
    md = table.metadata
    return (bool(table.remainders) and "int8" in md.precisions and md.int8_export != INT8_EXPORT
            and profile_of(table).backend.runs_onnx)


def load_model_and_info(model_name: str, input_shape: Sequence[int], num_classes: int,
                        allow_import: bool = True) -> tuple[nn.Module, ModelInfo]:
    """A zoo model with seeded random weights (latency does not depend on them) and its trace."""
    from .models import build_model
    from .space import trace_model

    torch.manual_seed(0)
    shape = tuple(int(v) for v in input_shape)
    model = build_model(model_name, shape[0], num_classes, allow_import=allow_import).eval()
    return model, trace_model(model, shape, model_name)  # type: ignore[arg-type]


def random_calibration(input_shape: Sequence[int]) -> list[torch.Tensor]:
    return [torch.randn(16, *input_shape, generator=torch.Generator().manual_seed(0))]


def profile_kernel_sample(profile: HardwareProfile, out: str | Path | None = None, *,
                          samples: int = 300, max_hw: int = 224, seed: int = 0,
                          resume: bool = True, progress: bool = True) -> LatencyTable:
    """Measure a model-independent kernel sample on ``profile`` (:mod:`latency_models.kernel_sample`).

    Merged with model tables (``hwcompress lut merge``) it gives the unseen-net predictor
    (``lut validate --unseen``, :func:`unseen_view`) rows of kernel types no profiled model has.
    Resumable like a model's table: a re-run with the same seed measures only what is missing."""
    from latency_models.kernel_sample import kernel_plans, sample_kernels

    if not profile.backend.measures_latency:
        raise TableError(f"{profile.name} is simulated: its simulator prices any layer already, "
                         "a kernel sample is for a measured device")
    energy = HorowitzEnergyModel()
    info = sample_kernels(samples, max_hw, seed)
    table = open_table(out, profile, energy.name, resume)
    profile_layers(table, info, profile, out=out, progress=progress, energy=energy,
                   plans=kernel_plans(info.layers))
    if out is not None:
        table.save(out)
    return table


def profile_model(model_name: str, input_shape: Sequence[int], profile: HardwareProfile,
                  out: str | Path | None = None, *, num_classes: int = 10, quick: bool = False,
                  points: int | None = None, resume: bool = True, progress: bool = True,
                  remainder: bool = True, calib: list[torch.Tensor] | None = None,
                  kernels_from: LatencyTable | None = None) -> LatencyTable:
    """Build (or continue) the table of ``model_name`` at ``input_shape`` on ``profile``.

    ``kernels_from``: time no layer; price the grid with a :class:`KernelRegressor` fitted on
    that table's measured entries (other nets, a kernel sample: taken under the same conditions)
    and measure only the whole-model remainder, which then also carries what the regression
    gets wrong on this net (:func:`latency_models.profiler.regress_layers`)."""

    if kernels_from is not None and not profile.backend.measures_latency:
        raise TableError(f"kernels-from: {profile.name} is simulated; its simulator prices every "
                         "layer already (nothing to regress)")
    energy = HorowitzEnergyModel()
    model, info = load_model_and_info(model_name, input_shape, num_classes)
    points = check_points(points) if points is not None else (QUICK_POINTS if quick else DEFAULT_POINTS)
    table = open_table(out, profile, energy.name, resume)
    if not profile.backend.measures_latency:   # a simulated device: the backend prices the grid
        profile.backend.simulate_table(table, info, points=points)
        if out is not None:
            table.save(out)
        return table
    if kernels_from is not None:
        try:
            kernels_from.check_compatible(profile.compat_request())
        except TableError as exc:
            raise TableError(f"kernels-from table: {exc}") from exc
        if kernels_from.metadata.channel_step != profile.channel_step:
            raise TableError(f"kernels-from table: channel_step {kernels_from.metadata.channel_step}"
                             f" != {profile.channel_step}")
        # the regressed kernels are net of kernels_from's overhead; a resumed table's own differs
        # by µs, which the remainder measured against these kernels absorbs
        if not table.overhead_ms:
            table.overhead_ms = kernels_from.overhead_ms
            table.overhead_source = kernels_from.overhead_source
        regress_layers(table, info, profile, KernelRegressor.fit(kernels_from), points=points,
                       energy=energy)
    else:
        profile_layers(table, info, profile, points=points, out=out, progress=progress,
                       energy=energy)
    if stale_remainders(table):   # the layer entries time lone layers: still valid
        others = sorted({r.model for r in table.remainders} - {model_name})
        if others:
            warnings.warn(f"latency table: remainders of {others} were timed with int8 export "
                          f"{table.metadata.int8_export or 'qdq-1'!r} and are dropped with this "
                          f"model's; profile those models again to re-time them", stacklevel=2)
        table.remainders = []
    if remainder and (not resume or not table.remainders_for(model_name, info.input_shape)):
        measure_remainders(table, model, info, profile, calib or random_calibration(info.input_shape),
                           QUICK_WIDTHS if quick else DEFAULT_WIDTHS, progress,
                           random_points=0 if quick else RANDOM_REMAINDER_POINTS)
    table.metadata.input_shapes[model_name] = list(info.input_shape)
    if out is not None:
        table.save(out)
    return table


def validate_model(model_name: str, table: LatencyTable, samples: int = 100, seed: int = 0, *,
                   threads: int | None = None, input_shape: Sequence[int] | None = None,
                   num_classes: int = 10, json_out: str | Path | None = None,
                   png_out: str | Path | None = None, progress: bool = True,
                   passes: int = 2, unseen: bool = False, relative: bool = False) -> dict[str, Any]:
    """Fidelity of ``table`` for ``model_name`` on ``samples`` random policies, each built for
    real (``apply_policy`` then ``export_deployable``, exactly what is deployed) and timed
    ``passes`` times (the noise floor: :mod:`latency_models.validate`).

    ``relative``: time each policy beside the unpruned fp32 model and scale it to that model's
    latency when the table was built, for a machine whose speed drifts (the module docstring of
    :mod:`latency_models.validate`); the unscaled figures are in the report either way.

    ``unseen``: predict ``model_name`` as a net the table never profiled — its remainders and
    every entry at its layer shapes dropped, kernels and remainder predicted from the table's
    other models (:mod:`latency_models.unseen`). ``input_shape`` is then required when the
    table does not list the model."""
    profile = table_profile(table, threads)
    if not profile.backend.measures_latency:
        raise TableError("a simulated table cannot be validated against measurement "
                         "(there is no such device here)")
    if input_shape is None:
        if model_name not in table.metadata.input_shapes:
            raise TableError(f"latency table has no model {model_name!r} (it has "
                             f"{sorted(table.metadata.input_shapes)}); profile it first, or pass "
                             "its input shape to predict it as an unseen net")
        input_shape = table.metadata.input_shapes[model_name]
    model, info = load_model_and_info(model_name, input_shape, num_classes)
    fallback = None
    if unseen and relative:
        raise ValueError("relative: an unseen net has no reference latency in the table to scale "
                         "to; validate it without --relative")
    if unseen:
        table, fallback = unseen_view(table, info, num_classes)
    calib = random_calibration(info.input_shape)
    reference = reference_runner(model, info, profile, calib) if relative else None
    return validate_predictions(
        table, info, profile,
        lambda policies: measure_models_ms(model, policies, info, profile, calib, reference),
        samples, seed, json_out=json_out, png_out=png_out, progress=progress, passes=passes,
        unseen=fallback, window=MODEL_WINDOW)


def unseen_view(table: LatencyTable, info: ModelInfo, num_classes: int = 10
                ) -> tuple[LatencyTable, UnseenModel]:
    """``table`` as it would be had it never profiled ``info``'s net, and the fallback that
    predicts that net's kernels from everything else the table measured (other models' entries,
    a kernel sample merged in: ``hwcompress lut kernels``). Its remainder is not predicted (see
    :meth:`latency_models.unseen.UnseenModel.fit`)."""
    others = {}
    for name, shape in table.metadata.input_shapes.items():
        if name != info.model_name:
            others[name] = load_model_and_info(name, shape, num_classes)[1]
    rest = table_without(table, [info])
    fallback = UnseenModel.fit(rest, others)
    if not rest.entries:
        raise TableError(f"latency table has too little of other models to predict "
                         f"{info.model_name!r} as unseen (models: {sorted(others)}; no measured "
                         "kernel is left once its layer shapes are dropped: profile another model, "
                         "or merge in a kernel sample from `hwcompress lut kernels`)")
    return rest, fallback

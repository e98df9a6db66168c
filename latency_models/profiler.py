"""Building a latency table by measurement (``hwcompress profile``).

For every distinct layer shape of a model (see :func:`latency_models.table.layer_key`) it times
the layer alone, as the runtime executes it (conv with its BN folded and its activation fused;
int8 through the same export + QDQ quantization the deployed model goes through), at a grid of
(in, out) channel counts on the profile's channel step and at every precision the device runs.
Then it times the whole model at a few uniform widths and both precisions, and stores what the
kernels do not explain as the model's *remainder* (pooling, residual adds, quantize/dequantize
boundaries, input handling), so that prediction = overhead + Σ kernels + remainder.

Importing this module imports only ``automl.core`` of ours; the model zoo, tracing and
``automl.compress`` (to build each pruned whole model exactly as it is deployed) are imported
inside :func:`profile_model` and :func:`measure_remainders`, which are orchestration.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from automl.core import FLOAT_BITS, ModelInfo, Policy

from .energy import HorowitzEnergyModel, measure_energy_mj
# the grid and the timing pieces live in leaf modules (the device backends and the simulator
# use them too); re-exported here, where callers have always found them
from .grid import (DEFAULT_POINTS, GridPlan, channel_choices, layer_at,  # noqa: F401
                   layer_energy_mj, plan_grid)
from .profile import HardwareProfile
from .table import LatencyTable, RemainderEntry, TableEntry, TableError, TableMetadata
from .timing import (BLOCKS, SESSIONS, CudaRunner, Runner, build_layer_module,  # noqa: F401
                     calib_for, layer_input_shape, ort_runner, robust_time, torch_runner)

log = logging.getLogger(__name__)

QUICK_POINTS = 3
QUICK_WIDTHS = (1.0, 0.5)
DEFAULT_WIDTHS = (1.0, 0.75, 0.5, 0.25)
SAVE_EVERY = 25


def measure_overhead_ms(profile: HardwareProfile) -> float:
    """The runtime's per-call cost: a run of the device's smallest graph. Counted once per model."""
    runner = profile.backend.overhead_runner()
    return min(runner.time().median_ms for _ in range(3))


# ---- metadata ----------------------------------------------------------------------------
def hwcompress_version() -> str:
    try:
        from importlib.metadata import version
        return version("hwcompress")
    except Exception:
        return "0.1.0"


def new_metadata(profile: HardwareProfile, energy_model: str) -> TableMetadata:
    return TableMetadata(
        device=profile.name, runtime=profile.runtime, runtime_version=profile.runtime_version(),
        threads=profile.threads, batch=profile.batch, hardware=profile.hardware,
        channel_step=profile.channel_step, precisions=list(profile.precisions),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        hwcompress_version=hwcompress_version(), energy_model=energy_model)


def open_table(path: str | Path | None, profile: HardwareProfile, energy_model: str,
               resume: bool = True) -> LatencyTable:
    """The half-built table at ``path`` to continue (refused if made under other conditions),
    or a new empty one."""
    if path is not None and resume and Path(path).is_file():
        table = LatencyTable.load(path)
        table.check_compatible(profile.compat_request())
        if table.metadata.channel_step != profile.channel_step:
            raise TableError(f"{path}: channel_step {table.metadata.channel_step} != "
                             f"{profile.channel_step}")
        return table
    return LatencyTable(new_metadata(profile, energy_model))


# ---- profiling a model ---------------------------------------------------------------------
def profile_layers(table: LatencyTable, info: ModelInfo, profile: HardwareProfile, *,
                   points: int = DEFAULT_POINTS, out: str | Path | None = None,
                   progress: bool = True, energy: HorowitzEnergyModel | None = None) -> int:
    """Measure every missing (key, precision, in, out) of ``info``'s grid; returns how many.

    Saves to ``out`` every few entries and on interruption, so a re-run resumes."""
    from tqdm.auto import tqdm

    energy = energy or HorowitzEnergyModel()
    backend = profile.backend
    meter = backend.energy_meter()
    todo = [(plan, p, prec) for plan in plan_grid(info, profile.channel_step, points)
            for p in plan.points() for prec in profile.precisions
            if not table.has(plan.key, prec, *p)]
    if not todo:
        return 0
    if not table.overhead_ms:
        table.overhead_ms = measure_overhead_ms(profile)
    done = 0
    bar = tqdm(todo, desc=f"profile {info.model_name} on {profile.name}", disable=not progress,
               unit="entry")
    try:
        for plan, (cin, cout), prec in bar:
            runner = backend.layer_runner(plan.layer, cin, cout, prec)
            stats = runner.time()
            if meter is not None:
                e_mj, e_src = measure_energy_mj(meter, runner.fn), "measured"
            else:
                e_mj, e_src = layer_energy_mj(energy, plan.layer, cin, cout, prec), "modeled"
            table.add(TableEntry(
                key=plan.key, in_channels=cin, out_channels=cout, precision=prec,
                latency_ms=max(1e-5, stats.median_ms - table.overhead_ms), iqr_ms=stats.iqr_ms,
                raw_median_ms=stats.median_ms, repeats=stats.repeats, blocks=BLOCKS * len(runner.fns),
                remeasured=stats.remeasured,
                latency_source="measured", energy_mj=e_mj, energy_source=e_src))
            done += 1
            if out is not None and done % SAVE_EVERY == 0:
                table.save(out)
    finally:
        bar.close()
        if out is not None and done:
            table.save(out)
    return done


def uniform_policy(info: ModelInfo, keep_ratio: float, precision: str,
                   profile: HardwareProfile) -> Policy:
    bits = 8 if precision == "int8" else FLOAT_BITS
    return Policy.uniform(info, keep_ratio, bits, bits)


def measure_model_ms(model: nn.Module, policy: Policy, info: ModelInfo, profile: HardwareProfile,
                     calib: list[torch.Tensor]) -> tuple[float, float]:
    """(median latency, IQR) of the compressed model as deployed: built with
    ``automl.compress.apply_policy`` and, on ONNX Runtime, ``export_deployable``."""
    from automl.compress import apply_policy, export_deployable

    compressed = apply_policy(model, policy, info, calib, channel_step=profile.channel_step)
    if profile.backend.runs_onnx:
        onnx_bytes = export_deployable(compressed, policy, info, info.input_shape, calib)
        runner = ort_runner(onnx_bytes, info.input_shape, profile.threads, profile.batch)
    else:
        device = profile.backend.torch_device
        runner = torch_runner(compressed, info.input_shape, profile.threads, profile.batch, device)
    stats = runner.time()
    return stats.median_ms, stats.iqr_ms


def mixed_policy(info: ModelInfo, keep_ratio: float, phase: int) -> Policy:
    """Every other layer 8-bit (starting at ``phase``): the most int8/fp32 boundaries."""
    from automl.core import LayerPolicy

    return Policy({layer.name: LayerPolicy(keep_ratio if layer.prunable else 1.0,
                                           *((8, 8) if (i + phase) % 2 == 0 else (FLOAT_BITS, FLOAT_BITS)))
                   for i, layer in enumerate(info.layers)})


def measure_remainders(table: LatencyTable, model: nn.Module, info: ModelInfo,
                       profile: HardwareProfile, calib: list[torch.Tensor],
                       widths: Sequence[float] = DEFAULT_WIDTHS, progress: bool = True) -> None:
    """Time the whole model at uniform widths × precisions (and, with int8, two alternating
    mixed-precision models per width for the boundary cost); store whole − overhead − kernels."""
    from tqdm.auto import tqdm

    from .predictor import Predictor, policy_features

    points = [uniform_policy(info, w, prec, profile) for w in widths for prec in profile.precisions]
    if "int8" in profile.precisions and "fp32" in profile.precisions:
        # pruned widths only: at full width ORT sometimes leaves the fp32 convs of a mixed
        # ResNet-20 off its NCHWc path (0.5 ms slower), which is not a boundary cost
        mixed_widths = [w for w in widths if w < 1.0][:2] or list(widths[:1])
        points += [mixed_policy(info, w, phase) for w in mixed_widths for phase in (0, 1)]
    rows: list[RemainderEntry] = []
    pred = Predictor(table, profile, warn=False)
    for policy in tqdm(points, desc=f"remainder {info.model_name}", disable=not progress):
        whole_ms, _ = measure_model_ms(model, policy, info, profile, calib)
        kernels_ms, _ = pred.kernels(info, policy)
        act_ratio, int8_frac, boundary = policy_features(info, policy, profile)
        rows.append(RemainderEntry(model=info.model_name, input_shape=list(info.input_shape),
                                   act_ratio=act_ratio, int8_fraction=int8_frac,
                                   remainder_ms=whole_ms - table.overhead_ms - kernels_ms,
                                   whole_ms=whole_ms, kernels_ms=kernels_ms,
                                   boundary_ratio=boundary))
    table.set_remainders(info.model_name, info.input_shape, rows)
    table.metadata.input_shapes[info.model_name] = list(info.input_shape)


def load_model_and_info(model_name: str, input_shape: Sequence[int], num_classes: int,
                        allow_import: bool = True) -> tuple[nn.Module, ModelInfo]:
    from automl.models import build_model
    from automl.space import trace_model

    torch.manual_seed(0)
    shape = tuple(int(v) for v in input_shape)
    model = build_model(model_name, shape[0], num_classes, allow_import=allow_import).eval()
    return model, trace_model(model, shape, model_name)  # type: ignore[arg-type]


def profile_model(model_name: str, input_shape: Sequence[int], profile: HardwareProfile,
                  out: str | Path | None = None, *, num_classes: int = 10, quick: bool = False,
                  points: int | None = None, resume: bool = True, progress: bool = True,
                  remainder: bool = True, calib: list[torch.Tensor] | None = None) -> LatencyTable:
    """Build (or continue) the table of ``model_name`` at ``input_shape`` on ``profile``."""
    energy = HorowitzEnergyModel()
    if not profile.backend.measures_latency:
        model, info = load_model_and_info(model_name, input_shape, num_classes)
        table = open_table(out, profile, energy.name, resume)
        profile.backend.simulate_table(table, info, points=points or (QUICK_POINTS if quick else DEFAULT_POINTS))
        if out is not None:
            table.save(out)
        return table
    model, info = load_model_and_info(model_name, input_shape, num_classes)
    table = open_table(out, profile, energy.name, resume)
    profile_layers(table, info, profile, points=points or (QUICK_POINTS if quick else DEFAULT_POINTS),
                   out=out, progress=progress, energy=energy)
    if remainder and (not resume or not table.remainders_for(model_name, info.input_shape)):
        if calib is None:
            calib = [torch.randn(16, *info.input_shape, generator=torch.Generator().manual_seed(0))]
        measure_remainders(table, model, info, profile, calib,
                           QUICK_WIDTHS if quick else DEFAULT_WIDTHS, progress)
    table.metadata.input_shapes[model_name] = list(info.input_shape)
    if out is not None:
        table.save(out)
    return table


def table_stats(table: LatencyTable) -> dict[str, Any]:
    rel = [e.iqr_ms / e.raw_median_ms for e in table.entries.values() if e.raw_median_ms > 0]
    return {"entries": len(table.entries),
            "median_rel_iqr": float(np.median(rel)) if rel else math.nan,
            "remeasured": sum(e.remeasured for e in table.entries.values())}

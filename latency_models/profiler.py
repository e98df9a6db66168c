"""Measuring a latency table's entries on the device (the leaf of ``hwcompress profile``).

For every distinct layer shape of a model (see :func:`latency_models.table.layer_key`) it times
the layer alone, as the runtime executes it (conv with its BN folded and its activation fused;
int8 through the same export + QDQ quantization the deployed model goes through), at a grid of
(in, out) channel counts (:mod:`latency_models.grid`) at every precision the device runs, through
the profile's device backend (:mod:`latency_models.devices`). Whole-model work (remainders,
building a pruned model, the model zoo) needs the engine and lives one layer up in
:mod:`automl.profiling`; this module imports only ``automl.core`` of ours.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from automl.core import LayerInfo, ModelInfo

from .energy import HorowitzEnergyModel, measure_energy_mj
# the grid and the timing pieces live in leaf modules (the device backends and the simulator
# use them too); re-exported here, where callers have always found them
from .grid import (DEFAULT_POINTS, GridPlan, channel_choices, layer_at,  # noqa: F401
                   layer_energy_mj, missing_points, plan_grid)
from .profile import HardwareProfile
from .table import LatencyTable, TableEntry, TableError, TableMetadata
from .unseen import KernelRegressor
from .timing import (SESSIONS, CudaRunner, Runner, build_layer_module,  # noqa: F401
                     calib_for, layer_input_shape, ort_runner, sample_time, time_together,
                     torch_runner)

log = logging.getLogger(__name__)

# entries timed together, interleaved (a window's chunks spread over ~WINDOW_ENTRIES x 0.5 s), and
# the feature-map bytes their sessions may hold at once
WINDOW_ENTRIES = 16
WINDOW_BYTES = 512 * 2**20


def measure_overhead_ms(profile: HardwareProfile) -> float:
    """The runtime's per-call cost: a run of the device's smallest graph. Counted once per model."""
    runner = profile.backend.overhead_runner()
    return runner.time().uncontended_ms


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
                   progress: bool = True, energy: HorowitzEnergyModel | None = None,
                   plans: Sequence[GridPlan] | None = None) -> int:
    """Measure every missing (key, precision, in, out) of ``info``'s grid (or of ``plans``, a
    kernel sample's own grids); returns how many.

    Saves to ``out`` every few entries and on interruption, so a re-run resumes."""
    from tqdm.auto import tqdm

    energy = energy or HorowitzEnergyModel()
    backend = profile.backend
    meter = backend.energy_meter()
    plans = plans if plans is not None else plan_grid(info, profile.channel_step, points)
    todo = missing_points(table, plans, profile.precisions)
    if not todo:
        return 0
    if not table.overhead_ms:
        table.overhead_ms = measure_overhead_ms(profile)
    done = 0
    bar = tqdm(total=len(todo), desc=f"profile {info.model_name} on {profile.name}",
               disable=not progress, unit="entry")
    try:
        for window in timing_windows(todo):
            runners = [backend.layer_runner(plan.layer, cin, cout, prec)
                       for plan, cin, cout, prec in window]
            for (plan, cin, cout, prec), runner, stats in zip(window, runners, time_together(runners)):
                if meter is not None:
                    e_mj, e_src = measure_energy_mj(meter, runner.fn), "measured"
                else:
                    e_mj, e_src = layer_energy_mj(energy, plan.layer, cin, cout, prec), "modeled"
                table.add(TableEntry(
                    key=plan.key, in_channels=cin, out_channels=cout, precision=prec,
                    latency_ms=max(1e-5, stats.uncontended_ms - table.overhead_ms),
                    iqr_ms=stats.iqr_ms, raw_median_ms=stats.uncontended_ms, repeats=stats.repeats,
                    blocks=len(runner.fns), remeasured=stats.remeasured,
                    latency_source="measured", energy_mj=e_mj, energy_source=e_src))
            del runners
            done += len(window)
            bar.update(len(window))
            if out is not None:
                table.save(out)
    finally:
        bar.close()
        if out is not None and done:
            table.save(out)
    return done


def entry_activation_bytes(layer: LayerInfo, cin: int, cout: int) -> int:
    """fp32 bytes of one entry's input and output feature maps: what a session of it holds."""
    return 4 * (cin * layer.in_hw[0] * layer.in_hw[1] + cout * layer.out_hw[0] * layer.out_hw[1])


def timing_windows(todo: Sequence[tuple[GridPlan, int, int, str]], size: int = WINDOW_ENTRIES,
                   max_bytes: int = WINDOW_BYTES) -> list[list[tuple[GridPlan, int, int, str]]]:
    """``todo`` cut into consecutive windows of at most ``size`` entries timed together
    (:func:`~latency_models.timing.time_together`), fewer where their sessions' feature maps
    would pass ``max_bytes`` (a 224x224 kernel-sample layer holds tens of MB a session)."""
    windows: list[list[tuple[GridPlan, int, int, str]]] = []
    held = 0
    for item in todo:
        plan, cin, cout, _ = item
        need = SESSIONS * entry_activation_bytes(plan.layer, cin, cout)
        if not windows or len(windows[-1]) >= size or (windows[-1] and held + need > max_bytes):
            windows.append([])
            held = 0
        windows[-1].append(item)
        held += need
    return windows


def regress_layers(table: LatencyTable, info: ModelInfo, profile: HardwareProfile,
                   regressor: KernelRegressor, *, points: int = DEFAULT_POINTS,
                   energy: HorowitzEnergyModel | None = None) -> int:
    """Fill every missing (key, precision, in, out) of ``info``'s grid with ``regressor``'s
    guess (``latency_source="regressed"``), timing nothing; returns how many.

    Why: a net the table never profiled costs minutes of layer timing (MobileNetV2-1.0 at 224:
    ~6 min); its kernels regressed from other nets' and a kernel sample's entries, plus its
    whole-model remainder measured at a few dozen points (what the regression gets wrong on
    this net, bias included), price it in the time of the remainder alone (BENCHMARKS.md,
    issue 14, "unseen nets")."""
    energy = energy or HorowitzEnergyModel()
    done = 0
    for plan, cin, cout, prec in missing_points(table, plan_grid(info, profile.channel_step, points),
                                                profile.precisions):
        guess = regressor.predict(plan.key, prec, cin, cout)
        if guess is None:
            raise TableError(f"kernels-from table has no measured {prec} kernel to regress "
                             f"{plan.key!r} from: merge in a kernel sample (`hwcompress lut "
                             f"kernels`) or a table measured at {prec}")
        table.add(TableEntry(
            key=plan.key, in_channels=cin, out_channels=cout, precision=prec,
            latency_ms=max(1e-5, guess[0]), latency_source="regressed",
            energy_mj=layer_energy_mj(energy, plan.layer, cin, cout, prec), energy_source="modeled"))
        done += 1
    return done


def table_stats(table: LatencyTable) -> dict[str, Any]:
    rel = [e.iqr_ms / e.raw_median_ms for e in table.entries.values() if e.raw_median_ms > 0]
    return {"entries": len(table.entries),
            "median_rel_iqr": float(np.median(rel)) if rel else math.nan,
            "remeasured": sum(e.remeasured for e in table.entries.values())}

"""LUT fidelity (``hwcompress lut validate``): predicted vs really measured whole-model latency.

Samples random policies, asks the caller to measure each one as deployed (the engine builds
the model: :func:`automl.profiling.validate_model`), and compares with the table's prediction:
share within ±5%/±10%, MAPE, Spearman, per precision mode, and a scatter plot.

**The noise floor.** Every policy is measured ``passes`` times (default 2), each time built and
timed afresh, the passes interleaved (pass 1 in order, pass 2 in reverse), so a busy stretch of
the machine hits different policies in different passes. The share of policies whose
measurements agree within ±5%/±10% is what measurement itself can do: read prediction fidelity
against that ceiling. The figure compared with the prediction is the fastest pass (each pass is
already the fastest ~20 ms chunk of ≥2 s and ≥1500 calls, at most 6 s:
:func:`latency_models.sampling.sample_model_times`).

**Timed beside the reference** (``relative``, off by default). A shared VM's speed can drift over
minutes (the AMD host of 2026-12-03: a stretch of MobileNetV2-1.0 policies at 224 ran 10-37%
slower in one pass than in the other), and a table is built minutes or days before it is
validated. Relative validation times each policy interleaved with the unpruned fp32 model (the
way a search checks its answer against its budget) and scales it by the reference's latency when
the table measured it (:meth:`LatencyTable.reference_ms`) over the reference's median reading of
the ±``REFERENCE_WINDOW`` measurements around it (its drift, not the noise of one reading). On the
steady Intel host of 2026-12-05 it did not pay: alone, two passes agreed within ±5% for 94% of
MobileNetV2-1.0 policies; scaled by each reading, 84%; by the window, 92% (BENCHMARKS.md). The
unscaled figures are reported beside (``absolute``, ``repeatability_raw``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from automl.core import FLOAT_BITS, LayerPolicy, ModelInfo, Policy

from .predictor import Predictor, policy_features, profile_of
from .profile import HardwareProfile, get_profile, PROFILES
from .table import LatencyTable

if TYPE_CHECKING:
    from .unseen import UnseenModel

MODES = ("fp32", "int8", "mixed")
REFERENCE_WINDOW = 2   # measurements either side whose reference readings set a scale
MAX_PASSES = 10
MAX_SAMPLES = 2000   # policies per validation: each is built and timed (~2 s a pass)


def sample_policy(info: ModelInfo, rng: np.random.Generator, mode: str | None = None,
                  min_keep: float = 0.2) -> tuple[Policy, str]:
    """A random policy: each coupled group's keep ratio uniform in [min_keep, 1]; precision all
    float, all 8-bit, or mixed (each layer 8-bit or float at random), one third each."""
    mode = mode or MODES[int(rng.integers(len(MODES)))]
    layers = {}
    for layer in info.layers:
        keep = float(rng.uniform(min_keep, 1.0)) if layer.prunable else 1.0
        if mode == "fp32":
            bits = FLOAT_BITS
        elif mode == "int8":
            bits = 8
        else:
            bits = 8 if rng.random() < 0.5 else FLOAT_BITS
        layers[layer.name] = LayerPolicy(keep, bits, bits)
    return Policy(layers), mode


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(v: Sequence[float]) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        order = a.argsort(kind="mergesort")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=float)
        for val in np.unique(a):  # average ties
            idx = np.where(a == val)[0]
            if len(idx) > 1:
                r[idx] = r[idx].mean()
        return r
    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def fidelity_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = (p - m) / m
    return {"n": int(len(m)), "mape": float(np.mean(np.abs(rel))),
            "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
            "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
            "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "spearman": spearman(p, m), "mean_signed_error": float(np.mean(rel)),
            "max_abs_error": float(np.max(np.abs(rel))) if len(rel) else math.nan}


def repeatability(passes: Sequence[Sequence[float]]) -> dict[str, float]:
    """How well ≥2 measurements of the same policies agree: per policy the spread
    (max − min) / min; the share within ±5% / ±10% and the median spread."""
    if len(passes) < 2 or not passes[0]:
        return {}
    arr = np.asarray(passes, float)                 # [passes, policies]
    spread = (arr.max(0) - arr.min(0)) / arr.min(0)
    return {"passes": int(arr.shape[0]), "within_5pct": float(np.mean(spread <= 0.05)),
            "within_10pct": float(np.mean(spread <= 0.10)),
            "median_spread": float(np.median(spread)), "max_spread": float(spread.max())}


def metrics_by_mode(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """:func:`fidelity_metrics` per precision mode of ``samples`` (dicts with ``mode``,
    ``predicted_ms``, ``measured_ms``: a report's samples)."""
    return {m: fidelity_metrics([x["predicted_ms"] for x in samples if x["mode"] == m],
                                [x["measured_ms"] for x in samples if x["mode"] == m])
            for m in MODES if any(x["mode"] == m for x in samples)}


@dataclass(frozen=True)
class PolicyTiming:
    """One measurement of a compressed model as deployed, and of the unpruned fp32 model when
    it was timed interleaved with it (``reference_ms``; None when it was not)."""

    ms: float
    iqr_ms: float
    reference_ms: float | None = None


@dataclass
class Sample:
    mode: str
    predicted_ms: float
    measured_ms: float
    measured_iqr_ms: float
    predicted_energy_mj: float
    act_ratio: float
    int8_fraction: float
    boundary_ratio: float
    policy: dict
    measured_ms_passes: list[float]
    measured_ms_raw_passes: list[float]
    reference_ms_passes: list[float | None]
    reference_ms_smoothed_passes: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def table_profile(table: LatencyTable, threads: int | None = None) -> HardwareProfile:
    """The profile to validate on: this machine, refused if the table was made elsewhere."""
    prof = profile_of(table)
    if prof.name in PROFILES:
        here = get_profile(prof.name, threads if threads is not None else table.metadata.threads)
        table.check_compatible(here.compat_request())
        prof = prof.with_threads(here.threads)
    return prof


def scaled_ms(timing: PolicyTiming, reference_ms_table: float | None,
              reference_ms_now: float | None = None) -> float:
    """``timing.ms`` at the speed the table was built at: × the reference's latency then / now
    (now: ``reference_ms_now`` when given, a smoothed reading, else the timing's own), unscaled
    when either is unknown."""
    now = reference_ms_now if reference_ms_now is not None else timing.reference_ms
    if reference_ms_table is None or not now or not timing.reference_ms:
        return timing.ms
    return timing.ms * reference_ms_table / now


def smoothed_references(readings: Sequence[float | None], window: int = REFERENCE_WINDOW
                        ) -> list[float | None]:
    """Per reading (in the order they were taken), the median of the readings ±``window``
    around it: the machine's speed over ~20 s, not one reading's noise."""
    out: list[float | None] = []
    for t, r in enumerate(readings):
        near = [x for x in readings[max(0, t - window):t + window + 1] if x]
        out.append(float(np.median(near)) if r and near else None)
    return out


def validate_predictions(table: LatencyTable, info: ModelInfo, profile: HardwareProfile,
                         measure: Callable[[Sequence[Policy]], list[PolicyTiming]],
                         samples: int = 100, seed: int = 0, *, json_out: str | Path | None = None,
                         png_out: str | Path | None = None, progress: bool = True,
                         passes: int = 2, unseen: "UnseenModel | None" = None,
                         window: int = 1) -> dict[str, Any]:
    """Fidelity of ``table`` on ``samples`` random policies of ``info``: each predicted, then
    ``measure(policies)`` → one :class:`PolicyTiming` each on the device, ``window`` policies at
    a time (timed together, interleaved), ``passes`` times (the noise floor, see the module
    docstring; the second pass in reverse order); a timing with a ``reference_ms`` is scaled to the
    table's speed when the table has the reference's figure. The caller builds the models
    (:func:`automl.profiling.validate_model` builds them exactly as deployed). ``unseen``: the
    fallback for shapes and remainders the table lacks (a net it never profiled)."""
    from tqdm.auto import tqdm

    model_name = info.model_name
    pred = Predictor(table, profile, warn=unseen is None, unseen=unseen)
    if not 1 <= int(samples) <= MAX_SAMPLES:
        raise ValueError(f"samples: {samples} is outside 1..{MAX_SAMPLES}")
    rng = np.random.default_rng(seed)
    policies = [sample_policy(info, rng) for _ in range(int(samples))]

    if not 1 <= int(passes) <= MAX_PASSES:
        raise ValueError(f"passes: {passes} is outside 1..{MAX_PASSES}")
    passes = int(passes)
    measured: list[list[PolicyTiming]] = [[PolicyTiming(math.nan, math.nan)] * len(policies)
                                          for _ in range(passes)]
    reference_ms_table = table.reference_ms(model_name, info.input_shape)
    order = [list(range(len(policies))) if p % 2 == 0 else list(reversed(range(len(policies))))
             for p in range(passes)]
    t_measure = 0.0
    taken: list[tuple[int, int]] = []        # (pass, policy) in the order measured
    bar = tqdm(total=passes * len(policies), desc=f"validate {model_name} ({passes} passes)",
               disable=not progress)
    window = max(1, int(window))
    for p, idx in enumerate(order):
        for start in range(0, len(idx), window):
            chunk = idx[start:start + window]
            t0 = time.perf_counter()
            timings = measure([policies[i][0] for i in chunk])
            t_measure += time.perf_counter() - t0
            for i, timing in zip(chunk, timings, strict=True):
                measured[p][i] = timing
                taken.append((p, i))
            bar.update(len(chunk))
    bar.close()
    smooth = smoothed_references([measured[p][i].reference_ms for p, i in taken])
    reference_now = {pi: r for pi, r in zip(taken, smooth)}
    results: list[Sample] = []
    for i, (policy, mode) in enumerate(policies):
        lat, en = pred.predict(info, policy)
        runs = [measured[p][i] for p in range(passes)]
        scaled = [scaled_ms(t, reference_ms_table, reference_now[(p, i)]) for p, t in enumerate(runs)]
        best = min(range(passes), key=scaled.__getitem__)
        act, q, b = policy_features(info, policy, profile)
        results.append(Sample(mode, lat, scaled[best], runs[best].iqr_ms, en, act, q, b,
                              policy.to_dict(), scaled, [t.ms for t in runs],
                              [t.reference_ms for t in runs],
                              [reference_now[(p, i)] for p in range(passes)]))

    # prediction time: warm (the per-layer cache filled by a search's first policies)
    fresh = Predictor(table, profile, warn=False, unseen=unseen)
    t0 = time.perf_counter()
    for policy, _ in policies:
        fresh.predict(info, policy)
    cold_us = (time.perf_counter() - t0) / len(policies) * 1e6
    reps = max(1, 2000 // len(policies))
    t0 = time.perf_counter()
    for _ in range(reps):
        for policy, _ in policies:
            fresh.predict(info, policy)
    warm_us = (time.perf_counter() - t0) / (reps * len(policies)) * 1e6

    pm = [r.predicted_ms for r in results]
    mm = [r.measured_ms for r in results]
    relative = reference_ms_table is not None and all(
        t.reference_ms for row in measured for t in row)
    report: dict[str, Any] = {
        "model": model_name, "input_shape": list(info.input_shape), "device": profile.name,
        "threads": profile.threads, "batch": profile.batch, "hardware": table.metadata.hardware,
        "runtime": f"{table.metadata.runtime} {table.metadata.runtime_version}", "seed": seed,
        "unseen": unseen is not None,
        **fidelity_metrics(pm, mm),
        "predict_us_per_policy": warm_us, "predict_us_per_policy_cold": cold_us,
        "measure_ms_per_policy": t_measure / (len(results) * passes) * 1e3,
        "relative_to_reference": relative,
        "reference_ms_table": reference_ms_table,
        "reference_window": REFERENCE_WINDOW,
        "repeatability": repeatability([[r.measured_ms_passes[p] for r in results]
                                        for p in range(passes)]),
        "repeatability_raw": repeatability([[r.measured_ms_raw_passes[p] for r in results]
                                            for p in range(passes)]),
        "absolute": fidelity_metrics(pm, [min(r.measured_ms_raw_passes) for r in results]),
        "by_mode": metrics_by_mode([r.to_dict() for r in results]),
        "samples": [r.to_dict() for r in results],
    }
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report, indent=1))
    if png_out is not None:
        from .plots import scatter_png
        scatter_png(pm, mm, png_out, f"{model_name} {list(info.input_shape)} on {profile.name}, "
                    f"{profile.threads} thread(s): {report['within_10pct']:.0%} within ±10%, "
                    f"Spearman {report['spearman']:.3f}", [r.mode for r in results])
        report["png"] = str(png_out)
    return report

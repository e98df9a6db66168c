"""Timing a layer or a model as a runtime executes it: the module of one layer, ready-to-time
runners (ONNX Runtime sessions, torch on CPU or CUDA) and the robust timing loop.

Imports nothing of ours beyond ``automl.core`` and :mod:`latency_models.onnx_runtime`: the device
backends (:mod:`latency_models.devices`) build their runners from these pieces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from automl.core import LayerInfo

from .onnx_runtime import TimingStats, make_session


def layer_input_shape(layer: LayerInfo, cin: int) -> tuple[int, ...]:
    return (cin,) if layer.op == "linear" else (cin, *layer.in_hw)


def build_layer_module(layer: LayerInfo, cin: int, cout: int) -> nn.Module:
    """The layer alone (+ BN + activation when the model has them right after it)."""
    mods: list[nn.Module] = []
    if layer.op == "linear":
        mods.append(nn.Linear(cin, cout))
    else:
        groups = cout if layer.op == "depthwise" else 1
        cin = cout if layer.op == "depthwise" else cin
        mods.append(nn.Conv2d(cin, cout, layer.kernel, layer.stride, layer.padding, groups=groups,
                              bias=not layer.has_bn))
        if layer.has_bn:
            bn = nn.BatchNorm2d(cout)
            with torch.no_grad():  # non-trivial statistics, so nothing folds to an identity
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
            mods.append(bn)
    if layer.activation == "relu":
        mods.append(nn.ReLU())
    elif layer.activation == "relu6":
        mods.append(nn.ReLU6())
    return nn.Sequential(*mods).eval()


# ---- timing backends ----------------------------------------------------------------------
SESSIONS = 3
LAYER_BUDGET_S = 0.5    # per table entry (all its sessions together)
MODEL_BUDGET_S = 2.0    # per whole-model measurement (remainders, ``lut validate``)
PERCENTILE = 0     # of the chunk medians: the fastest chunk
MIN_CHUNK_CALLS = 5
CHUNK_S = 0.02


def _budget_scale() -> float:
    """``HWCOMPRESS_TIMING_SCALE`` shortens (<1) or lengthens every timing budget; the test suite
    runs at 0.25 (its numbers are checked for sense, not for the noise floor)."""
    import os
    try:
        return max(0.01, float(os.environ.get("HWCOMPRESS_TIMING_SCALE", "1")))
    except ValueError:
        raise ValueError(f"HWCOMPRESS_TIMING_SCALE={os.environ['HWCOMPRESS_TIMING_SCALE']!r}: "
                         "expected a number such as 0.25") from None


def sample_time(fns: Sequence[Callable[[], object]], budget_s: float, chunk_s: float = CHUNK_S,
                min_calls: int = 30) -> TimingStats:
    """The latency of a model or layer when the machine is not slowed by others.

    Measured here (issue 14): this VM runs the same int8 ResNet-20 at 0.25 ms in some stretches
    of seconds and 0.35–0.42 ms in others, and within a stretch some ORT sessions are fast and
    some slow. The earlier protocol (fastest of 2 blocks × 3 sessions, ~0.4 s) or a percentile of
    all calls over 2 s landed in either state, so two measurements of one policy agreed within
    ±10% for 57% of policies. Here: warm every session up, then call them in turn in chunks of
    ~``chunk_s`` (≥5 calls) until ``budget_s`` has passed (and ≥ ``min_calls`` calls); each
    chunk's median is one reading, and the figure (``uncontended_ms``) is the lowest reading: the
    fast state, found if it occurs in any session at any time of the budget (a chunk's median
    needs most of its calls fast, so one lucky call does not count). A 10th percentile of the
    readings still missed the fast state in 2 of 6 int8 policies. Median, IQR and the rest are
    over all calls."""
    budget_s *= _budget_scale()
    one = []
    for fn in fns:
        for _ in range(3):
            fn()
        t0 = time.perf_counter()
        fn()
        one.append(max(1e-6, time.perf_counter() - t0))
    per_chunk = max(MIN_CHUNK_CALLS, int(chunk_s / (sum(one) / len(one))))
    samples: list[float] = []
    readings: list[float] = []
    t_end = time.perf_counter() + budget_s
    i = 0
    while time.perf_counter() < t_end or len(samples) < min_calls:
        fn = fns[i % len(fns)]
        i += 1
        chunk = []
        for _ in range(per_chunk):
            t0 = time.perf_counter()
            fn()
            chunk.append((time.perf_counter() - t0) * 1e3)
        samples += chunk
        readings.append(float(np.median(chunk)))
    arr = np.asarray(samples)
    q1, q3 = np.percentile(arr, [25, 75])
    return TimingStats(float(np.median(arr)), float(q3 - q1), float(arr.mean()), float(arr.min()),
                       len(samples), uncontended_ms=float(np.percentile(readings, PERCENTILE)))


@dataclass
class Runner:
    """Ready-to-time callables: one per runtime session of the same model.

    ORT sessions of one model are not all equally fast (a session keeps its buffer placement),
    so calls rotate over ``SESSIONS`` sessions and the statistic is taken over all of them."""

    fns: list[Callable[[], object]]
    budget_s: float = LAYER_BUDGET_S

    @property
    def fn(self) -> Callable[[], object]:
        return self.fns[0]

    def time(self) -> TimingStats:
        """``uncontended_ms`` is the figure to use (see :func:`sample_time`)."""
        return sample_time(self.fns, self.budget_s)


def ort_runner(onnx_bytes: bytes, input_shape: Sequence[int], threads: int, batch: int = 1,
               sessions: int = SESSIONS, budget_s: float = LAYER_BUDGET_S) -> Runner:
    rng = np.random.default_rng(0)
    fns = []
    for _ in range(sessions):
        sess = make_session(onnx_bytes, threads)
        inp = sess.get_inputs()[0]
        x = (rng.integers(0, 256, (batch, *input_shape), dtype=np.uint8) if inp.type == "tensor(uint8)"
             else rng.standard_normal((batch, *input_shape)).astype(np.float32))
        feed = {inp.name: x}
        fns.append(lambda sess=sess, feed=feed: sess.run(None, feed))
    return Runner(fns, budget_s)


def torch_runner(module: nn.Module, input_shape: Sequence[int], threads: int, batch: int = 1,
                 device: str = "cpu", half: bool = False, budget_s: float = LAYER_BUDGET_S) -> Runner:
    torch.set_num_threads(threads)
    module = module.eval().to(device)
    x = torch.randn(batch, *input_shape, device=device)
    if half:
        module, x = module.half(), x.half()

    def fn():
        with torch.inference_mode():
            module(x)
    if device == "cuda":  # pragma: no cover - no GPU on the CI machine
        return CudaRunner([fn], budget_s)
    return Runner([fn], budget_s)


class CudaRunner(Runner):  # pragma: no cover - no GPU on the CI machine
    """Times GPU work with CUDA events (device time, no host-side launch jitter)."""

    def time(self, warmup: int = 20, repeats: int = 100) -> TimingStats:
        import statistics
        fn = self.fns[0]
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        samples = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        q = statistics.quantiles(samples, n=4)
        return TimingStats(statistics.median(samples), q[2] - q[0], statistics.fmean(samples),
                           min(samples), repeats, uncontended_ms=q[0])


def calib_for(input_shape: Sequence[int], n: int = 8) -> list[np.ndarray]:
    return [np.random.default_rng(1).standard_normal((n, *input_shape)).astype(np.float32)]

"""Timing a layer or a model as a runtime executes it: the module of one layer, ready-to-time
runners (ONNX Runtime sessions, torch on CPU or CUDA); the timing protocol itself is
:mod:`latency_models.sampling`.

Imports nothing of ours beyond ``automl.core`` and :mod:`latency_models.onnx_runtime`: the device
backends (:mod:`latency_models.devices`) build their runners from these pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from automl.core import LayerInfo

from .onnx_runtime import session_callables
# MODEL_BUDGET_S and sample_time are re-exported: callers have always found them here
from .sampling import (LAYER_BUDGET_S, MODEL_BUDGET_S, SESSIONS, TimingStats,  # noqa: F401
                       sample_model_times, sample_time, sample_times)


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
@dataclass
class Runner:
    """Ready-to-time callables: one per runtime session of the same model.

    ORT sessions of one model are not all equally fast (a session keeps its buffer placement),
    so calls rotate over ``SESSIONS`` sessions and the statistic is taken over all of them.
    ``whole_model``: timed by the whole-model rule (:func:`~latency_models.sampling.sample_model_times`)."""

    fns: list[Callable[[], object]]
    budget_s: float = LAYER_BUDGET_S
    whole_model: bool = False

    @property
    def fn(self) -> Callable[[], object]:
        return self.fns[0]

    def time(self) -> TimingStats:
        """``uncontended_ms`` is the figure to use (see :func:`sample_time`)."""
        if self.whole_model:
            return sample_model_times([self.fns], self.budget_s)[0]
        return sample_time(self.fns, self.budget_s)


def time_together(runners: Sequence[Runner]) -> list[TimingStats]:
    """Time ``runners`` (a window of table entries, or of whole models) interleaved chunk by
    chunk over their budgets summed, each read as it would be alone
    (:func:`~latency_models.sampling.sample_times`).

    Why: this VM has stretches of a second or two in which a kernel runs 2-3.5x slower; an entry
    timed alone in its 0.5 s can fall wholly inside one, and ~6% of a MobileNetV2-0.5 @32 table's
    entries were off by 30-250% between two builds (the rest within 5%) -- enough to
    miss-predict its policies by 4% (BENCHMARKS.md, "Slow stretches in a table build"). Spread
    over the whole window, an entry's fastest chunks come from outside the stretch. A runner
    with its own ``time`` (CUDA) is timed alone. Whole models (``whole_model``, all of them) are
    read by the whole-model rule, each still getting its call count (the remainder points and
    ``lut validate``'s policies: a 32x32 policy's 2 s reading fell inside such a stretch for 3 of
    100 ResNet-20 policies)."""
    plain = all(type(r).time is Runner.time for r in runners)
    kinds = {r.whole_model for r in runners}
    if not runners or not plain or len(kinds) > 1:
        return [r.time() for r in runners]
    budget_s = sum(r.budget_s for r in runners)
    if kinds == {True}:
        return sample_model_times([r.fns for r in runners], budget_s)
    return sample_times([r.fns for r in runners], budget_s)


def ort_runner(onnx_bytes: bytes, input_shape: Sequence[int], threads: int, batch: int = 1,
               sessions: int = SESSIONS, budget_s: float = LAYER_BUDGET_S,
               whole_model: bool = False) -> Runner:
    return Runner(session_callables(onnx_bytes, input_shape, threads, batch, sessions), budget_s,
                  whole_model)


def torch_runner(module: nn.Module, input_shape: Sequence[int], threads: int, batch: int = 1,
                 device: str = "cpu", half: bool = False, budget_s: float = LAYER_BUDGET_S,
                 whole_model: bool = False) -> Runner:
    torch.set_num_threads(threads)
    module = module.eval().to(device)
    x = torch.randn(batch, *input_shape, device=device)
    if half:
        module, x = module.half(), x.half()

    def fn():
        with torch.inference_mode():
            module(x)
    if device == "cuda":  # pragma: no cover - no GPU on the CI machine
        return CudaRunner([fn], budget_s, whole_model)
    return Runner([fn], budget_s, whole_model)


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

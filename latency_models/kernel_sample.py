"""A device's kernel sample: layers drawn independently of any model, so a table can predict
nets whose layer types it never profiled (nn-Meter's kernel-level profiling).

Why: leave-one-family-out over the zoo (BENCHMARKS.md, issue 14) put 0–32% of an unseen family's
policies within ±10%, because the tables of the other families lack its kernel types
(ResNet-18's 7×7 stem and 224×224 stride-2 convs, MobileNet's 5×5-free depthwise stacks at every
resolution). A sample that covers the space of kernels a CPU net is made of — conv 1/3/5/7,
depthwise 3/5/7, stride 1/2, resolutions 7…224, channels 8…1024 — gives
:class:`latency_models.unseen.KernelRegressor` rows of every type at every scale.

Pure arithmetic (no torch, no runtime): :func:`sample_kernels` draws the layers, and
:func:`kernel_plans` turns each into a one-point grid the profiler measures at every precision.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from automl.core import LayerInfo, ModelInfo

from .grid import GridPlan, layer_at
from .table import layer_key

KERNEL_SAMPLE_MODEL = "kernel-sample"
HW_LADDER = (224, 112, 56, 32, 28, 16, 14, 8, 7)
CONV_KERNELS = (1, 1, 3, 3, 5, 7)          # 1×1 and 3×3 dominate real nets
DEPTHWISE_KERNELS = (3, 3, 5, 7)
ACTIVATIONS = ("relu", "relu6", None)
MAX_KERNEL_MACS = 150e6   # the largest zoo layer (ResNet-18 at 224: 116 M); bounds a sample's time
MAX_SAMPLES = 5000
OP_WEIGHTS = {"conv": 0.55, "depthwise": 0.3, "linear": 0.15}


def _channels(rng: np.random.Generator, lo: int = 8, hi: int = 1024) -> int:
    """Log-uniform, a multiple of 8 (what channel steps and real nets use)."""
    c = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return max(lo, int(round(c / 8)) * 8)


def _draw(rng: np.random.Generator, index: int, max_hw: int) -> LayerInfo:
    op = str(rng.choice(list(OP_WEIGHTS), p=list(OP_WEIGHTS.values())))
    name = f"k{index}"
    if op == "linear":
        cin, cout = _channels(rng, 16, 4096), _channels(rng, 8, 1024)
        return layer_at(LayerInfo(name, "linear", cin, cout, prunable=False), cin, cout)
    hws = [h for h in HW_LADDER if h <= max_hw] or [max_hw]
    hw = int(rng.choice(hws))
    k = int(rng.choice(CONV_KERNELS if op == "conv" else DEPTHWISE_KERNELS))
    stride = int(rng.choice((1, 1, 2))) if hw > 7 else 1
    cout = _channels(rng)
    cin = cout if op == "depthwise" else (_channels(rng, 1, 16) if rng.random() < 0.05 else _channels(rng))
    out_hw = ((hw + 2 * (k // 2) - k) // stride + 1,) * 2
    act = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
    base = LayerInfo(name, op, cin, cout, kernel=k, stride=stride, padding=k // 2,
                     groups=cout if op == "depthwise" else 1, in_hw=(hw, hw), out_hw=out_hw,
                     has_bn=True, activation=act, prunable=False)
    return layer_at(base, cin, cout)


def sample_kernels(samples: int, max_hw: int = 224, seed: int = 0) -> ModelInfo:
    """``samples`` kernels of at most ``MAX_KERNEL_MACS`` at resolutions ≤ ``max_hw``, as a
    pseudo-model (its layers unconnected: only their shapes are timed)."""
    if not 1 <= int(samples) <= MAX_SAMPLES:
        raise ValueError(f"samples: {samples} is outside 1..{MAX_SAMPLES}")
    if not 7 <= int(max_hw) <= 1024:
        raise ValueError(f"max_hw: {max_hw} is outside 7..1024")
    rng = np.random.default_rng(seed)
    layers: list[LayerInfo] = []
    while len(layers) < int(samples):
        layer = _draw(rng, len(layers), int(max_hw))
        if layer.macs <= MAX_KERNEL_MACS:
            layers.append(layer)
    return ModelInfo(KERNEL_SAMPLE_MODEL, (3, int(max_hw), int(max_hw)), 0, tuple(layers),
                     total_macs=sum(lay.macs for lay in layers),
                     total_params=sum(lay.params for lay in layers))


def kernel_plans(layers: Sequence[LayerInfo]) -> list[GridPlan]:
    """One single-point grid per distinct sampled kernel (its own channels), keyed like a model's
    layer; a kernel drawn twice (same key and channels) is measured once."""
    plans: dict[tuple[str, int, int], GridPlan] = {}
    for layer in layers:
        key = layer_key(layer)
        plans.setdefault((key, layer.in_channels, layer.out_channels),
                         GridPlan(key, layer, [layer.in_channels], [layer.out_channels]))
    return list(plans.values())

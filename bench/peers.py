"""What a user would pick instead of hwcompress, run for real: Torch-Pruning's magnitude pruner
(global or uniform ratio) and ONNX Runtime's own static int8 quantization (``quantize_static``
with its defaults). Shared by bench/pareto.py and bench/int8_speed.py so both run the same peer."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from latency_models.onnx_runtime import _ArrayReader, _quiet_quantizer


def ort_quantize_static(fp32: bytes, calib: np.ndarray) -> bytes:
    """ORT's quantize_static with its default op types (QDQ, per-channel int8 weights, uint8
    activations, MinMax calibration on ``calib``): what its documentation tells a user to run."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet_quantizer():
        src, pre, dst = (os.path.join(tmp, n) for n in ("a.onnx", "b.onnx", "c.onnx"))
        Path(src).write_bytes(fp32)
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(pre, dst, _ArrayReader([calib[i:i + 1] for i in range(len(calib))]),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return Path(dst).read_bytes()


def tp_prune(model: nn.Module, input_shape: Sequence[int], ratio: float, global_pruning: bool,
             round_to: int = 8) -> nn.Module:
    """A pruned copy by Torch-Pruning's MagnitudePruner (L2 group magnitude): one ratio for every
    layer (uniform) or one threshold across the network (global), the classifier kept whole."""
    m = copy.deepcopy(model).eval()
    head = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1:]
    pruner = tp.pruner.MagnitudePruner(
        m, torch.zeros(1, *input_shape), importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, global_pruning=global_pruning, ignored_layers=head,
        round_to=round_to, max_pruning_ratio=0.9)
    pruner.step()
    return m


def bisect_to_latency(measure: Callable[[float], float], target: float, hi: float = 0.9,
                      steps: int = 7) -> tuple[float, float]:
    """The smallest pruning ratio whose measured latency ratio is ≤ ``target`` (NetAdapt-style
    peers are tuned to the same *measured* budget as we are). ``measure(ratio)`` returns the
    latency ratio to the uncompressed model. Returns (ratio, its measured latency ratio); raises
    when even ``hi`` misses the target."""
    at_hi = measure(hi)
    if at_hi > target:
        raise ValueError(f"unreachable: pruning ratio {hi} measures {at_hi:.3f}x > {target}x")
    lo, best = 0.0, (hi, at_hi)
    for _ in range(steps):
        mid = (lo + best[0]) / 2
        got = measure(mid)
        if got <= target:
            best = (mid, got)
        else:
            lo = mid
    return best

"""Applying a :class:`~automl.core.Policy` to a model: physical channel pruning, BatchNorm
re-estimation and per-layer fake quantization; then the model's computed costs and its
deployable ONNX export.

The original model is never modified: every function that changes a model works on a copy.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import onnx
import torch
import torch_pruning as tp
from torch import nn

from latency_models.onnx_runtime import export_onnx, int8_weight_qmax, quantize_int8_qdq

from .core import FLOAT_BITS, ModelInfo, Policy, kept_channels
from .importance import PRUNE_OUT, ChannelScores
from .quant import add_fake_quant, finish_calibration, float_deployable_copy
from .space import layer_modules, trace_model

def prune_channels(model: nn.Module, info: ModelInfo, policy: Policy, channel_step: int = 1,
                   scores: ChannelScores | None = None) -> int:
    """Remove channels in place, group by group, keeping those with the largest L2 magnitude
    (summed over every layer of the coupled group, as torch-pruning's group importance does),
    or the highest ``scores`` where given (the importance the allocation priced them by).
    Returns how many groups were pruned."""
    pruned = 0
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=torch.zeros(1, *info.input_shape))
    modules = dict(model.named_modules())
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    for leader, _members in info.prune_groups.items():
        layer = info.layer(leader)
        channels = layer.out_channels
        keep = kept_channels(channels, policy[leader].keep_ratio, channel_step)
        if keep >= channels:
            continue
        fn = PRUNE_OUT[layer.op]
        if scores is not None and leader in scores.scores:
            drop = scores.order(leader)[:channels - keep]
        else:
            magnitude = importance(graph.get_pruning_group(modules[leader], fn, list(range(channels))))
            drop = torch.argsort(magnitude)[:channels - keep].tolist()
        group = graph.get_pruning_group(modules[leader], fn, drop)
        group.prune()
        pruned += 1
    return pruned


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Re-estimate BN running statistics after pruning (EagleEye's adaptive BN): pruning shifts
    every downstream activation distribution, and stale statistics make accuracy-without-
    fine-tune a poor signal for the search."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or not batches:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    for xb in batches:
        model(xb)
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.eval()


@torch.no_grad()
def quantize(model: nn.Module, policy: Policy, batches: Sequence[torch.Tensor] | None) -> nn.Module:
    """Attach fake quantization per the policy and calibrate activation ranges in place; the
    weight grid is the one the deployed graph's quantizer uses on this CPU (7-bit where ORT's
    int8 GEMM saturates), so fine-tuning sees the weights that are deployed."""
    any_act = False
    deploy_qmax = int8_weight_qmax()
    for name, module in layer_modules(model).items():
        lp = policy[name]
        add_fake_quant(module, lp.w_bits, lp.a_bits, deploy_qmax)
        any_act |= lp.a_bits != FLOAT_BITS
    if any_act:
        model.eval()
        for xb in batches or []:
            model(xb)
        finish_calibration(model)
    return model


def apply_policy(model: nn.Module, policy: Policy, info: ModelInfo,
                 calib_batches: Sequence[torch.Tensor] | None = None, channel_step: int = 1,
                 recalibrate_bn: bool = True, scores: ChannelScores | None = None) -> nn.Module:
    """A new model with ``policy`` applied; ``model`` is left untouched.

    ``calib_batches`` (a few training batches) re-estimate BN statistics when channels were
    pruned (an unpruned model keeps its statistics, so the identity policy is exact) and
    calibrate activation ranges; without them activations stay float.
    """
    policy = policy.validate(info)
    compressed = copy.deepcopy(model).eval()
    pruned = prune_channels(compressed, info, policy, channel_step, scores)
    if recalibrate_bn and calib_batches and pruned:
        recalibrate_batchnorm(compressed, calib_batches)
    quantize(compressed, policy, calib_batches)
    return compressed.eval()


@dataclass
class ModelCost:
    """What a model costs, computed (not estimated) from its actual layers."""

    macs: int
    params: int
    size_mb: float

    def to_dict(self) -> dict:
        return asdict(self)


def model_cost(model: nn.Module, input_shape: tuple[int, int, int], policy: Policy | None = None) -> ModelCost:
    """MACs and parameters of the (pruned) model; size in MB (10^6 bytes) counting each conv /
    linear weight at its policy bit-width and everything else (biases, BN) at 32 bits."""
    info = trace_model(model, input_shape)
    policy = policy or Policy()
    weight_bits: dict[int, int] = {}
    for name, module in layer_modules(model).items():
        w = module.weight  # the parametrized weight if quantized: same shape
        for p in _weight_params(module):
            weight_bits[id(p)] = policy[name].w_bits
        del w
    size_bits = 0
    for p in model.parameters():
        size_bits += p.numel() * weight_bits.get(id(p), FLOAT_BITS)
    return ModelCost(macs=info.total_macs, params=info.total_params, size_mb=size_bits / 8 / 1e6)


def _weight_params(module: nn.Module) -> list[nn.Parameter]:
    """The stored weight tensor(s) of a layer: the plain weight, or the parametrized original."""
    if hasattr(module, "parametrizations") and "weight" in module.parametrizations:
        return [module.parametrizations.weight.original]
    return [module.weight]


def deployed_int8_layers(policy: Policy) -> list[str]:
    """Layers that run as int8 kernels on a CPU: both weights and input activations ≤ 8 bits
    (sub-8-bit values are executed by the int8 kernels; the CPU has nothing narrower)."""
    return [n for n, lp in policy.items() if lp.w_bits <= 8 and lp.a_bits <= 8]


def _module_path(node_name: str) -> str:
    """The module path behind an exporter node name: ``/layer3/layer3.0/shortcut/shortcut.0/Conv``
    -> ``layer3.0.shortcut.0`` (each scope part repeats its parent's name as a prefix)."""
    parts = node_name.strip("/").split("/")[:-1]
    names: list[str] = []
    for i, part in enumerate(parts):
        parent = parts[i - 1] if i else ""
        names.append(part[len(parent) + 1:] if parent and part.startswith(parent + ".") else part)
    return ".".join(names)


def _onnx_nodes_for_layers(onnx_bytes: bytes, layers: Sequence[str]) -> list[str]:
    """Map module names to the exporter's node names."""
    wanted = set(layers)
    return [node.name for node in onnx.load_from_string(onnx_bytes).graph.node
            if node.op_type in ("Conv", "Gemm", "MatMul") and _module_path(node.name) in wanted]


def export_deployable(model: nn.Module, policy: Policy, info: ModelInfo,
                      input_shape: tuple[int, int, int] | None = None,
                      calib_batches: Sequence[torch.Tensor] | None = None) -> bytes:
    """The ONNX model that is deployed (and timed): quantized weights baked in, layers with
    ``w_bits ≤ 8`` and ``a_bits ≤ 8`` as real int8 QDQ kernels, the rest fp32."""
    input_shape = input_shape or info.input_shape
    float_model = float_deployable_copy(model)
    fp32 = export_onnx(float_model, input_shape)
    int8 = deployed_int8_layers(policy)
    if not int8:
        return fp32
    nodes = _onnx_nodes_for_layers(fp32, int8)
    if not nodes:
        return fp32
    calib = [b.numpy() for b in (calib_batches or [])] or \
        [np.random.default_rng(0).standard_normal((16, *input_shape)).astype(np.float32)]
    return quantize_int8_qdq(fp32, calib, int8_compute=nodes)

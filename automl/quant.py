"""Per-layer fake quantization with a straight-through estimator.

Weights: symmetric, per output channel, applied through a ``torch.nn.utils.parametrize``
parametrization so the module keeps its name and its float master weight (what fine-tuning
updates). Activations: per tensor, on the layer's *input* (as HAQ quantizes them), with a range
calibrated on a few batches; unsigned when the calibrated input is never negative (after a
ReLU), symmetric otherwise. Both use ``x + (q(x) - x).detach()`` so gradients pass straight
through and the graph is made of plain ops that export to ONNX.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .core import FLOAT_BITS


def weight_qmax(bits: int, deploy_qmax: int | None = None) -> int:
    """The largest integer magnitude of a ``bits``-bit symmetric weight, capped at the deployment
    quantizer's (``deploy_qmax``: 64 where ORT quantizes weights to its reduced range, see
    :func:`latency_models.onnx_runtime.int8_weight_qmax`), so the fine-tuned weights sit on the
    grid the deployed graph uses and its re-quantization changes nothing."""
    qmax = 2 ** (bits - 1) - 1
    return min(qmax, deploy_qmax) if deploy_qmax is not None else qmax


def fake_quantize_weight(w: torch.Tensor, bits: int, qmax: int | None = None) -> torch.Tensor:
    """Symmetric per-output-channel fake quantization (no STE) onto ±``qmax`` (default the full
    ``bits``-bit range)."""
    qmax = weight_qmax(bits) if qmax is None else qmax
    flat = w.detach().reshape(w.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / qmax).clamp_min(1e-12)
    scale = scale.reshape(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale


class WeightFakeQuant(nn.Module):
    """Parametrization: the float weight seen through a ``bits``-bit symmetric quantizer."""

    def __init__(self, bits: int, qmax: int | None = None) -> None:
        super().__init__()
        self.bits = int(bits)
        self.qmax = weight_qmax(self.bits) if qmax is None else int(qmax)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (fake_quantize_weight(w, self.bits, self.qmax) - w).detach()


class ActivationFakeQuant(nn.Module):
    """Per-tensor activation quantizer; observes ranges while ``calibrating`` is True."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = int(bits)
        self.calibrating = True
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.lo = torch.minimum(self.lo, x.detach().min())
            self.hi = torch.maximum(self.hi, x.detach().max())
            return x
        if not torch.isfinite(self.hi):  # never calibrated: nothing sensible to do but pass
            return x
        if self.lo >= 0:  # unsigned range [0, hi]
            qmax = 2 ** self.bits - 1
            scale = (self.hi / qmax).clamp_min(1e-12)
            q = torch.clamp(torch.round(x / scale), 0, qmax) * scale
        else:
            qmax = 2 ** (self.bits - 1) - 1
            scale = (torch.maximum(self.hi.abs(), self.lo.abs()) / qmax).clamp_min(1e-12)
            q = torch.clamp(torch.round(x / scale), -qmax, qmax) * scale
        return x + (q - x).detach()


def _quantize_input_hook(module: nn.Module, args: tuple) -> tuple:
    return (module.act_quant(args[0]),) + tuple(args[1:])


def add_fake_quant(module: nn.Module, w_bits: int, a_bits: int, deploy_qmax: int | None = None) -> None:
    """Attach weight and/or input-activation fake quantization to one conv / linear layer;
    ``deploy_qmax`` caps the weight grid at the deployment quantizer's (:func:`weight_qmax`)."""
    if w_bits != FLOAT_BITS:
        parametrize.register_parametrization(module, "weight",
                                             WeightFakeQuant(w_bits, weight_qmax(w_bits, deploy_qmax)))
    if a_bits != FLOAT_BITS:
        module.act_quant = ActivationFakeQuant(a_bits)
        module.register_forward_pre_hook(_quantize_input_hook)


def finish_calibration(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, ActivationFakeQuant):
            m.calibrating = False


def _plain_layer(m: nn.Module) -> nn.Module:
    """A plain conv / linear holding ``m``'s current (quantized) weight and bias."""
    with torch.no_grad():
        if isinstance(m, nn.Conv2d):
            new: nn.Module = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                       m.padding, m.dilation, m.groups, bias=m.bias is not None,
                                       padding_mode=m.padding_mode)
        elif isinstance(m, nn.Linear):
            new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        else:
            raise TypeError(f"cannot bake a {type(m).__name__}")
        new.weight.copy_(m.weight)
        if m.bias is not None:
            new.bias.copy_(m.bias)
    return new


def float_deployable_copy(model: nn.Module) -> nn.Module:
    """A copy whose quantized layers are plain layers holding their quantized weights, without
    activation quantizers (the deployment runtime quantizes activations itself).

    Built by replacing modules rather than ``parametrize.remove_parametrizations``, which
    deletes the property from a class that a deep copy shares with the original."""
    import copy

    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        if parametrize.is_parametrized(m) or isinstance(getattr(m, "act_quant", None), ActivationFakeQuant):
            parent_name, _, child = name.rpartition(".")
            parent = out.get_submodule(parent_name) if parent_name else out
            setattr(parent, child, _plain_layer(m).train(m.training))
    return out.eval()


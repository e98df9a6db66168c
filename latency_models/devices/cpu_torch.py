"""A CPU running the torch module eagerly: the baseline before export, fp32 only."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from automl.core import LayerInfo

from ..energy import EnergyMeter, rapl_meter
from .base import DeviceBackend
from .host import cpu_model

if TYPE_CHECKING:
    from ..timing import Runner


class CpuTorchBackend(DeviceBackend):
    """Eager PyTorch on ``torch_device``: a layer is its module (conv + BN + activation, not
    folded, as eager mode runs it); fp16 runs the module in half precision."""

    name: ClassVar[str] = "cpu-torch"
    kind: ClassVar[str] = "cpu"
    runtime: ClassVar[str] = "torch"

    def hardware(self) -> str:
        return cpu_model()

    def runtime_version(self) -> str:
        import torch
        return torch.__version__

    def energy_meter(self) -> EnergyMeter | None:
        return rapl_meter()

    def layer_runner(self, layer: LayerInfo, cin: int, cout: int, precision: str) -> Runner:
        from ..timing import build_layer_module, layer_input_shape, torch_runner

        prof = self.profile
        module = build_layer_module(layer, cin, cout)
        shape = layer_input_shape(layer, cout if layer.op == "depthwise" else cin)
        return torch_runner(module, shape, prof.threads, prof.batch, self.torch_device,
                            half=precision == "fp16")

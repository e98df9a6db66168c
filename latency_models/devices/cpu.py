"""What every CPU target shares: the host's CPU model, RAPL energy, and a layer's module alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from automl.core import LayerInfo

from ..energy import EnergyMeter, rapl_meter
from .base import DeviceBackend
from .host import cpu_model

if TYPE_CHECKING:
    from torch import nn


class CpuBackend(DeviceBackend):
    """Base of the CPU backends (ONNX Runtime, eager torch): they differ only in how a layer runs."""

    def hardware(self) -> str:
        return cpu_model()

    def energy_meter(self) -> EnergyMeter | None:
        return rapl_meter()

    @staticmethod
    def layer_module(layer: LayerInfo, cin: int, cout: int) -> "tuple[nn.Module, tuple[int, ...]]":
        """The layer alone at (cin, cout) and its input shape (a depthwise layer's input is cout)."""
        from ..timing import build_layer_module, layer_input_shape

        return (build_layer_module(layer, cin, cout),
                layer_input_shape(layer, cout if layer.op == "depthwise" else cin))

"""A CPU running the torch module eagerly: the baseline before export, fp32 only."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from automl.core import LayerInfo

from .cpu import CpuBackend

if TYPE_CHECKING:
    from ..timing import Runner


class CpuTorchBackend(CpuBackend):
    """Eager PyTorch on ``torch_device``: a layer is its module (conv + BN + activation, not
    folded, as eager mode runs it); fp16 runs the module in half precision."""

    name: ClassVar[str] = "cpu-torch"
    kind: ClassVar[str] = "cpu"
    runtime: ClassVar[str] = "torch"

    def runtime_version(self) -> str:
        import torch
        return torch.__version__

    def layer_runner(self, layer: LayerInfo, cin: int, cout: int, precision: str) -> Runner:
        from ..timing import torch_runner

        prof = self.profile
        module, shape = self.layer_module(layer, cin, cout)
        return torch_runner(module, shape, prof.threads, prof.batch, self.torch_device,
                            half=precision == "fp16")

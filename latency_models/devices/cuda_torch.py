"""An NVIDIA GPU running the torch module (fp32 and fp16), timed with CUDA events."""

from __future__ import annotations

from typing import ClassVar

from ..energy import EnergyMeter, nvml_meter
from .cpu_torch import CpuTorchBackend
from .host import gpu_model


class CudaTorchBackend(CpuTorchBackend):
    """Eager PyTorch on the first CUDA device: the CPU torch backend on another device, with
    the GPU's model string and NVML's energy counter. Needs a GPU to measure anything."""

    name: ClassVar[str] = "cuda-torch"
    kind: ClassVar[str] = "cuda"
    runtime: ClassVar[str] = "torch"
    torch_device: ClassVar[str] = "cuda"

    def hardware(self) -> str:
        return gpu_model()

    def energy_meter(self) -> EnergyMeter | None:  # pragma: no cover - needs an NVIDIA GPU
        return nvml_meter()

"""Hardware profiles: what a device executes, in which runtime, at which precisions.

A profile is the request a latency table must match (device, runtime, threads, batch,
hardware model) and the rule that maps a layer's (w_bits, a_bits) to the precision the device
really runs it at. On a CPU there are no 2–7-bit kernels: a layer with both bit-widths ≤ 8 runs
as int8 (ONNX Runtime QDQ), anything else as fp32. The simulated bit-flexible accelerator runs
every (w, a) pair as itself.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU model string (``/proc/cpuinfo``'s model name) with the core count."""
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


@lru_cache(maxsize=1)
def simd_channel_step() -> int:
    """The CPU's fp32 vector width in channels: 16 with AVX-512, else 8 (AVX2).

    ONNX Runtime's CPU convolutions (MLAS, NCHWc layout) block channels by the vector width, so
    latency is a staircase in channels with that period (measured here on an AVX-512 EPYC:
    8 and 16 output channels cost the same, 40 and 48, 56 and 64); pruning to a count between
    steps saves nothing."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8


def gpu_model() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - no GPU here
        pass
    return "none"


@dataclass(frozen=True)
class HardwareProfile:
    """A target device + runtime. ``channel_step`` is its vector width: searched channel counts
    are multiples of it (AMC and NetAdapt round to 8 on CPUs: AVX2 holds 8 fp32 lanes)."""

    name: str
    kind: str                        # "cpu", "cuda" or "simulated"
    runtime: str                     # "onnxruntime", "torch", "bitfusion-sim"
    precisions: tuple[str, ...]
    channel_step: int = 8
    threads: int = 1
    batch: int = 1
    params: dict[str, Any] = field(default_factory=dict)   # simulator parameters

    def precision_for(self, w_bits: int, a_bits: int) -> str:
        """The precision this device runs a layer with these bit-widths at."""
        if self.kind == "simulated":
            return sim_precision(w_bits, a_bits)
        if "int8" in self.precisions and w_bits <= 8 and a_bits <= 8:
            return "int8"
        if "fp16" in self.precisions and w_bits <= 16 and a_bits <= 16:
            return "fp16"
        return "fp32"

    def with_threads(self, threads: int) -> "HardwareProfile":
        if threads < 1:
            raise ValueError(f"threads must be ≥ 1, got {threads}")
        return replace(self, threads=int(threads))

    @property
    def hardware(self) -> str:
        if self.kind == "cpu":
            return cpu_model()
        if self.kind == "cuda":
            return gpu_model()
        return self.params.get("hardware", self.name)

    def runtime_version(self) -> str:
        if self.runtime == "onnxruntime":
            import onnxruntime
            return onnxruntime.__version__
        if self.runtime == "torch":
            import torch
            return torch.__version__
        return str(self.params.get("version", "1"))

    def compat_request(self) -> dict[str, Any]:
        """What a table must agree on to be used for this profile."""
        return {"device": self.name, "runtime": self.runtime, "threads": self.threads,
                "batch": self.batch, "hardware": self.hardware}


def sim_bits(bits: int) -> int:
    """A simulated accelerator has no float: float layers run as 16-bit fixed point."""
    return 16 if bits > 8 else int(bits)


def sim_precision(w_bits: int, a_bits: int) -> str:
    return f"w{sim_bits(w_bits)}a{sim_bits(a_bits)}"


_SIM_BITS = (2, 3, 4, 5, 6, 7, 8, 16)

PROFILES: dict[str, HardwareProfile] = {
    "cpu-ort": HardwareProfile("cpu-ort", "cpu", "onnxruntime", ("fp32", "int8"),
                               channel_step=simd_channel_step()),
    "cpu-torch": HardwareProfile("cpu-torch", "cpu", "torch", ("fp32",),
                                 channel_step=simd_channel_step()),
    "cuda-torch": HardwareProfile("cuda-torch", "cuda", "torch", ("fp32", "fp16"), channel_step=32),
    "bitfusion-sim": HardwareProfile(
        "bitfusion-sim", "simulated", "bitfusion-sim",
        tuple(f"w{w}a{a}" for w in _SIM_BITS for a in _SIM_BITS), channel_step=8,
        params={"hardware": "BitFusion-like 16x32 fused-PE array, 500 MHz, 45 nm (simulated)"}),
}
DEFAULT_PROFILE = "cpu-ort"


def get_profile(name: str, threads: int | None = None) -> HardwareProfile:
    try:
        prof = PROFILES[name]
    except KeyError:
        raise ValueError(f"hardware profile {name!r}: unknown (known: {sorted(PROFILES)})") from None
    return prof.with_threads(threads) if threads is not None else prof


"""Hardware profiles: what a device executes, in which runtime, at which precisions.

A profile is a plain, serialisable record: the request a latency table must match (device,
runtime, threads, batch, hardware model) and the device's settings (precisions, channel step,
simulator parameters). What the device *does* (the precision a layer's (w_bits, a_bits) really
runs at, how it is timed, its energy meter) is its backend's, :attr:`HardwareProfile.backend`
(:mod:`latency_models.devices`): on a CPU there are no 2–7-bit kernels, so a layer with both
bit-widths ≤ 8 runs as int8 (ONNX Runtime QDQ), anything else as fp32; the simulated
bit-flexible accelerator runs every (w, a) pair as itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .devices.bitfusion_sim import SIM_BITS, sim_bits, sim_precision  # noqa: F401  (re-exported)
from .devices.host import cpu_model, gpu_model, simd_channel_step  # noqa: F401  (re-exported)
from .devices.registry import backend_for

if TYPE_CHECKING:
    from .devices.base import DeviceBackend


@dataclass(frozen=True)
class HardwareProfile:
    """A target device + runtime. ``channel_step`` is its vector width: searched channel counts
    are multiples of it (AMC and NetAdapt round to 8 on CPUs: AVX2 holds 8 fp32 lanes)."""

    name: str
    kind: str                        # the backend's kind: "cpu", "cuda", "simulated", ...
    runtime: str                     # the backend's runtime: "onnxruntime", "torch", ...
    precisions: tuple[str, ...]
    channel_step: int = 8
    threads: int = 1
    batch: int = 1
    params: dict[str, Any] = field(default_factory=dict)   # simulator parameters

    @cached_property
    def backend(self) -> DeviceBackend:
        """This device's behaviour (:mod:`latency_models.devices`): found by the profile's name,
        or for a profile rebuilt from a table's metadata by its kind and runtime. Resolved once
        per profile; not part of the record (not compared, not serialised)."""
        return backend_for(self)

    def __getstate__(self) -> dict[str, Any]:
        # the cached backend is re-resolved after unpickling (a Ray worker has its own registry)
        return {k: v for k, v in self.__dict__.items() if k != "backend"}

    def precision_for(self, w_bits: int, a_bits: int) -> str:
        """The precision this device runs a layer with these bit-widths at."""
        return self.backend.precision_for(w_bits, a_bits)

    def with_threads(self, threads: int) -> "HardwareProfile":
        if threads < 1:
            raise ValueError(f"threads must be ≥ 1, got {threads}")
        return replace(self, threads=int(threads))

    @property
    def hardware(self) -> str:
        return self.backend.hardware()

    def runtime_version(self) -> str:
        return self.backend.runtime_version()

    def compat_request(self) -> dict[str, Any]:
        """What a table must agree on to be used for this profile."""
        return {"device": self.name, "runtime": self.runtime, "threads": self.threads,
                "batch": self.batch, "hardware": self.hardware}


PROFILES: dict[str, HardwareProfile] = {
    "cpu-ort": HardwareProfile("cpu-ort", "cpu", "onnxruntime", ("fp32", "int8"),
                               channel_step=simd_channel_step()),
    "cpu-torch": HardwareProfile("cpu-torch", "cpu", "torch", ("fp32",),
                                 channel_step=simd_channel_step()),
    "cuda-torch": HardwareProfile("cuda-torch", "cuda", "torch", ("fp32", "fp16"), channel_step=32),
    "bitfusion-sim": HardwareProfile(
        "bitfusion-sim", "simulated", "bitfusion-sim",
        tuple(f"w{w}a{a}" for w in SIM_BITS for a in SIM_BITS), channel_step=8,
        params={"hardware": "BitFusion-like 16x32 fused-PE array, 500 MHz, 45 nm (simulated)"}),
}
DEFAULT_PROFILE = "cpu-ort"


def get_profile(name: str, threads: int | None = None) -> HardwareProfile:
    try:
        prof = PROFILES[name]
    except KeyError:
        raise ValueError(f"hardware profile {name!r}: unknown (known: {sorted(PROFILES)})") from None
    return prof.with_threads(threads) if threads is not None else prof


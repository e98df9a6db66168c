"""The device backend protocol: what a hardware target does, as one class per target.

A backend is bound to one :class:`~latency_models.profile.HardwareProfile` (its threads, batch,
precisions and parameters) and answers every question whose answer used to be a string test on
the profile's ``kind`` or ``runtime``. Class attributes are the facts that hold for the device
whatever the profile's settings; methods are what depends on them.

Heavy runtimes (torch, ONNX Runtime, pynvml) are imported inside the methods that use them, so
resolving a backend (which every ``HardwareProfile.precision_for`` does) stays cheap and the
service can list profiles without loading a runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from automl.core import FLOAT_BITS, LayerInfo

if TYPE_CHECKING:
    from automl.core import ModelInfo

    from ..energy import EnergyMeter
    from ..table import LatencyTable
    from ..timing import Runner


class ProfileSettings(Protocol):
    """What a backend reads of its profile. :class:`latency_models.profile.HardwareProfile` is
    one; typing against this instead of importing it keeps ``profile`` → ``devices`` the only
    direction between the two (the profile resolves its backend, never the reverse)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def runtime(self) -> str: ...
    @property
    def precisions(self) -> tuple[str, ...]: ...
    @property
    def channel_step(self) -> int: ...
    @property
    def threads(self) -> int: ...
    @property
    def batch(self) -> int: ...
    @property
    def params(self) -> dict[str, Any]: ...


class DeviceBackend(ABC):
    """One hardware target: its bit choices, how it is timed, and where its energy comes from.

    Subclasses set ``name`` (the registry key; the built-in profiles use it as their own name),
    ``kind`` and ``runtime`` (the values a profile of this device records, which is how a profile
    rebuilt from a table's metadata finds its backend), and override what differs."""

    name: ClassVar[str]
    kind: ClassVar[str]
    runtime: ClassVar[str]
    measures_latency: ClassVar[bool] = True
    """False for a simulator: there is no device to time, its table *is* the device (no measured
    reference, no calibration against measurement, no validation of the table)."""
    per_layer_bits: ClassVar[bool] = False
    """Whether its table prices each layer's bit-widths on their own. On ONNX Runtime a graph
    mixing int8 and fp32 layers pays Q/DQ at every boundary and may leave the fast conv path,
    which per-layer entries do not predict, so there one precision is searched for the whole
    model."""
    runs_onnx: ClassVar[bool] = False
    """Whether the deployed model it times is the exported ONNX graph (else the torch module)."""
    torch_device: ClassVar[str] = "cpu"
    """Where a torch module runs to be timed (and so the device string for ``.to()``)."""

    def __init__(self, profile: ProfileSettings) -> None:
        self.profile = profile

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.profile.name!r})"

    # ---- bits --------------------------------------------------------------------------------
    def precision_for(self, w_bits: int, a_bits: int) -> str:
        """The precision this device runs a layer with these bit-widths at. Default: a fixed
        kernel set, the narrowest of int8 / fp16 / fp32 in the profile that holds both widths
        (a CPU has no 2–7-bit kernels, so those run as int8)."""
        precisions = self.profile.precisions
        if "int8" in precisions and w_bits <= 8 and a_bits <= 8:
            return "int8"
        if "fp16" in precisions and w_bits <= 16 and a_bits <= 16:
            return "fp16"
        return "fp32"

    def search_bits(self) -> tuple[int, ...]:
        """Bit-widths worth searching: only what the device executes differently (float, and
        8 where it has int8 kernels); searching 2–7 where they all run as int8 is wasted."""
        return (FLOAT_BITS, 8) if "int8" in self.profile.precisions else (FLOAT_BITS,)

    # ---- what it is --------------------------------------------------------------------------
    @abstractmethod
    def hardware(self) -> str:
        """The hardware model string a table records and must match (CPU or GPU model)."""

    @abstractmethod
    def runtime_version(self) -> str:
        """The runtime's version, recorded in a table's metadata."""

    def energy_meter(self) -> EnergyMeter | None:
        """A readable cumulative energy counter for this device, or None (energy is then
        modeled): the meter is a property of the device, not of the profiling code."""
        return None

    # ---- timing ------------------------------------------------------------------------------
    @abstractmethod
    def layer_runner(self, layer: LayerInfo, cin: int, cout: int, precision: str) -> Runner:
        """``layer`` alone at (cin, cout) channels and ``precision``, ready to time, executed
        the way this runtime executes it in a deployed model."""

    def overhead_runner(self) -> Runner:
        """The runtime's smallest call (its fixed per-call cost, counted once per model).
        Default: a 1 → 1 linear layer in fp32."""
        tiny = LayerInfo(name="overhead", op="linear", in_channels=1, out_channels=1)
        return self.layer_runner(tiny, 1, 1, "fp32")

    # ---- tables without a device ---------------------------------------------------------------
    def simulate_table(self, table: LatencyTable, info: ModelInfo, points: int) -> int:
        """Fill ``table`` for ``info`` without measuring; returns the entries added. Only a
        device that does not measure latency (``measures_latency`` False) has this; a measured
        table is built by :func:`latency_models.profiler.profile_layers` from
        :meth:`layer_runner`."""
        raise NotImplementedError(f"{self.name} measures its table on the device "
                                  "(latency_models.profiler.profile_layers); it does not simulate one")


class SimulatedBackend(DeviceBackend):
    """A device that exists only as a cost model: it fills its table itself, is never timed,
    and prices every layer's bit-widths separately (no runtime glue between layers)."""

    measures_latency: ClassVar[bool] = False
    per_layer_bits: ClassVar[bool] = True

    def hardware(self) -> str:
        """What the profile's parameters say it simulates (there is no host to probe)."""
        return str(self.profile.params.get("hardware", self.profile.name))

    def runtime_version(self) -> str:
        """The simulator's model version, from the profile's parameters."""
        return str(self.profile.params.get("version", "1"))

    def layer_runner(self, layer: LayerInfo, cin: int, cout: int, precision: str) -> Runner:
        raise ValueError(f"profile {self.profile.name!r}: {self.name} is simulated, not measured "
                         "(its table is filled by its simulate_table)")

    @abstractmethod
    def simulate_table(self, table: LatencyTable, info: ModelInfo, points: int) -> int:
        """Fill ``table`` with simulated entries for ``info``'s grid (``points`` per axis)."""

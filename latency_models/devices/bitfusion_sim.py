"""A simulated BitFusion-like bit-flexible accelerator: every (w, a) pair from 2 to 8 bits.

The cost model itself is :mod:`latency_models.devices.bitfusion_model`; this class is the device's face:
its bit rule and how its table is filled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .base import SimulatedBackend

if TYPE_CHECKING:
    from automl.core import ModelInfo

    from ..table import LatencyTable

SIM_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
"""The widths its fused PEs run (BitBricks fuse in 2-bit steps; 16 stands for float)."""

SEARCH_BITS = (2, 3, 4, 5, 6, 7, 8)


def sim_bits(bits: int) -> int:
    """A simulated accelerator has no float: float layers run as 16-bit fixed point."""
    return 16 if bits > 8 else int(bits)


def sim_precision(w_bits: int, a_bits: int) -> str:
    """The table precision of a (w, a) layer: ``w{w}a{a}`` after :func:`sim_bits`."""
    return f"w{sim_bits(w_bits)}a{sim_bits(a_bits)}"


class BitFusionSimBackend(SimulatedBackend):
    """BitFusion (Sharma et al., ISCA 2018), the accelerator HAQ searched against: compute
    cycles scale with ceil(w/2)·ceil(a/2), so every width from 2 to 8 is its own cost."""

    name: ClassVar[str] = "bitfusion-sim"
    kind: ClassVar[str] = "simulated"
    runtime: ClassVar[str] = "bitfusion-sim"

    def precision_for(self, w_bits: int, a_bits: int) -> str:
        return sim_precision(w_bits, a_bits)

    def search_bits(self) -> tuple[int, ...]:
        return SEARCH_BITS

    def simulate_table(self, table: LatencyTable, info: ModelInfo, points: int) -> int:
        from .bitfusion_model import simulate_table
        return simulate_table(table, info, self.profile, points=points)

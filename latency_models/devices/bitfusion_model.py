"""A simulated bit-flexible accelerator (BitFusion-like) for sub-8-bit precisions.

The CPU has no 2–7-bit kernels, so mixed-precision search needs hardware whose cost really
changes with bit-width. This follows BitFusion (Sharma et al., ISCA 2018), the accelerator HAQ
searched against: a 2-D array of *fused PEs*, each made of 16 BitBricks (2-bit × 2-bit
multipliers) that fuse into one 8×8-bit MAC per cycle, or 4 4×4-bit, or 16 2×2-bit MACs.
So a layer's compute cycles scale with ceil(w_bits/2) · ceil(a_bits/2):

    compute_cycles = ceil(C_in/g / rows) · ceil(C_out / cols) · H_out · W_out · k²
                     · ceil(w/2) · ceil(a/2) / 16
    memory_s       = (weights·w + inputs·a + outputs·a) / 8 / bandwidth
    latency        = max(compute_cycles / f, memory_s) + setup_cycles / f   (double-buffered)

The array dimensions, frequency, bandwidth and setup are named parameters (defaults: the
paper's 16×32 array at 500 MHz, 45 nm; 16 GB/s DRAM). Float layers run as 16-bit fixed point
(ceil(16/2)² = 64 BitBrick passes). Energy comes from :class:`HorowitzEnergyModel` (same bits).
Latency entries are marked ``simulated``, energy ``modeled``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from automl.core import LayerInfo, ModelInfo

from ..energy import HorowitzEnergyModel, precision_bits
from .base import ProfileSettings
from ..grid import layer_at, layer_energy_mj, missing_points, plan_grid
from ..table import LatencyTable, RemainderEntry, TableEntry


@dataclass(frozen=True)
class BitFusionParams:
    rows: int = 16                 # fused PEs along input channels
    cols: int = 32                 # fused PEs along output channels
    freq_hz: float = 500e6
    bandwidth_bytes_s: float = 16e9
    setup_cycles: int = 100


def bitfusion_latency_ms(layer: LayerInfo, cin: int, cout: int, w_bits: int, a_bits: int,
                         p: BitFusionParams = BitFusionParams()) -> float:
    at = layer_at(layer, cin, cout)
    groups = at.groups if at.op != "linear" else 1
    cin_g = max(1, at.in_channels // groups)
    hw = at.out_hw[0] * at.out_hw[1]
    k2 = at.kernel * at.kernel if at.op != "linear" else 1
    passes = math.ceil(w_bits / 2) * math.ceil(a_bits / 2)
    if at.op == "depthwise":   # each channel is its own group: one row of the array per channel
        tiles = math.ceil(at.out_channels / p.cols)
    else:
        tiles = math.ceil(cin_g / p.rows) * math.ceil(at.out_channels / p.cols)
    compute_s = tiles * hw * k2 * passes / 16 / p.freq_hz
    in_elems = at.in_channels * (1 if at.op == "linear" else at.in_hw[0] * at.in_hw[1])
    out_elems = at.out_channels * hw
    bytes_moved = (at.weight_count * w_bits + (in_elems + out_elems) * a_bits) / 8
    memory_s = bytes_moved / p.bandwidth_bytes_s
    return (max(compute_s, memory_s) + p.setup_cycles / p.freq_hz) * 1e3


def simulate_table(table: LatencyTable, info: ModelInfo, profile: ProfileSettings,
                   points: int = 5, params: BitFusionParams | None = None) -> int:
    """Fill ``table`` with simulated entries for ``info``'s grid at every (w, a) precision."""
    params = params or BitFusionParams(**{k: v for k, v in profile.params.items()
                                          if k in BitFusionParams.__dataclass_fields__})
    energy = HorowitzEnergyModel()
    n = 0
    for plan, cin, cout, prec in missing_points(table, plan_grid(info, profile.channel_step, points),
                                                profile.precisions):
        w, a = precision_bits(prec)
        lat = bitfusion_latency_ms(plan.layer, cin, cout, w, a, params)
        table.add(TableEntry(plan.key, cin, cout, prec, lat, 0.0, lat, 0, latency_source="simulated",
                             energy_mj=layer_energy_mj(energy, plan.layer, cin, cout, prec),
                             energy_source="modeled"))
        n += 1
    # pooling and adds are not modelled on the accelerator: a zero remainder, said so
    table.set_remainders(info.model_name, info.input_shape, [
        RemainderEntry(info.model_name, list(info.input_shape), r, 0.0, 0.0, 0.0, 0.0, "simulated")
        for r in (0.5, 1.0)])
    table.metadata.input_shapes[info.model_name] = list(info.input_shape)
    table.metadata.notes = f"BitFusion-like simulator: {asdict(params)}"
    return n

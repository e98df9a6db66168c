"""Energy: read from a meter where one is readable, otherwise from a named analytic model.

Meters: Intel RAPL (``/sys/class/powercap/intel-rapl*/energy_uj``, package domain) and NVIDIA
NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since driver load).
Both count the whole package / board, so a layer's energy is the counter's increase over many
back-to-back runs divided by the run count; idle and other processes are in it too, which is
why such numbers are ``measured`` but noisy.

Without a meter, :class:`HorowitzEnergyModel` (``modeled``): energy per MAC by bit-width plus
energy per byte moved, with the 45 nm figures of M. Horowitz, "Computing's energy problem (and
what we can do about it)", ISSCC 2014, Fig. 1.1.9:

===============================  ========
operation (45 nm, 0.9 V)         energy
===============================  ========
8-bit int add / 32-bit int add   0.03 / 0.1 pJ
8-bit int mult / 32-bit int mult 0.2 / 3.1 pJ
16-bit fp add / mult             0.4 / 1.1 pJ
32-bit fp add / mult             0.9 / 3.7 pJ
64-bit SRAM read, 32 KB          20 pJ   (2.5 pJ/byte)
64-bit DRAM read                 1.3–2.6 nJ (low end: 162.5 pJ/byte)
===============================  ========

An integer b_w × b_a multiply is scaled from the 8×8 figure by (b_w·b_a)/64 (an array
multiplier's area and switching grow with the product of the operand widths), and accumulates
in 32 bits (0.1 pJ). Weights are read once from DRAM per inference; activations are read and
written through a 32 KB-class SRAM. What it leaves out: a CPU's instruction fetch, control and
static power, which dominate a real CPU's absolute energy; use it to rank policies, not to quote
joules.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

PJ_PER_MJ = 1e9

# Horowitz, ISSCC 2014 (45 nm), in pJ.
INT8_MULT_PJ = 0.2
INT32_ADD_PJ = 0.1
FP16_ADD_PJ, FP16_MULT_PJ = 0.4, 1.1
FP32_ADD_PJ, FP32_MULT_PJ = 0.9, 3.7
SRAM_PJ_PER_BYTE = 20.0 / 8       # 64-bit read from a 32 KB SRAM
DRAM_PJ_PER_BYTE = 1300.0 / 8     # 64-bit DRAM read, low end


@dataclass(frozen=True)
class HorowitzEnergyModel:
    """Analytic energy = MACs × E_mac(w_bits, a_bits) + bytes moved × E_byte."""

    name: str = "horowitz45nm-v1"
    sram_pj_per_byte: float = SRAM_PJ_PER_BYTE
    dram_pj_per_byte: float = DRAM_PJ_PER_BYTE

    def mac_pj(self, w_bits: int, a_bits: int) -> float:
        if w_bits > 16 or a_bits > 16:
            return FP32_MULT_PJ + FP32_ADD_PJ
        if w_bits > 8 or a_bits > 8:
            return FP16_MULT_PJ + FP16_ADD_PJ
        return INT8_MULT_PJ * (w_bits * a_bits) / 64.0 + INT32_ADD_PJ

    def layer_energy_mj(self, macs: int, weights: int, in_elems: int, out_elems: int,
                        w_bits: int, a_bits: int, out_bits: int | None = None) -> float:
        out_bits = a_bits if out_bits is None else out_bits
        compute = macs * self.mac_pj(w_bits, a_bits)
        weight_bytes = weights * min(w_bits, 32) / 8
        act_bytes = in_elems * min(a_bits, 32) / 8 + out_elems * min(out_bits, 32) / 8
        memory = weight_bytes * (self.dram_pj_per_byte + self.sram_pj_per_byte) + \
            act_bytes * self.sram_pj_per_byte
        return (compute + memory) / PJ_PER_MJ

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self),
                "source": "M. Horowitz, Computing's energy problem, ISSCC 2014 (45 nm)"}


PRECISION_BITS = {"fp32": (32, 32), "fp16": (16, 16), "int8": (8, 8)}


def precision_bits(precision: str) -> tuple[int, int]:
    """(w_bits, a_bits) of a precision name: fp32, fp16, int8 or wXaY."""
    if precision in PRECISION_BITS:
        return PRECISION_BITS[precision]
    if precision.startswith("w") and "a" in precision:
        w, a = precision[1:].split("a", 1)
        return int(w), int(a)
    raise ValueError(f"unknown precision {precision!r}")


# ---- meters --------------------------------------------------------------------------------
class EnergyMeter:
    """A cumulative energy counter in millijoules."""

    name = "none"

    def read_mj(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError


class RaplMeter(EnergyMeter):
    """Intel RAPL package energy via powercap sysfs (handles the counter's wrap-around)."""

    name = "intel-rapl"

    def __init__(self, domain: str) -> None:
        self.path = os.path.join(domain, "energy_uj")
        with open(os.path.join(domain, "max_energy_range_uj")) as f:
            self.max_uj = int(f.read())
        self._last = self._raw()
        self._total_uj = 0

    def _raw(self) -> int:
        with open(self.path) as f:
            return int(f.read())

    def read_mj(self) -> float:
        now = self._raw()
        delta = now - self._last if now >= self._last else now + self.max_uj - self._last
        self._last = now
        self._total_uj += delta
        return self._total_uj / 1e3


class NvmlMeter(EnergyMeter):  # pragma: no cover - no NVIDIA GPU on the CI machine
    """NVIDIA NVML total energy since driver load (Volta and later), in mJ."""

    name = "nvml"

    def __init__(self, index: int = 0) -> None:
        import pynvml
        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.read_mj()

    def read_mj(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))


def rapl_meter() -> RaplMeter | None:
    """This machine's RAPL package meter when powercap exposes a readable one, else None."""
    for domain in sorted(glob.glob("/sys/class/powercap/intel-rapl:[0-9]*")):
        if ":" in os.path.basename(domain)[len("intel-rapl:"):]:
            continue  # a sub-domain (core, uncore, dram); the package domain is the parent
        try:
            return RaplMeter(domain)
        except (OSError, ValueError):
            continue
    return None


def nvml_meter(index: int = 0) -> EnergyMeter | None:
    """GPU ``index``'s NVML energy counter, or None (no driver, no pynvml, pre-Volta)."""
    try:
        return NvmlMeter(index)
    except Exception:
        return None


def measure_energy_mj(meter: EnergyMeter, fn: Callable[[], object], min_seconds: float = 0.2,
                      min_calls: int = 20) -> float:
    """Energy of one ``fn()`` call: the counter's increase over ≥ ``min_seconds`` of calls."""
    start = meter.read_mj()
    t0 = time.perf_counter()
    calls = 0
    while calls < min_calls or time.perf_counter() - t0 < min_seconds:
        fn()
        calls += 1
    return (meter.read_mj() - start) / calls

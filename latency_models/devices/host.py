"""What this machine is: its CPU and GPU model strings and the CPU's vector width.

Kept apart from the backends so that :mod:`latency_models.profile` (the default channel step of
the CPU profiles) and the backends (``hardware()``) read the host the same way.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache


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
    """The first CUDA device's name, or ``"none"``."""
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - no GPU here
        pass
    return "none"

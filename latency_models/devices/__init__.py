"""One backend class per hardware target, and the registry that maps a profile to its backend.

A :class:`~latency_models.profile.HardwareProfile` is the serialisable record (name, kind,
runtime, precisions, threads, ...); its :class:`DeviceBackend` is the behaviour: which precision
a (w_bits, a_bits) layer runs at, which bit-widths are worth searching, how a layer or the
runtime's overhead is timed, which energy meter is readable, or, for a simulator, how its table
is filled without a device. Code outside this package asks the backend instead of comparing a
profile's ``kind`` or ``runtime`` to a string, so adding a device is one new class and one
:func:`register_backend` call (nn-Meter's one-backend-per-device shape).
"""

from .base import DeviceBackend, ProfileSettings, SimulatedBackend
from .registry import (UnknownBackendError, backend_for, backend_names, get_backend, kind_for_runtime,
                       register_backend, unregister_backend)

__all__ = ["DeviceBackend", "ProfileSettings", "SimulatedBackend", "UnknownBackendError", "backend_for",
           "backend_names", "get_backend", "kind_for_runtime", "register_backend",
           "unregister_backend"]

"""The registry of device backends: name → backend class, and a profile → its backend.

Built-in backends are registered here; another device joins at run time with
:func:`register_backend` (usable as a class decorator), and every profile carrying its name then
behaves as that device without any other module changing.
"""

from __future__ import annotations

from typing import TypeVar

from .base import DeviceBackend, ProfileSettings
from .bitfusion_sim import BitFusionSimBackend
from .cpu_ort import CpuOrtBackend
from .cpu_torch import CpuTorchBackend
from .cuda_torch import CudaTorchBackend

B = TypeVar("B", bound=type[DeviceBackend])

_BACKENDS: dict[str, type[DeviceBackend]] = {}


class UnknownBackendError(ValueError):
    """No registered backend has this name (or fits this profile); the message lists them."""


def register_backend(cls: B, *, replace: bool = False) -> B:
    """Register ``cls`` under ``cls.name``; returns it, so it also works as a decorator.

    A second class under a taken name is refused unless ``replace``: two devices silently
    sharing a name would make every table of that name ambiguous."""
    if not (isinstance(cls, type) and issubclass(cls, DeviceBackend)):
        raise TypeError(f"{cls!r} is not a DeviceBackend subclass")
    for attr in ("name", "kind", "runtime"):
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            raise TypeError(f"{cls.__name__}.{attr} must be a non-empty string")
    old = _BACKENDS.get(cls.name)
    if old is not None and old is not cls and not replace:
        raise ValueError(f"device backend {cls.name!r} is already registered ({old.__name__}); "
                         "pass replace=True to override it")
    _BACKENDS[cls.name] = cls
    return cls


def unregister_backend(name: str) -> None:
    """Remove the backend ``name`` (a test's, or a plug-in being unloaded)."""
    _BACKENDS.pop(name, None)


def backend_names() -> list[str]:
    """The registered backends' names, sorted."""
    return sorted(_BACKENDS)


def get_backend(name: str) -> type[DeviceBackend]:
    """The backend class registered as ``name``."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(f"device backend {name!r}: unknown "
                                  f"(known: {backend_names()})") from None


def backend_for(profile: ProfileSettings) -> DeviceBackend:
    """``profile``'s backend, bound to it: by the profile's name, else (a profile rebuilt from a
    table made under another name) the backend of the same kind and runtime, else of the same
    kind (an unknown simulator's table is still a simulator's)."""
    cls = _BACKENDS.get(profile.name)
    if cls is None:
        cls = next((c for c in _BACKENDS.values()
                    if (c.kind, c.runtime) == (profile.kind, profile.runtime)), None)
    if cls is None:
        cls = next((c for c in _BACKENDS.values() if c.kind == profile.kind), None)
    if cls is None:
        raise UnknownBackendError(
            f"hardware profile {profile.name!r} (kind {profile.kind!r}, runtime {profile.runtime!r}): "
            f"no device backend (known: {backend_names()}); register one with register_backend")
    return cls(profile)


def kind_for_runtime(runtime: str) -> str:
    """The device kind of a table whose device name is unknown, from its runtime: the first
    registered backend with that runtime; else a ``*-sim`` runtime is a simulator, anything else
    a CPU (what tables of unknown devices have always been read as)."""
    for cls in _BACKENDS.values():
        if cls.runtime == runtime:
            return cls.kind
    return BitFusionSimBackend.kind if runtime.endswith("-sim") else CpuOrtBackend.kind

for _cls in (CpuOrtBackend, CpuTorchBackend, CudaTorchBackend, BitFusionSimBackend):
    register_backend(_cls)

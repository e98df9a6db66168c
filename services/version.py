"""The installed distribution's version: one source (pyproject.toml) for ``hwcompress --version``,
GetServerInfo and ``hwcompress_build_info``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _dist_version


def dist_version(dist: str) -> str:
    try:
        return _dist_version(dist)
    except PackageNotFoundError:
        return "unknown"


VERSION = dist_version("hwcompress")

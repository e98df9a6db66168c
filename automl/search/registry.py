"""Strategies by name, Optuna-style: the engine's own are listed here; others join through the
``hwcompress.strategies`` entry-point group (``agents`` declares its RL agents there in
pyproject.toml), or at run time with :func:`register_strategy`. So the engine never imports
``agents`` (nor names it): the layers point one way (.importlinter)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .base import Strategy

ENTRY_POINT_GROUP = "hwcompress.strategies"

_BUILTIN: dict[str, str] = {
    "uniform": "automl.search.strategies.uniform:UniformStrategy",
    "random": "automl.search.strategies.random_search:RandomStrategy",
    "netadapt": "automl.search.strategies.netadapt:NetAdaptStrategy",
    "optuna-tpe": "automl.search.strategies.optuna_search:OptunaTPEStrategy",
    "optuna-nsga2": "automl.search.strategies.optuna_search:OptunaNSGA2Strategy",
}
_REGISTERED: dict[str, str | type[Strategy]] = {}


def register_strategy(name: str, target: str | type[Strategy]) -> None:
    """Add a strategy: a class, or ``module:Class`` imported on first use."""
    _REGISTERED[name] = target


def _targets() -> dict[str, str | type[Strategy]]:
    """Every known strategy: built in, then installed entry points, then registered here."""
    plugins = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**_BUILTIN, **plugins, **_REGISTERED}


def _available(target: str | type[Strategy]) -> bool:
    if not isinstance(target, str):
        return True
    module = target.partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def strategy_names() -> list[str]:
    """Names of the strategies that can be built here."""
    return [n for n, t in _targets().items() if _available(t)]


def get_strategy(name: str) -> type[Strategy]:
    target = _targets().get(name)
    if target is None or not _available(target):
        raise ValueError(f"strategy {name!r}: unknown (known: {strategy_names()})")
    if not isinstance(target, str):
        return target
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)

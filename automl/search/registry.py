"""Strategies by name. Entries are import strings so that strategies living in ``agents`` (which
imports ``automl``) join the registry without ``automl`` importing ``agents``."""

from __future__ import annotations

import importlib

from .base import Strategy

_STRATEGIES: dict[str, str] = {
    "uniform": "automl.search.strategies.uniform:UniformStrategy",
    "random": "automl.search.strategies.random_search:RandomStrategy",
    "netadapt": "automl.search.strategies.netadapt:NetAdaptStrategy",
    "optuna-tpe": "automl.search.strategies.optuna_search:OptunaTPEStrategy",
    "optuna-nsga2": "automl.search.strategies.optuna_search:OptunaNSGA2Strategy",
    "ddpg": "agents.strategy:DDPGStrategy",
    "td3": "agents.strategy:TD3Strategy",
    "sac": "agents.strategy:SACStrategy",
    "ppo": "agents.strategy:PPOStrategy",
}


def register_strategy(name: str, target: str | type[Strategy]) -> None:
    """Add a strategy: a class, or ``module:Class`` imported on first use."""
    _STRATEGIES[name] = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def _available(target: str) -> bool:
    module = target.partition(":")[0]
    return importlib.util.find_spec(module) is not None


def strategy_names() -> list[str]:
    """Names of the strategies that can be built here."""
    return [n for n, t in _STRATEGIES.items() if _available(t)]


def get_strategy(name: str) -> type[Strategy]:
    target = _STRATEGIES.get(name)
    if target is None or not _available(target):
        raise ValueError(f"strategy {name!r}: unknown (known: {strategy_names()})")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)

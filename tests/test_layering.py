"""Layers point one way: the import-linter contracts in .importlinter hold (run for real)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_contracts_hold():
    out = _lint(ROOT / ".importlinter")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


def test_a_reversed_layer_order_is_caught(tmp_path):
    """The checker really reads our imports: with latency_models placed above automl, the
    imports automl makes of latency_models break the contract."""
    bad = tmp_path / "reversed.ini"
    bad.write_text("[importlinter]\nroot_packages =\n    automl\n    latency_models\n"
                   "include_external_packages = False\n\n"
                   "[importlinter:contract:reversed]\nname = reversed\ntype = layers\n"
                   "layers =\n    latency_models\n    automl\n")
    out = _lint(bad)
    assert out.returncode != 0
    assert "automl.search" in out.stdout and "BROKEN" in out.stdout


def test_the_engine_never_names_agents():
    """The RL agents join the strategy registry through the ``hwcompress.strategies`` entry
    points, so no module of automl imports ``agents`` or names it in an import string."""
    import ast

    for path in (ROOT / "automl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith(("agents.", "agents:")), f"{path}: {node.value!r}"


def test_strategies_join_through_entry_points_and_at_run_time(monkeypatch):
    from automl.search import registry
    from automl.search.base import Strategy
    from automl.search.registry import get_strategy, register_strategy, strategy_names

    names = strategy_names()
    assert {"uniform", "optuna-tpe", "ddpg", "td3", "sac", "ppo"} <= set(names)
    assert get_strategy("ddpg").__module__ == "agents.strategy"   # from pyproject's entry points

    class Fixed(Strategy):
        name = "fixed-test"

        def ask(self, n):
            return []

        def tell(self, trial, evaluation):
            pass

    monkeypatch.setattr(registry, "_REGISTERED", {})   # leave no test strategy behind
    register_strategy("fixed-test", Fixed)
    assert get_strategy("fixed-test") is Fixed and "fixed-test" in strategy_names()

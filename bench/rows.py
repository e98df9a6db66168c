"""The shared results file of the search benches: a JSON list of rows keyed by
(model, budget_fraction, strategy, seed), written under a file lock so several benches (the
search strategies, the RL agents) can add rows at once and a re-run replaces its own."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

ROW_KEYS = ("model", "budget_fraction", "strategy", "seed")


def row_key(row: dict, keys: tuple[str, ...] = ROW_KEYS) -> tuple:
    return tuple(row.get(k) for k in keys)


@contextmanager
def _locked(path: Path):
    with path.with_suffix(".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def save_row(path: Path, row: dict, keys: tuple[str, ...] = ROW_KEYS) -> None:
    """Insert or replace ``row`` (by its values of ``keys``) in the JSON list at ``path``."""
    with _locked(path):
        rows = [r for r in load_rows(path) if row_key(r, keys) != row_key(row, keys)]
        rows.append(row)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(path)

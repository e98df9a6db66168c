"""The Pareto front of scored policies: what finalize reports and plots."""

from __future__ import annotations

from typing import Any


def pareto_front(rows: list[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """Feasible, scored rows that no other row beats on both accuracy and ``objective``."""
    pts = [r for r in rows if r.get("feasible") and r.get("accuracy") is not None]
    front = [r for r in pts if not any(
        o["accuracy"] >= r["accuracy"] and o[objective] <= r[objective]
        and (o["accuracy"] > r["accuracy"] or o[objective] < r[objective]) for o in pts)]
    return sorted(front, key=lambda r: r[objective])

"""The learning curve of a search: reward per episode and the best so far, as JSON and a PNG.

AMC judges an agent by how quickly the best reward rises, not by its last episode, and the
result of a search is the best policy seen, so both series are kept. Written into the search's
output directory (next to ``result.json``) after every batch of episodes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def episodes_to_fraction_of_best(curve: list[dict[str, Any]], fraction: float = 0.99,
                                 key: str = "accuracy") -> int | None:
    """The first episode (1-based count) whose best-so-far ``key`` reached ``fraction`` of the
    final best; None when nothing was scored."""
    values = [e.get(key) for e in curve]
    scored = [v for v in values if v is not None]
    if not scored:
        return None
    target = fraction * max(scored)
    best = None
    for i, v in enumerate(values):
        if v is not None and (best is None or v > best):
            best = v
        if best is not None and best >= target:
            return i + 1
    return None


def write_curve(out_dir: Path, meta: dict[str, Any], curve: list[dict[str, Any]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {**meta, "episodes": curve,
            "episodes_to_99pct_best": episodes_to_fraction_of_best(curve)}
    tmp = out_dir / "learning_curve.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, out_dir / "learning_curve.json")
    _plot(out_dir / "learning_curve.png", meta, curve)


def _plot(path: Path, meta: dict[str, Any], curve: list[dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [e["episode"] for e in curve]
    warm = [e for e in curve if e.get("warmup")]
    rest = [e for e in curve if not e.get("warmup")]
    ax.scatter([e["episode"] for e in warm], [e["reward"] for e in warm], s=10, c="0.6",
               label="reward (warm-up, random)")
    ax.scatter([e["episode"] for e in rest], [e["reward"] for e in rest], s=10, c="tab:blue",
               label="reward (agent + noise)")
    ax.plot(xs, [e["best_reward"] for e in curve], c="tab:red", label="best so far")
    ax.set_xlabel("episode")
    ax.set_ylabel(f"reward ({meta.get('reward', 'error')})")
    ax.set_title(f"{meta.get('strategy', '')} {meta.get('mode', '')}: {meta.get('model', '')}, "
                 f"{', '.join(meta.get('budgets', []))}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)

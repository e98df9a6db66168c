"""Figures for the fidelity report: predicted vs measured latency."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def scatter_png(predicted_ms: Sequence[float], measured_ms: Sequence[float], path: str | Path,
                title: str, labels: Sequence[str] | None = None) -> Path:
    """Predicted vs measured, with y = x and the ±10% band; colour by ``labels`` when given."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    labels = list(labels) if labels is not None else ["policy"] * len(measured_ms)
    for lab in sorted(set(labels)):
        xs = [m for m, l in zip(measured_ms, labels) if l == lab]
        ys = [p for p, l in zip(predicted_ms, labels) if l == lab]
        ax.scatter(xs, ys, s=12, alpha=0.75, label=lab)
    lo = min(min(measured_ms), min(predicted_ms)) * 0.9
    hi = max(max(measured_ms), max(predicted_ms)) * 1.1
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="predicted = measured")
    ax.plot([lo, hi], [lo * 1.1, hi * 1.1], "k:", lw=0.8, label="±10%")
    ax.plot([lo, hi], [lo * 0.9, hi * 0.9], "k:", lw=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title.replace(": ", ":\n", 1), fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

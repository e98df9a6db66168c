"""Does moving a table's inner grid points to multiples of 16 predict better? (issue 14)

For each cell (model @ input shape) this builds one table per alignment (``latency_models.grid
.GRID_ALIGN``: 1 = the points ``plan_grid`` spreads evenly, 16 = the inner ones moved to the
nearest multiple of 16 among the layer's channel choices) back to back, the order alternating
from cell to cell so neither is always the fresher; then times fresh random policies once
(as ``hwcompress lut validate --passes 2`` does, predicted by the first alignment's table) and predicts
those same timings with every table through :func:`bench.grid_density.thinned_fidelity` (nothing
thinned; the remainder and per-kind multipliers re-fitted on each table's own whole-model
timings, as a build does). Alignment only matters where the channel step is below 16 (the AMD
host's 8); at step 16 every choice is a multiple of 16.

    python -m bench.grid_align [--cells vgg@1x32x32,...] [--samples 100] [--seed 2]

Resumable: each table and report is a file under ``--out-dir`` (default
bench/results/grid-align-<cpu>/) and is kept when present; ``summary.json`` holds the rows.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = "mobilenetv2_050@1x32x32,resnet20@1x32x32,vgg@1x32x32"


def build_table(model: str, shape: tuple[int, ...], align: int, out: Path) -> float:
    """Build (or finish) ``model``'s table at ``shape`` with grid alignment ``align``; seconds."""
    import latency_models.grid as grid
    from automl.profiling import profile_model
    from latency_models.profile import get_profile

    t0 = time.perf_counter()
    saved, grid.GRID_ALIGN = grid.GRID_ALIGN, align
    try:
        profile_model(model, shape, get_profile("cpu-ort", 1), out, progress=False)
    finally:
        grid.GRID_ALIGN = saved
    return time.perf_counter() - t0


def validate(model: str, table: Path, samples: int, seed: int, out: Path) -> float:
    """Time ``samples`` random policies of ``model`` (2 passes), as `hwcompress lut validate`
    does (:func:`automl.profiling.validate_model`); seconds."""
    from automl.profiling import validate_model
    from latency_models.table import LatencyTable

    t0 = time.perf_counter()
    validate_model(model, LatencyTable.load(table), samples, seed, passes=2, json_out=out, progress=False)
    return time.perf_counter() - t0


def run_cell(index: int, cell: str, aligns: list[int], samples: int, seed: int, out_dir: Path) -> list[dict[str, Any]]:
    from bench.grid_density import thinned_fidelity

    model, shape_text = cell.split("@")
    shape = tuple(int(v) for v in shape_text.split("x"))
    tag = f"{model}-{shape_text}"
    tables = {a: out_dir / f"{tag}-align{a}.json" for a in aligns}
    timings = out_dir / f"{tag}-times.json"
    seconds: dict[str, float] = json.loads(timings.read_text()) if timings.is_file() else {}
    order = aligns if index % 2 == 0 else aligns[::-1]
    for a in order:
        if f"build align {a}" not in seconds:
            seconds[f"build align {a}"] = build_table(model, shape, a, tables[a])
            timings.write_text(json.dumps(seconds, indent=1))
    report = out_dir / f"{tag}-report.json"
    if not report.is_file():
        seconds["validate"] = validate(model, tables[aligns[0]], samples, seed, report)
        timings.write_text(json.dumps(seconds, indent=1))
    floor = json.loads(report.read_text()).get("repeatability", {})
    rows = []
    for a in aligns:
        row = thinned_fidelity(f"{tag} align {a}", tables[a], report, 0)
        row.update(align=a, build_s=seconds.get(f"build align {a}"), built_order=order.index(a) + 1,
                   noise_within_10pct=floor.get("within_10pct"), noise_within_5pct=floor.get("within_5pct"))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", default=CELLS, help="comma-separated model@CxHxW")
    ap.add_argument("--aligns", default="1,16", help="comma-separated alignments (the first one's table is validated)")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    from latency_models.profile import get_profile

    cpu = get_profile("cpu-ort").hardware
    out_dir = args.out_dir or RESULTS / f"grid-align-{re.sub(r'[^a-z0-9]+', '-', cpu.lower()).strip('-')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    aligns = [int(a) for a in args.aligns.split(",")]
    rows = []
    for i, cell in enumerate(c for c in args.cells.split(",") if c):
        rows += run_cell(i, cell, aligns, args.samples, args.seed, out_dir)
        (out_dir / "summary.json").write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1) + "\n")
    print("| cell | align | entries | built | within ±10% | within ±5% | Spearman | MAPE | noise ±10% / ±5% |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cell'].rsplit(' align', 1)[0]} | {r['align']} | {r['entries']} | {r['built_order']} "
              f"| {r['within_10pct']:.0%} | {r['within_5pct']:.0%} | {r['spearman']:.3f} | {r['mape']:.1%} "
              f"| {r['noise_within_10pct']:.0%} / {r['noise_within_5pct']:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

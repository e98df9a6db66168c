"""How many grid points per channel axis does a table need? (issues 12 and 14)

A table times each layer kernel at a grid of (in, out) channel counts and interpolates between
them; the table build is what a user's first search waits for. This bench thins each committed
lut_fidelity cell's table (bench/results/tables/) to the grid ``plan_grid`` would lay out with
``P`` points per axis, re-fits its remainder and per-kind kernel multipliers on the whole-model
timings the table stored (:func:`automl.profiling.stored_timings`; nothing is timed), and
predicts the cell's stored validation policies again, compared with their measured latency (a
cell measured ``--relative`` by its unscaled timings). Any CPU: nothing is timed.

A thinned table can only keep the points the built grid has: the P-point grid's points that the
built one shares (always each axis's first and last), so it is *sparser* than a real P-point
build — ``entries`` is what it kept, ``entries_of_grid`` what a P-point build would time. A
thinned table that predicts as well says the real P-point grid will too.

``python -m bench.grid_density --points 0,8,5,4`` (0: the table as built) writes
bench/results/grid_density.json; ``--pair TABLE REPORT`` does the same for any table and a
``hwcompress lut validate --out`` report of it (e.g. a 12-point table extended from a 5-point one
with ``hwcompress profile --grid-points 12``, against the 5-point table's report: the same
timings, two grids).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = "resnet20@1x32x32,mobilenetv2_050@1x32x32,vgg@1x32x32,mobilenetv2_100@3x224x224,resnet18@3x224x224"


def cell_files(cid: str, cell: dict[str, Any]) -> tuple[Path, Path]:
    """A lut_fidelity cell's table and its validation report."""
    from bench.lut_fidelity import table_file

    return table_file(cell), RESULTS / f"lut_fidelity_{cid.replace('@', '_')}.json"


def thinned_fidelity(label: str, table_path: Path, report_path: Path, points: int) -> dict[str, Any]:
    """The report's measured policies predicted by the table thinned to ``points`` per axis (0: all)."""
    from automl.core import Policy
    from automl.profiling import load_model_and_info, recalibrate
    from latency_models.grid import plan_grid
    from latency_models.predictor import Predictor, profile_of
    from latency_models.table import LatencyTable
    from latency_models.validate import fidelity_metrics

    report = json.loads(report_path.read_text())
    measured = [min(s["measured_ms_raw_passes"]) if s.get("measured_ms_raw_passes") else s["measured_ms"]
                for s in report["samples"]]
    table = LatencyTable.load(table_path)
    info = load_model_and_info(report["model"], tuple(report["input_shape"]), 10)[1]
    profile = profile_of(table)
    built = len(table.entries)
    grid_size = built
    if points:
        grid = {(plan.key, precision, cin, cout)
                for plan in plan_grid(info, profile.channel_step, points)
                for cin, cout in plan.points() for precision in profile.precisions}
        grid_size = len(grid)
        table.entries = {ident: e for ident, e in table.entries.items() if ident in grid}
        table.version += 1
    recalibrate(table, info.model_name, info=info)   # remainder + multipliers on the stored timings
    predictor = Predictor(table, warn=False)
    predicted = [predictor.predict(info, Policy.from_dict(s["policy"]))[0] for s in report["samples"]]
    m = fidelity_metrics(predicted, measured)
    return {"cell": label, "table": str(table_path), "points": points or "as built", "entries_built": built,
            "entries": len(table.entries), "entries_of_grid": grid_size, "within_10pct": m["within_10pct"],
            "within_5pct": m["within_5pct"], "spearman": m["spearman"], "mape": m["mape"],
            "policies": m["n"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="0,8,5,4", help="comma-separated points per axis (0: as built)")
    ap.add_argument("--cells", default=CELLS, help="comma-separated lut_fidelity cells")
    ap.add_argument("--pair", nargs=2, action="append", metavar=("TABLE", "REPORT"),
                    help="a table and a `hwcompress lut validate --out` report of it (repeatable), "
                         "instead of the cells")
    ap.add_argument("--out", default=str(RESULTS / "grid_density.json"))
    args = ap.parse_args(argv)
    if args.pair:
        jobs = [(Path(t).stem, Path(t), Path(r)) for t, r in args.pair]
    else:
        cells = json.loads((RESULTS / "lut_fidelity.json").read_text())["cells"]
        jobs = [(cid, *cell_files(cid, cells[cid])) for cid in args.cells.split(",")]
    rows = []
    for label, table_path, report_path in jobs:
        for p in (int(x) for x in args.points.split(",")):
            row = thinned_fidelity(label, table_path, report_path, p)
            rows.append(row)
            print(f"{label:28s} points {str(row['points']):8s} entries {row['entries']:4d} of {row['entries_of_grid']:4d}: "
                  f"±10% {row['within_10pct']:.0%}  ±5% {row['within_5pct']:.0%}  "
                  f"Spearman {row['spearman']:.3f}  MAPE {row['mape']:.1%}", flush=True)
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()

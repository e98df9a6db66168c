"""Does a longer whole-model timing budget raise the noise floor at 224×224? (issue 14, part 3)

    python -m bench.noise_floor_budget --table T [--model mobilenetv2_100] [--seeds 3,4]
                                       [--scales 1,3] [--samples 50] [--out-dir D] [--table-only]

For each seed, ``hwcompress lut validate`` (``automl.profiling.validate_model``: 2 passes, the
second in reverse) of the same table with every timing budget scaled by each of ``--scales``
(``HWCOMPRESS_TIMING_SCALE``; 1 = the protocol of the day, 3 = three times as long), the scales'
order alternating from seed to seed so neither is always the first on the machine. The noise
floor is the share of policies whose two passes agree within ±10% / ±5%
(:func:`latency_models.validate.repeatability`). One report per (seed, scale) under
``--out-dir`` (default ``bench/results/noise-floor-budget``); a cell already there is not run
again (resumable), ``--table-only`` only prints the rows.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "noise-floor-budget"


def cell_path(out_dir: Path, model: str, seed: int, scale: float) -> Path:
    return out_dir / f"{model}-seed{seed}-scale{scale:g}.json"


def run_cell(table_path: str, model: str, seed: int, scale: float, samples: int, out: Path) -> None:
    from automl.profiling import validate_model
    from latency_models.table import LatencyTable

    before = os.environ.get("HWCOMPRESS_TIMING_SCALE")
    os.environ["HWCOMPRESS_TIMING_SCALE"] = f"{scale:g}"   # read at every timing (sampling.budget_scale)
    try:
        validate_model(model, LatencyTable.load(table_path), samples=samples, seed=seed, passes=2,
                       json_out=out)
    finally:
        if before is None:
            os.environ.pop("HWCOMPRESS_TIMING_SCALE", None)
        else:
            os.environ["HWCOMPRESS_TIMING_SCALE"] = before


def row(path: Path) -> str:
    r = json.loads(path.read_text())
    nf = r["repeatability_raw"]
    return (f"| {path.stem} | {nf['within_10pct']:.0%} / {nf['within_5pct']:.0%} | "
            f"{nf['median_spread']:.1%} / {nf['max_spread']:.1%} | {r['within_10pct']:.0%} / "
            f"{r['within_5pct']:.0%} / {r['spearman']:.3f} | {r['measure_ms_per_policy'] / 1e3:.1f} s |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True, help="the latency table to validate (a profile of --model)")
    ap.add_argument("--model", default="mobilenetv2_100")
    ap.add_argument("--seeds", default="3,4")
    ap.add_argument("--scales", default="1,3")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    scales = [float(s) for s in args.scales.split(",")]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for k, seed in enumerate(seeds):
        for scale in (scales if k % 2 == 0 else list(reversed(scales))):
            out = cell_path(args.out_dir, args.model, seed, scale)
            if not args.table_only and not out.exists():
                run_cell(args.table, args.model, seed, scale, args.samples, out)
    print("| cell | noise floor ±10% / ±5% | pass spread median / max | predicted ±10% / ±5% / "
          "Spearman | per policy and pass (build + timing) |")
    print("|---|---|---|---|---|")
    for seed in seeds:
        for scale in scales:
            out = cell_path(args.out_dir, args.model, seed, scale)
            if out.exists():
                print(row(out))


if __name__ == "__main__":
    main()

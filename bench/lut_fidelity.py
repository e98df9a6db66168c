"""LUT fidelity benchmark (issue 3): predicted vs measured latency of random compressed models.

    python -m bench.lut_fidelity [--quick] [--models resnet20,vgg,mobilenetv2_050] [--samples N]

For each model at 1×32×32 input (``digits@32``: 1 channel, 32×32, used for every model), on this
CPU with ONNX Runtime, 1 intra-op thread, batch 1: build the table (``hwcompress profile``,
cached under bench/results/tables/ and resumed), then ``hwcompress lut validate``. Writes
bench/results/lut_fidelity.json and one scatter PNG per model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
INPUT_SHAPE = (1, 32, 32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="lenet5 only, quick grid, 10 samples")
    ap.add_argument("--models", default="resnet20,vgg,mobilenetv2_050")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    from latency_models.profile import get_profile
    from automl.profiling import profile_model, validate_model as validate

    models = ["lenet5"] if args.quick else args.models.split(",")
    samples = 10 if args.quick else args.samples
    out: dict = {"input_shape": list(INPUT_SHAPE), "threads": args.threads, "batch": 1,
                 "samples": samples, "quick": args.quick, "models": {}}
    profile = get_profile("cpu-ort", args.threads)
    for name in models:
        table_path = RESULTS / "tables" / f"{name}-{'quick' if args.quick else 'full'}.json"
        t0 = time.perf_counter()
        table = profile_model(name, INPUT_SHAPE, profile, table_path, quick=args.quick)
        profile_s = time.perf_counter() - t0
        rep = validate(name, table, samples, seed=0, json_out=RESULTS / f"lut_fidelity_{name}.json",
                       png_out=RESULTS / f"lut_fidelity_{name}.png")
        out["models"][name] = {k: v for k, v in rep.items() if k != "samples"}
        out["models"][name].update(profile_s=profile_s, table=str(table_path),
                                   table_entries=len(table.entries))
        (RESULTS / "lut_fidelity.json").write_text(json.dumps(out, indent=1))
        print(name, json.dumps({k: out["models"][name][k] for k in
                                ("n", "mape", "within_5pct", "within_10pct", "spearman",
                                 "predict_us_per_policy", "measure_ms_per_policy")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

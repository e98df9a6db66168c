"""Where int8 stops paying: uniform fp32 and int8 policies of one model at several widths, each
exported as deployed and timed interleaved with the unpruned fp32 graph.

    python -m bench.int8_width [--model mobilenetv2_050] [--input-shape 1x28x28]
                               [--keeps 1.0 0.75 0.5 0.41 0.3] [--budget-s 6]

Why (issue 12, the check search): a search at 0.35x on this Intel host answered all-fp32,
because its table priced int8 *slower* than fp32 at the widths the budget allows. This reads it
off the device directly: per keep ratio, fp32 and int8 latency as a fraction of the unpruned
graph, timed together (:func:`latency_models.sampling.sample_times`), random weights. Writes
``bench/results/int8_width.json`` (one row per model, input shape and hardware; a re-run
replaces it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .rows import save_row

RESULTS = Path(__file__).parent / "results" / "int8_width.json"


def run(model_name: str, input_shape: tuple[int, ...], keeps: list[float], budget_s: float) -> dict:
    from automl.profiling import (random_calibration, deployed_runner, load_model_and_info,
                                  uniform_policy)
    from latency_models.profile import get_profile
    from latency_models.sampling import sample_times

    profile = get_profile("cpu-ort", 1)
    model, info = load_model_and_info(model_name, input_shape, 10)
    calib = random_calibration(info.input_shape)
    reference = deployed_runner(model, uniform_policy(info, 1.0, "fp32"), info, profile, calib)
    points = []
    for keep in keeps:
        fp32 = deployed_runner(model, uniform_policy(info, keep, "fp32"), info, profile, calib)
        int8 = deployed_runner(model, uniform_policy(info, keep, "int8"), info, profile, calib)
        t32, t8, ref = sample_times([fp32.fns, int8.fns, reference.fns], budget_s)
        point = {"keep": keep, "fp32_ms": t32.uncontended_ms, "int8_ms": t8.uncontended_ms,
                 "reference_ms": ref.uncontended_ms,
                 "fp32_fraction": t32.uncontended_ms / ref.uncontended_ms,
                 "int8_fraction": t8.uncontended_ms / ref.uncontended_ms,
                 "int8_over_fp32": t8.uncontended_ms / t32.uncontended_ms}
        print(json.dumps({k: round(v, 4) for k, v in point.items()}), flush=True)
        points.append(point)
    return {"model": model_name, "input_shape": list(input_shape), "hardware": profile.hardware,
            "threads": 1, "budget_s": budget_s, "points": points}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenetv2_050")
    ap.add_argument("--input-shape", default="1x28x28")
    ap.add_argument("--keeps", nargs="+", type=float, default=[1.0, 0.75, 0.5, 0.41, 0.3])
    ap.add_argument("--budget-s", type=float, default=6.0, help="timing budget per width (all three graphs)")
    args = ap.parse_args(argv)
    shape = tuple(int(v) for v in args.input_shape.split("x"))
    row = run(args.model, shape, args.keeps, args.budget_s)
    save_row(RESULTS, row, keys=("model", "input_shape", "hardware"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the qdq-2 int8 export (2026-12-05) changed: the same policies exported the qdq-1 way and
the qdq-2 way, timed interleaved in one process.

    python -m bench.int8_export [--models resnet18@3x224x224 mobilenetv2_100@3x224x224
                                 mobilenetv2_050@1x28x28] [--policies 8] [--budget-s 4]

qdq-2 (:func:`latency_models.onnx_runtime.quantize_int8_qdq`) gives every node its own copy of a
shared initializer and lets float readers of a tensor quantized for an int8 layer read the float
tensor; qdq-1 is the same function with both passes switched off (``unittest.mock.patch`` on the
two helpers, the only difference between the versions). Both are timed in today's sessions,
which since qdq-3 leave ORT's WeightBiasQuantization out (the committed figures predate that). Per model: random mixed-precision
policies (``lut validate``'s sampler, seed 0; pruned, and unpruned with random precisions) and the all-int8 and all-fp32 unpruned models
(which neither pass can change: a control), random weights as the tables use. Writes
``bench/results/int8_export.json`` (one row per model, input shape and hardware).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from unittest import mock

from .rows import save_row

RESULTS = Path(__file__).parent / "results" / "int8_export.json"


def _qdq1():
    """qdq-2's two passes switched off: the export as it was before 2026-12-05."""
    import latency_models.onnx_runtime as ort_module

    stack = mock.patch.multiple(ort_module, unshare_initializers=lambda model: 0,
                                float_consumers_read_float=lambda model, nodes: 0)
    return stack


def run(name: str, shape: tuple[int, ...], policies: int, budget_s: float) -> dict:
    import numpy as np

    from automl.profiling import (random_calibration, deployed_runner, load_model_and_info,
                                  uniform_policy)
    from latency_models.profile import get_profile
    from latency_models.sampling import sample_times
    from latency_models.validate import sample_policy

    profile = get_profile("cpu-ort", 1)
    model, info = load_model_and_info(name, shape, 10)
    calib = random_calibration(info.input_shape)
    rng = np.random.default_rng(0)
    cases = [("fp32", uniform_policy(info, 1.0, "fp32")), ("int8", uniform_policy(info, 1.0, "int8"))]
    cases += [("mixed", sample_policy(info, rng, "mixed", min_keep=0.25)[0]) for _ in range(policies)]
    # unpruned: every layer keeps its width, so many share a channel count (and a folded bias)
    cases += [("mixed-unpruned", sample_policy(info, rng, "mixed", min_keep=1.0)[0]) for _ in range(policies)]
    points = []
    for mode, policy in cases:
        with _qdq1():
            old = deployed_runner(model, policy, info, profile, calib)
        new = deployed_runner(model, policy, info, profile, calib)
        t_old, t_new = sample_times([old.fns, new.fns], budget_s)
        point = {"mode": mode, "qdq1_ms": t_old.uncontended_ms, "qdq2_ms": t_new.uncontended_ms,
                 "qdq2_over_qdq1": t_new.uncontended_ms / t_old.uncontended_ms}
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in point.items()}),
              flush=True)
        points.append(point)
    row = {"model": name, "input_shape": list(shape), "hardware": profile.hardware, "threads": 1,
           "budget_s": budget_s, "points": points}
    for mode in ("mixed", "mixed-unpruned"):
        ratios = [p["qdq2_over_qdq1"] for p in points if p["mode"] == mode]
        row[f"{mode}_ratio_median"] = float(np.median(ratios))
        row[f"{mode}_ratio_range"] = [min(ratios), max(ratios)]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+",
                    default=["resnet18@3x224x224", "mobilenetv2_100@3x224x224", "mobilenetv2_050@1x28x28"])
    ap.add_argument("--policies", type=int, default=5, help="random mixed policies per model, pruned and unpruned each")
    ap.add_argument("--budget-s", type=float, default=4.0, help="timing budget per policy (both graphs)")
    args = ap.parse_args(argv)
    for spec in args.models:
        name, _, shape = spec.partition("@")
        row = run(name, tuple(int(v) for v in shape.split("x")), args.policies, args.budget_s)
        save_row(RESULTS, row, keys=("model", "input_shape", "hardware"))
        print(json.dumps({k: v for k, v in row.items() if k == "model" or "ratio" in k}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the remainder's boundary term must explain for mixed int8/fp32 policies (issue 14): no
new measurement, the stored fidelity samples and tables of this CPU re-read.

    python -m bench.mixed_residual [--models mobilenetv2_100@3x224x224 resnet18@3x224x224]

Per model: the boundary slope each mixed calibration point of the table implies, the slope the
table fitted, and, over the validation's mixed policies, how well candidate features (boundary
volume, the number of precision switches, fp32 kernel time after an int8 layer) explain the
residual measured − overhead − kernels − uniform remainder (a line through the origin each;
mean absolute error). A diagnostic for the next remainder model, not a target.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def run(name: str, shape: tuple[int, ...]) -> dict:
    from automl.core import Policy
    from automl.profiling import load_model_and_info
    from latency_models.predictor import ModelPlan, Predictor, RemainderModel
    from latency_models.table import LatencyTable
    from latency_models.validate import table_profile

    tag = f"{name}_{'x'.join(map(str, shape))}"
    table = LatencyTable.load(RESULTS / "tables" / f"{name}-{'x'.join(map(str, shape))}-full.json")
    profile = table_profile(table)
    info = load_model_and_info(name, shape, 10)[1]
    rows = table.remainders_for(name, shape)
    model = RemainderModel.fit(rows)
    calib_slopes = [(r.remainder_ms - model.uniform_at(r.act_ratio, r.int8_fraction)) / r.boundary_ratio
                    for r in rows if r.boundary_ratio > 0]
    pred = Predictor(table, profile, warn=False)
    plan = ModelPlan(info, profile.channel_step)
    feats, resid = [], []
    for s in json.loads((RESULTS / f"lut_fidelity_{tag}.json").read_text())["samples"]:
        if s["mode"] != "mixed":
            continue
        shapes = plan.shapes(Policy.from_dict(s["policy"]))
        act, q, boundary = plan.features(shapes, pred.precision)
        kernels = sum(pred.layer_cost(k, pred.precision(w, a), ci, co)[0] for k, ci, co, w, a, _, _ in shapes)
        resid.append(s["measured_ms"] - table.overhead_ms - kernels - model.uniform_at(act, q))
        prev, switches, island = None, 0, 0.0
        for k, ci, co, w, a, _, _ in shapes:
            p = pred.precision(w, a)
            if p == "fp32" and prev == "int8":
                island += pred.layer_cost(k, p, ci, co)[0]
            switches += prev is not None and p != prev
            prev = p
        feats.append((boundary, switches, island))
    x, y = np.asarray(feats, float), np.asarray(resid)
    out = {"model": name, "input_shape": list(shape), "fitted_slope_ms": model.ms_per_boundary,
           "calibration_slopes_ms": sorted(round(v, 3) for v in calib_slopes), "mixed_policies": len(y)}
    for j, feature in enumerate(("boundary_volume", "precision_switches", "fp32_after_int8_kernel_ms")):
        k = float(x[:, j] @ y / (x[:, j] @ x[:, j]))
        out[feature] = {"slope": k, "mean_abs_error_ms": float(np.mean(np.abs(k * x[:, j] - y))),
                        "corr": float(np.corrcoef(x[:, j], y)[0, 1])}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv2_100@3x224x224", "resnet18@3x224x224"])
    args = ap.parse_args(argv)
    for spec in args.models:
        name, _, shape = spec.partition("@")
        print(json.dumps(run(name, tuple(int(v) for v in shape.split("x")))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

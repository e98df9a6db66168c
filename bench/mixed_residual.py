"""What the remainder's boundary term must explain for mixed int8/fp32 policies (issue 14): no
new measurement, the stored fidelity samples and tables of this CPU re-read.

    python -m bench.mixed_residual [--models mobilenetv2_100@3x224x224 resnet18@3x224x224
                                    resnet20@1x32x32 mobilenetv2_050@1x32x32]

Per model: the boundary slope each mixed calibration point of the table implies, the slope the
table fitted, and, over the validation's mixed policies, how well candidate features (boundary
volume, the number of precision switches, fp32 kernel time after an int8 layer) explain the
residual measured − overhead − kernels − uniform remainder (a line through the origin each;
mean absolute error); and, on the table's own mixed calibration points, leave-one-out errors of
the boundary-only remainder against the one used now (boundary + int8 slowdown). A diagnostic
for choosing the remainder model, not a target.
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
    out_loo = leave_one_out(rows)
    x, y = np.asarray(feats, float), np.asarray(resid)
    out = {"model": name, "input_shape": list(shape), "fitted_slope_ms": model.ms_per_boundary,
           "calibration_slopes_ms": sorted(round(v, 3) for v in calib_slopes), "mixed_policies": len(y)}
    for j, feature in enumerate(("boundary_volume", "precision_switches", "fp32_after_int8_kernel_ms")):
        k = float(x[:, j] @ y / (x[:, j] @ x[:, j]))
        out[feature] = {"slope": k, "mean_abs_error_ms": float(np.mean(np.abs(k * x[:, j] - y))),
                        "corr": float(np.corrcoef(x[:, j], y)[0, 1])}
    out["leave_one_out"] = out_loo
    return out


def leave_one_out(rows: list) -> dict:
    """Each mixed calibration point of the table predicted by the remainder fitted on all the
    others, two ways: the boundary term alone (median slope, the model before 2026-12-06) and the
    model used now (boundary + int8 slowdown, trimmed non-negative least squares). Mean relative
    error of the whole-model latency, and the share within ±10%."""
    from dataclasses import replace

    import numpy as np

    from latency_models.predictor import RemainderModel

    mixed = [r for r in rows if r.boundary_ratio > 0]
    if not mixed or any(r.int8_kernels_ms is None for r in mixed):
        return {"skipped": "the table's mixed points carry no int8_kernels_ms (re-time its remainders)"}
    errors: dict[str, list[float]] = {"boundary_median_slope": [], "boundary_and_int8_nnls": []}
    for i, r in enumerate(mixed):
        others = [o for o in rows if o is not r]
        for label, fit_rows in (("boundary_median_slope", [replace(o, int8_kernels_ms=None) for o in others]),
                                ("boundary_and_int8_nnls", others)):
            rem = RemainderModel.fit(fit_rows).at(r.act_ratio, r.int8_fraction, r.boundary_ratio,
                                                  r.int8_kernels_ms)
            whole = r.whole_ms - r.remainder_ms + rem
            errors[label].append(abs(whole / r.whole_ms - 1))
    return {label: {"mean_rel_error": float(np.mean(e)), "within_10pct": float(np.mean(np.array(e) <= 0.1)),
                    "points": len(e)} for label, e in errors.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv2_100@3x224x224", "resnet18@3x224x224",
                                                    "resnet20@1x32x32", "mobilenetv2_050@1x32x32"])
    args = ap.parse_args(argv)
    for spec in args.models:
        name, _, shape = spec.partition("@")
        print(json.dumps(run(name, tuple(int(v) for v in shape.split("x")))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

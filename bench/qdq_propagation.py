"""What leaving out ORT's ``QDQPropagationTransformer`` (qdq-4) changes in deployed latency.

    python -m bench.qdq_propagation [--models vgg@1x32x32] [--policies 14]

Per model: the first ``--policies`` mixed-precision policies stored by ``lut validate``
(bench/results/lut_fidelity_<model>_<input>.json) exported once as deployed, then run in two
kinds of session timed interleaved (``latency_models.sampling.sample_times``, 2 sessions each):
the qdq-3 ones (only ``WeightBiasQuantization`` left out) and today's (:data:`DISABLED_OPTIMIZERS`).
With the transformer, an fp32 conv → MaxPool → int8 conv chain runs its MaxPool on uint8 NCHW
tensors; without it, on float NCHWc ones. Also counts the policies whose optimised graph
differs. Writes ``bench/results/qdq_propagation.json`` (one row per model, input shape and
hardware; a later run replaces it). Random weights: latency only.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from .rows import save_row

RESULTS = Path(__file__).parent / "results"
QDQ3_DISABLED = ("WeightBiasQuantization",)


def run(name: str, shape: tuple[int, ...], policies: int) -> dict:
    from automl.compress import apply_policy, export_deployable
    from automl.core import Policy
    from automl.profiling import load_model_and_info, random_calibration
    from latency_models.onnx_runtime import DISABLED_OPTIMIZERS, optimized_graph, session_callables
    from latency_models.profile import get_profile
    from latency_models.sampling import sample_model_times

    tag = "x".join(map(str, shape))
    samples = json.loads((RESULTS / f"lut_fidelity_{name}_{tag}.json").read_text())["samples"]
    mixed = [s for s in samples if s["mode"] == "mixed"][:policies]
    model, info = load_model_and_info(name, shape, 10)
    calib = random_calibration(shape)
    step = get_profile("cpu-ort").channel_step
    rows = []
    for s in mixed:
        policy = Policy.from_dict(s["policy"])
        onnx_bytes = export_deployable(apply_policy(model, policy, info, calib, channel_step=step),
                                       policy, info, shape, calib)
        graphs = [[n.op_type for n in optimized_graph(onnx_bytes, disabled_optimizers=d).graph.node]
                  for d in (QDQ3_DISABLED, DISABLED_OPTIMIZERS)]
        groups = [session_callables(onnx_bytes, shape, 1, 1, 2, disabled_optimizers=disabled)
                  for disabled in (QDQ3_DISABLED, DISABLED_OPTIMIZERS)]
        qdq3, qdq4 = sample_model_times(groups)
        precisions = "".join("8" if lp.w_bits <= 8 else "F" for lp in policy.layers.values())
        rows.append({"precisions": precisions, "graph_differs": graphs[0] != graphs[1],
                     "qdq3_ms": qdq3.uncontended_ms, "qdq4_ms": qdq4.uncontended_ms,
                     "ratio": qdq4.uncontended_ms / qdq3.uncontended_ms})
        print(json.dumps(rows[-1]), flush=True)
    differ = [r["ratio"] for r in rows if r["graph_differs"]]
    same = [r["ratio"] for r in rows if not r["graph_differs"]]
    return {"model": name, "input_shape": list(shape), "hardware": get_profile("cpu-ort").hardware,
            "policies": len(rows), "graph_differs": len(differ),
            "ratio_median_differs": statistics.median(differ) if differ else None,
            "ratio_range_differs": [min(differ), max(differ)] if differ else None,
            "ratio_median_same": statistics.median(same) if same else None,
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["vgg@1x32x32"])
    ap.add_argument("--policies", type=int, default=14)
    args = ap.parse_args(argv)
    for spec in args.models:
        name, _, shape = spec.partition("@")
        row = run(name, tuple(int(v) for v in shape.split("x")), args.policies)
        print(json.dumps({k: v for k, v in row.items() if k != "rows"}))
        save_row(RESULTS / "qdq_propagation.json", row, keys=("model", "input_shape", "hardware"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

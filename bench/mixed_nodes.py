"""Where a mixed int8/fp32 policy's time goes, node by node, against what the table charges for
it (issue 14: mixed policies predict worse than uniform ones at 224).

    python -m bench.mixed_nodes [--models mobilenetv2_100@3x224x224 resnet18@3x224x224]
                                [--per-mode 6]

Per model: up to ``--per-mode`` of the stored ``lut validate`` samples of each mode (fp32, int8,
mixed; bench/results/lut_fidelity_<model>_<input>.json) are exported as deployed and run under
ORT's per-node profiler (:func:`latency_models.onnx_runtime.profile_op_times`). Per policy it
sets the table's charges beside what the optimised graph ran: Σ fp32 layer entries vs the time
in fp32 convs (``Conv`` / ``FusedConv``), Σ int8 entries vs ``QLinearConv``, the predicted
remainder vs the glue ops (``QuantizeLinear``, ``DequantizeLinear``, ``ReorderInput/Output``,
``Transpose``), and, per int8 layer (QLinearConv nodes carry their layer's name), its node
time over its entry by where it sits: in an all-int8 graph, or in a mixed one after and before
layers of which precision. The profiler adds a cost per node (its run is slower than the unprofiled
timing), so ratios of node times are the figures, not absolute milliseconds. A diagnostic for
the next remainder model, not a target. Writes ``bench/results/mixed_nodes.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .rows import save_row

RESULTS = Path(__file__).parent / "results"
FP32_CONV = ("Conv", "FusedConv")
FLOAT_KERNELS = FP32_CONV + ("Gemm", "FusedGemm", "MatMul")
INT8_CONV = ("QLinearConv",)
GLUE = ("QuantizeLinear", "DequantizeLinear", "ReorderInput", "ReorderOutput", "Transpose")


def module_path(node_name: str) -> str:
    """The module an exported node came from: ``/features/features.8/conv/conv.3/Conv_token_9``
    → ``features.8.conv.3`` (the exporter's scopes repeat their parent's prefix, or not)."""
    stack: list[tuple[str, str]] = []          # (full name, scope segment)
    for seg in [s for s in node_name.split("/") if s][:-1]:
        if stack and seg.startswith(stack[-1][1] + "."):
            stack.pop()                         # a sibling path: features.0 after features
        parent = stack[-1][0] if stack else ""
        full = seg if not parent or seg.startswith(parent + ".") else f"{parent}.{seg}"
        stack.append((full, seg))
    return stack[-1][0] if stack else ""


def int8_context(rows: list[dict]) -> dict:
    """Σ QLinearConv node time / Σ its int8 entries, over all-int8 graphs and, in mixed graphs,
    by the precision of the layer before and after (execution order of the traced layers)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        ctx = "all-int8 graph" if r["mode"] == "int8" else f"mixed graph, before {r['prev']}, after {r['next']}"
        groups.setdefault(ctx, []).append(r)
    return {ctx: {"layers": len(v), "nodes_over_entries": round(sum(r["node_ms"] for r in v)
                                                                / sum(r["entry_ms"] for r in v), 3)}
            for ctx, v in sorted(groups.items())}


def run(name: str, shape: tuple[int, ...], per_mode: int) -> dict:
    import numpy as np

    from automl.compress import apply_policy, export_deployable
    from automl.core import Policy
    from automl.profiling import load_model_and_info, random_calibration
    from latency_models.onnx_runtime import INT8_EXPORT, profile_op_times
    from latency_models.predictor import Predictor
    from latency_models.table import LatencyTable
    from latency_models.validate import table_profile

    tag = "x".join(map(str, shape))
    table = LatencyTable.load(RESULTS / "tables" / f"{name}-{tag}-full.json")
    profile = table_profile(table)
    model, info = load_model_and_info(name, shape, 10)
    calib = random_calibration(shape)
    pred = Predictor(table, profile, warn=False)
    plan = pred.plan(info)
    samples = json.loads((RESULTS / f"lut_fidelity_{name}_{tag}.json").read_text())["samples"]
    chosen = [s for mode in ("fp32", "int8", "mixed") for s in [s for s in samples if s["mode"] == mode][:per_mode]]
    layer_index = {layer.name: j for j, layer in enumerate(info.layers)}
    policies, int8_layers = [], []
    for s in chosen:
        policy = Policy.from_dict(s["policy"])
        shapes = plan.shapes(policy)
        precisions = [pred.precision(w, a) for _, _, _, w, a, _, _ in shapes]
        all_entries_ms, _, int8_entries_ms = pred.kernel_sums(info, policy)
        fp32_entries_ms = all_entries_ms - int8_entries_ms
        compressed = apply_policy(model, policy, info, calib, channel_step=profile.channel_step)
        times = profile_op_times(export_deployable(compressed, policy, info, shape, calib), shape,
                                 profile.threads)
        ops = times.op_ms
        for node, op, ms in times.nodes:
            j = layer_index.get(module_path(node)) if op == "QLinearConv" else None
            if j is None:          # float convs carry their fused activation's name: not mapped
                continue
            key, cin, cout = shapes[j][:3]
            int8_layers.append({"mode": s["mode"], "node_ms": ms,
                                "entry_ms": pred.layer_cost(key, "int8", cin, cout)[0],
                                "prev": precisions[j - 1] if j else "input",
                                "next": precisions[j + 1] if j + 1 < len(precisions) else "output"})
        policies.append({
            "mode": s["mode"], "measured_ms": s["measured_ms"], "predicted_ms": s["predicted_ms"],
            "fp32_entries_ms": fp32_entries_ms, "int8_entries_ms": int8_entries_ms,
            # a policy's fp32 layers against the float kernels the optimised graph runs (ORT's
            # WeightBiasQuantization turned fp32 layers between int8 ones into int8 before qdq-3)
            "policy_fp32_layers": precisions.count("fp32"),
            "graph_float_kernels": sum(times.op_count.get(o, 0) for o in FLOAT_KERNELS),
            "remainder_ms": pred.remainder_ms(info, policy),
            "fp32_conv_nodes_ms": sum(ops.get(o, 0.0) for o in FP32_CONV),
            "int8_conv_nodes_ms": sum(ops.get(o, 0.0) for o in INT8_CONV),
            "glue_nodes_ms": sum(ops.get(o, 0.0) for o in GLUE),
            "other_nodes_ms": sum(v for o, v in ops.items() if o not in FP32_CONV + INT8_CONV + GLUE),
            "profiled_run_ms": times.run_ms, "op_ms": ops, "op_count": times.op_count})

    def med(rows: list[dict], f) -> float | None:
        vals = [f(r) for r in rows]
        vals = [v for v in vals if v is not None]
        return round(float(np.median(vals)), 3) if vals else None

    summary = {}
    for mode in ("fp32", "int8", "mixed"):
        rows = [r for r in policies if r["mode"] == mode]
        if not rows:
            continue
        summary[mode] = {
            "policies": len(rows),
            "error_pct": med(rows, lambda r: 100 * (r["predicted_ms"] / r["measured_ms"] - 1)),
            "fp32_nodes_over_entries": med(rows, lambda r: r["fp32_conv_nodes_ms"] / r["fp32_entries_ms"]
                                           if r["fp32_entries_ms"] else None),
            "int8_nodes_over_entries": med(rows, lambda r: r["int8_conv_nodes_ms"] / r["int8_entries_ms"]
                                           if r["int8_entries_ms"] else None),
            "glue_share_of_nodes": med(rows, lambda r: r["glue_nodes_ms"] / sum(
                r[k] for k in ("fp32_conv_nodes_ms", "int8_conv_nodes_ms", "glue_nodes_ms", "other_nodes_ms"))),
            "remainder_ms": med(rows, lambda r: r["remainder_ms"]),
            "glue_nodes_ms": med(rows, lambda r: r["glue_nodes_ms"]),
            "profiled_over_measured": med(rows, lambda r: r["profiled_run_ms"] / r["measured_ms"]),
            "fp32_layers_not_run_fp32": [r["policy_fp32_layers"] - r["graph_float_kernels"] for r in rows],
        }
    return {"model": name, "input_shape": list(shape), "hardware": table.metadata.hardware,
            "int8_export": INT8_EXPORT,     # the sessions this run used (the table's may be older)
            "summary": summary,
            "int8_layers_in_context": int8_context(int8_layers), "policies": policies}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv2_100@3x224x224", "resnet18@3x224x224"])
    ap.add_argument("--per-mode", type=int, default=6, help="stored samples per mode (fp32, int8, mixed)")
    args = ap.parse_args(argv)
    for spec in args.models:
        name, _, shape = spec.partition("@")
        row = run(name, tuple(int(v) for v in shape.split("x")), args.per_mode)
        save_row(RESULTS / "mixed_nodes.json", row, keys=("model", "input_shape", "hardware", "int8_export"))
        print(json.dumps({"model": spec, **row["summary"], **row["int8_layers_in_context"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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


def _deployment_check() -> dict:
    """Whether ``automl.compress.export_deployable`` quantizes every int8 layer. Its node
    matching compared the exporter's last scope name (``conv1``) with full module names
    (``layer1.0.conv1``), which left conv2/shortcut layers fp32 in "int8" models. If that is
    still so, patch the matcher for this benchmark (reported in the JSON) so the measured models
    are what the policies say."""
    import onnx
    from automl import compress

    from latency_models.profiler import load_model_and_info
    from latency_models.onnx_runtime import export_onnx

    model, info = load_model_and_info("resnet20", INPUT_SHAPE, 10)
    fp32 = export_onnx(model, INPUT_SHAPE)
    names = [l.name for l in info.layers]
    found = compress._onnx_nodes_for_layers(fp32, names)
    if len(found) == len(names):
        return {"export_deployable_shim": False}

    def module_path(node_name: str) -> str:
        full: list[str] = []
        prev = None
        for comp in node_name.strip("/").split("/")[:-1]:
            full.append(comp[len(prev) + 1:] if prev and comp.startswith(prev + ".") else comp)
            prev = comp
        return ".".join(full)

    def nodes_for_layers(onnx_bytes: bytes, layers):
        wanted = set(layers)
        return [n.name for n in onnx.load_from_string(onnx_bytes).graph.node
                if n.op_type in ("Conv", "Gemm", "MatMul") and module_path(n.name) in wanted]

    compress._onnx_nodes_for_layers = nodes_for_layers
    return {"export_deployable_shim": True,
            "why": f"automl.compress._onnx_nodes_for_layers matched {len(found)} of {len(names)} "
                   "ResNet-20 layers; patched for this run"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="lenet5 only, quick grid, 10 samples")
    ap.add_argument("--models", default="resnet20,vgg,mobilenetv2_050")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    from latency_models.profile import get_profile
    from latency_models.profiler import profile_model
    from latency_models.validate import validate

    models = ["lenet5"] if args.quick else args.models.split(",")
    samples = 10 if args.quick else args.samples
    out: dict = {"input_shape": list(INPUT_SHAPE), "threads": args.threads, "batch": 1,
                 "samples": samples, "quick": args.quick, **_deployment_check(), "models": {}}
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

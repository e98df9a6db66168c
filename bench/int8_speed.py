"""Our full-int8 export vs ONNX Runtime's own ``quantize_static`` of the same fp32 graph.

    python -m bench.int8_speed [--models resnet20 mobilenetv2_050] [--rounds 5]

Both are calibrated on the same 64 real MNIST images; the three graphs (fp32, ours, ORT's) are
timed side by side in one process, alternating fresh sessions each round (the machine drifts
minutes apart, the ratio holds). Target (issue 12): ours ≤ 1.05× ORT's int8, and faster than
fp32. Writes ``bench/results/int8_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import onnx
import torch

from automl.data import load_dataset
from automl.models import build_model
from latency_models.onnx_runtime import export_onnx, measure_onnx_latency, quantize_int8_qdq

from automl.peers import ort_quantize_static

RESULTS = Path(__file__).parent / "results" / "int8_speed.json"
MNIST = "mnist:" + str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz")


def run(model_name: str, data_spec: str, rounds: int) -> dict:
    data = load_dataset(data_spec, seed=0, max_train=1000)
    torch.manual_seed(0)
    model = build_model(model_name, data.in_channels, data.num_classes).eval()
    shape = data.input_shape
    calib = data.x_train[:64].numpy()
    fp32 = export_onnx(model, shape)
    computes = [n.name for n in onnx.load_from_string(fp32).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    graphs = {"fp32": fp32, "ours": quantize_int8_qdq(fp32, [calib], int8_compute=computes),
              "ort": ort_quantize_static(fp32, calib)}
    samples: dict[str, list[float]] = {k: [] for k in graphs}
    for _ in range(rounds):
        for name, g in graphs.items():
            samples[name].append(measure_onnx_latency(g, shape).uncontended_ms)
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = [o / p for o, p in zip(samples["ours"], samples["ort"])]
    return {"model": model_name, "input_shape": list(shape), "rounds": rounds,
            "fp32_ms": med["fp32"], "ours_ms": med["ours"], "ort_ms": med["ort"],
            "ours_over_ort": statistics.median(ratios), "ours_over_fp32": med["ours"] / med["fp32"],
            "ort_over_fp32": med["ort"] / med["fp32"], "samples_ms": samples}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2_050"])
    p.add_argument("--data", default=MNIST)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    rows = [run(m, args.data, args.rounds) for m in args.models]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1))
    print("| model | fp32 ms | ours int8 ms | ORT quantize_static ms | ours / ORT | ours / fp32 | target ≤1.05× ORT and < fp32 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        met = r["ours_over_ort"] <= 1.05 and r["ours_over_fp32"] < 1
        print(f"| {r['model']} | {r['fp32_ms']:.3f} | {r['ours_ms']:.3f} | {r['ort_ms']:.3f} | "
              f"{r['ours_over_ort']:.2f}× | {r['ours_over_fp32']:.2f}× | {'met' if met else 'MISSED'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

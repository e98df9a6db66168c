"""Does this CPU's int8 GEMM saturate, and what does it cost a trained model's accuracy?

    python -m bench.int8_saturation [--model vgg] [--data digits@32] [--epochs 10]

On x86 without VNNI ONNX Runtime's u8×s8 kernel adds pairs of products into an int16 and clamps
(:func:`latency_models.onnx_runtime.int8_gemm_saturates`). For the trained model (the project's
cached baseline, trained on first use) this scores on the test split: the fp32 graph, ORT
``quantize_static`` with 8-bit weights (its default) and with ``reduce_range`` (7-bit weights, what
ORT's documentation advises there), and how far each int8 graph's fused kernels land from ORT's
own unfused QDQ reference (optimizations off) on 64 test images. Writes
``bench/results/int8_saturation.json``.
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from automl.peers import ort_quantize_static
from automl.train import evaluate_onnx_accuracy
from automl.workflow import load_trained
from latency_models.onnx_runtime import export_onnx, int8_gemm_saturates, make_session
from latency_models.profile import get_profile

RESULTS = Path(__file__).parent / "results" / "int8_saturation.json"


def logits(model: bytes, x: np.ndarray, optimized: bool) -> np.ndarray:
    sess = make_session(model, threads=1, optimized=optimized)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vgg")
    p.add_argument("--data", default="digits@32")
    p.add_argument("--epochs", type=int, default=10, help="baseline training epochs (the demo's: 10)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    loaded = load_trained(args.model, args.data, epochs=args.epochs, progress=False)
    d = loaded.data
    fp32 = export_onnx(loaded.model, d.input_shape)
    calib = torch.cat(d.calibration_batches()).numpy()
    x_probe = d.x_test[:64].numpy()
    row: dict = {"model": args.model, "data": args.data, "cpu": get_profile("cpu-ort").hardware,
                 "onnxruntime": version("onnxruntime"), "int8_gemm_saturates": int8_gemm_saturates(),
                 "test_images": len(d.y_test),
                 "fp32_accuracy": evaluate_onnx_accuracy(fp32, d.x_test, d.y_test, limit=None, threads=1)}
    for name, reduce in (("ort_int8_8bit_weights", False), ("ort_int8_7bit_weights", True)):
        q = ort_quantize_static(fp32, calib, reduce_range=reduce)
        gap = np.abs(logits(q, x_probe, True) - logits(q, x_probe, False)).max()
        row[name] = {"accuracy": evaluate_onnx_accuracy(q, d.x_test, d.y_test, limit=None, threads=1),
                     "max_logit_gap_fused_vs_reference": float(gap)}
    print(json.dumps(row, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

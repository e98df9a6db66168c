"""The compress workflow shared by the CLI, the demo and the service: load a trained model and its
data, apply a policy, and measure both models the way every figure in the project is measured
(accuracy on the test set; latency in ONNX Runtime on this CPU, batch 1)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latency_models.onnx_runtime import export_onnx, int8_weight_bits, measure_onnx_latency

from .compress import apply_policy, export_deployable, model_cost
from .core import ModelInfo, Policy
from .data import DatasetSplits, load_dataset
from .models import build_model, load_weights
from .space import trace_model
from .train import evaluate_accuracy, finetune, pretrained_model


@dataclass
class LoadedModel:
    """A trained model, its data and its traced layers: the inputs of every job."""

    name: str
    model: nn.Module
    data: DatasetSplits
    info: ModelInfo


def load_trained(model_name: str, data_spec: str, seed: int = 0, epochs: int = 10,
                 weights: str | None = None, allow_import: bool = False,
                 progress: bool = True, max_train: int | None = None) -> LoadedModel:
    """The model trained on ``data_spec`` (cached), or built and loaded from ``weights``."""
    data = load_dataset(data_spec, seed=seed, max_train=max_train)
    if weights:
        model = load_weights(build_model(model_name, data.in_channels, data.num_classes,
                                         allow_import=allow_import), weights).eval()
    else:
        model = pretrained_model(model_name, data, seed=seed, epochs=epochs, progress=progress,
                                 allow_import=allow_import)
    return LoadedModel(model_name, model, data, trace_model(model, data.input_shape, model_name))


def measure_model(model: nn.Module, data: DatasetSplits, policy: Policy | None = None,
                  onnx_bytes: bytes | None = None, threads: int = 1) -> dict[str, Any]:
    """Accuracy (test set), computed costs and measured ORT latency of one model."""
    cost = model_cost(model, data.input_shape, policy)
    onnx_bytes = onnx_bytes if onnx_bytes is not None else export_onnx(model, data.input_shape)
    timing = measure_onnx_latency(onnx_bytes, data.input_shape, threads=threads)
    return {"accuracy": evaluate_accuracy(model, data.x_test, data.y_test), **cost.to_dict(),
            "latency_ms_measured": timing.uncontended_ms, "latency_ms_iqr": timing.iqr_ms}


def compress_with_policy(loaded: LoadedModel, policy: Policy, out_dir: str | Path | None = None,
                         channel_step: int = 1, finetune_epochs: float = 0.0, seed: int = 0,
                         threads: int = 1) -> dict[str, Any]:
    """Apply ``policy``, optionally fine-tune, measure original vs compressed, write
    ``result.json`` and ``compressed.onnx`` (the deployable model) to ``out_dir``."""
    t0 = time.perf_counter()
    calib = loaded.data.calibration_batches()
    policy = policy.validate(loaded.info)
    compressed = apply_policy(loaded.model, policy, loaded.info, calib, channel_step=channel_step)
    acc_before_ft = evaluate_accuracy(compressed, loaded.data.x_test, loaded.data.y_test)
    if finetune_epochs > 0:
        finetune(compressed, loaded.data, epochs=finetune_epochs, seed=seed)
    deployable = export_deployable(compressed, policy, loaded.info, loaded.data.input_shape, calib)
    result = {
        "model": loaded.name,
        "dataset": loaded.data.name,
        "policy": policy.to_dict(),
        "channel_step": channel_step,
        "threads": threads,
        "original": measure_model(loaded.model, loaded.data, threads=threads),
        "compressed": {**measure_model(compressed, loaded.data, policy, deployable, threads),
                       "accuracy_before_finetune": acc_before_ft,
                       "finetune_epochs": finetune_epochs,
                       "int8_weight_bits": int8_weight_bits(deployable)},
    }
    result["wall_s"] = time.perf_counter() - t0
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compressed.onnx").write_bytes(deployable)
        torch.save(compressed.state_dict(), out / "compressed_state_dict.pt")
        (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def format_comparison(result: dict[str, Any]) -> str:
    """A before/after table for the terminal."""
    o, c = result["original"], result["compressed"]
    rows = [("accuracy (test)", f"{o['accuracy']:.4f}", f"{c['accuracy']:.4f}"),
            ("MACs", f"{o['macs']:,}", f"{c['macs']:,}"),
            ("params", f"{o['params']:,}", f"{c['params']:,}"),
            ("size_mb", f"{o['size_mb']:.4f}", f"{c['size_mb']:.4f}"),
            ("latency_ms_measured (ORT, CPU, b=1)", f"{o['latency_ms_measured']:.4f}",
             f"{c['latency_ms_measured']:.4f}")]
    w = max(len(r[0]) for r in rows)
    lines = [f"{'':{w}}  {'original':>14}  {'compressed':>14}"]
    lines += [f"{a:{w}}  {b:>14}  {d:>14}" for a, b, d in rows]
    return "\n".join(lines)

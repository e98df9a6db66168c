"""Baselines for the benches, trained until validation stops improving (``automl.train.
train_until_plateau``) and cached as a weights file, which every method then starts from by
``--weights``, as a user with a model trained elsewhere does.

    python -m bench.baselines --models mobilenetv2_050 resnet20 --data mnist:PATH [--max-train N]

Each baseline's record (epochs run, the epoch kept, validation and test accuracy, wall time) sits
beside its weights as JSON and is what BENCHMARKS.md states for a figure made on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch

from automl.data import dataset_fingerprint, load_dataset
from automl.models import build_model
from automl.train import architecture_fingerprint, cache_dir, evaluate_accuracy, train_until_plateau

log = logging.getLogger("bench.baselines")


def plateau_baseline_path(model_name: str, data_spec: str, seed: int, max_train: int | None) -> Path:
    """Where the plateau-trained baseline of (model, data content, training images, seed) lives."""
    n = "" if max_train is None else f"-n{max_train}"
    probe = build_model(model_name, 1, 10)
    return (cache_dir() / "baselines"
            / f"{model_name}-{architecture_fingerprint(probe)}-{dataset_fingerprint(data_spec)}{n}-s{seed}-plateau.safetensors")


def plateau_baseline(model_name: str, data_spec: str, seed: int = 0, max_train: int | None = None,
                     max_epochs: int = 40, patience: int = 3) -> tuple[Path, dict]:
    """The weights file and its record, trained on first use."""
    from safetensors.torch import save_file

    path = plateau_baseline_path(model_name, data_spec, seed, max_train)
    record_path = path.with_suffix(".json")
    if path.is_file() and record_path.is_file():
        return path, json.loads(record_path.read_text())
    data = load_dataset(data_spec, seed=seed, max_train=max_train)
    torch.manual_seed(seed)
    model = build_model(model_name, data.in_channels, data.num_classes)
    got = train_until_plateau(model, data, max_epochs=max_epochs, patience=patience, seed=seed,
                              on_epoch=lambda e, a: log.info("%s epoch %d: val %.4f", model_name, e, a))
    record = {"model": model_name, "data": data_spec, "seed": seed, "max_train": max_train,
              "train_images": len(data.x_train), **got.to_dict(),
              "test_accuracy": evaluate_accuracy(model, data.x_test, data.y_test),
              "torch_threads": torch.get_num_threads()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    record_path.write_text(json.dumps(record, indent=2))
    return path, record


def main(argv: list[str] | None = None) -> int:
    from .pareto import FASHION

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mobilenetv2_050", "resnet20"])
    ap.add_argument("--data", default=FASHION)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=3)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for seed in args.seeds:
        for model in args.models:
            path, record = plateau_baseline(model, args.data, seed, args.max_train, args.max_epochs,
                                            args.patience)
            print(json.dumps({"weights": str(path), **{k: v for k, v in record.items()
                                                      if k != "val_accuracy_per_epoch"}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

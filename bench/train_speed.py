"""Training steps in NHWC (channels_last) vs NCHW: what ``automl.train.training_memory_format``
saves each candidate's recovery (one thread), the baseline training and the final fine-tune
(two threads).

    python -m bench.train_speed [--models mobilenetv2_050 resnet20] [--steps 100] [--rounds 2]
                                [--threads 1 2]

``train_steps`` on MNIST-shaped batches (64 × 1×28×28, random data: speed only), the model fresh
each run, the two layouts alternating in one process, each forced whatever the product would
choose (NCHW: what every training ran before). Writes
``bench/results/train_speed.json`` (one row per model and thread count; a later run replaces it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import automl.train as train
from automl.models import build_model

from .rows import save_row

RESULTS = Path(__file__).parent / "results" / "train_speed.json"


def _timed(model_name: str, x: torch.Tensor, y: torch.Tensor, steps: int, nhwc: bool) -> float:
    chosen = train.training_memory_format

    def forced(model: torch.nn.Module, x: torch.Tensor) -> torch.memory_format:
        if not nhwc:
            return torch.contiguous_format
        model.to(memory_format=torch.channels_last)
        return torch.channels_last

    train.training_memory_format = forced   # each layout forced, whatever the product would pick
    try:
        torch.manual_seed(0)
        model = build_model(model_name, 1, 10)
        t0 = time.perf_counter()
        train.train_steps(model, x, y, steps, progress=False)
        return time.perf_counter() - t0
    finally:
        train.training_memory_format = chosen


def run(model_name: str, steps: int, rounds: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y = torch.randn(64 * steps, 1, 28, 28), torch.randint(0, 10, (64 * steps,))
    times: dict[str, list[float]] = {"nchw_s": [], "nhwc_s": []}
    for _ in range(rounds):
        times["nchw_s"].append(_timed(model_name, x, y, steps, nhwc=False))
        times["nhwc_s"].append(_timed(model_name, x, y, steps, nhwc=True))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": model_name, "steps": steps, "batch": 64, "threads": threads, "rounds": rounds,
            **{k: round(v, 3) for k, v in med.items()}, "speedup": round(med["nchw_s"] / med["nhwc_s"], 3),
            "all_s": {k: [round(t, 3) for t in v] for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv2_050", "resnet20"])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    args = ap.parse_args()
    for m in args.models:
        for t in args.threads:
            row = run(m, args.steps, args.rounds, t)
            print(json.dumps(row), flush=True)
            save_row(RESULTS, row, keys=("model", "threads"))


if __name__ == "__main__":
    main()

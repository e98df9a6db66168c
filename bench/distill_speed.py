"""What the teacher-logit cache saves a search candidate's recovery (issue 12's check search).

    python -m bench.distill_speed [--models mobilenetv2_050 resnet20] [--steps 200] [--rounds 3]

Each search candidate is scored after ``--steps`` distilled steps (``recover_steps``) on one
thread, as a Ray worker runs it. Before the cache every step ran the unpruned teacher forward on
its batch; now a worker computes each training row's teacher logits once
(:class:`automl.train.TeacherLogits`) and every later candidate reads them. Timed here, in one
process, alternating: a student recovering from the teacher module (what every candidate paid
before; what a worker's first candidate still pays) and from a warm cache (every later one).
MNIST, 2-epoch 10k-image baseline (cached), student = uniform keep 0.5 fp32. Writes
``bench/results/distill_speed.json`` (one row per model, steps and keep ratio; a re-run replaces it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from automl.compress import apply_policy
from automl.core import Policy
from automl.train import TeacherLogits, recover_steps
from automl.workflow import load_trained
from latency_models.profile import DEFAULT_PROFILE, get_profile

from .rows import save_row

RESULTS = Path(__file__).parent / "results" / "distill_speed.json"
MNIST = "mnist:" + str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz")


def run(model_name: str, steps: int, rounds: int, keep: float) -> dict:
    torch.set_num_threads(1)
    loaded = load_trained(model_name, MNIST, seed=0, epochs=2, max_train=10000, progress=False)
    calib = loaded.data.calibration_batches()
    x, y = loaded.data.x_train, loaded.data.y_train
    policy = Policy.uniform(loaded.info, keep, 32, 32)

    step = get_profile(DEFAULT_PROFILE).channel_step

    def student() -> torch.nn.Module:
        return apply_policy(loaded.model, policy, loaded.info, calib, step)

    warm = TeacherLogits(loaded.model, x)
    recover_steps(student(), warm, x, y, steps)          # fills the rows the seeded draw visits
    times: dict[str, list[float]] = {"teacher_module_s": [], "cached_logits_s": []}
    for _ in range(rounds):
        for key, teacher in (("teacher_module_s", loaded.model), ("cached_logits_s", warm)):
            s = student()
            t0 = time.perf_counter()
            recover_steps(s, teacher, x, y, steps)
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": model_name, "steps": steps, "keep_ratio": keep, "threads": 1, "rounds": rounds,
            **{k: round(v, 3) for k, v in med.items()},
            "speedup": round(med["teacher_module_s"] / med["cached_logits_s"], 3),
            "all_s": {k: [round(t, 3) for t in v] for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv2_050", "resnet20"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", type=float, default=0.5)
    args = ap.parse_args()
    for m in args.models:
        row = run(m, args.steps, args.rounds, args.keep)
        print(json.dumps(row), flush=True)
        save_row(RESULTS, row, keys=("model", "steps", "keep_ratio"))


if __name__ == "__main__":
    main()

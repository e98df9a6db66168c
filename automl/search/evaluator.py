"""Scoring policies: accuracy on the validation slice after a short, budgeted recovery (BN
statistics re-estimated by ``apply_policy``, then ``recovery_steps`` steps of distillation from
the uncompressed model). AMC scores without any training, which at aggressive budgets is near
chance for every candidate; ``recovery_steps=0`` scores as AMC does.

``RayEvaluator`` runs a pool of Ray actors; the model, the validation slice and the calibration
batches go into the object store once per job and each actor reads them once, not per trial.
``LocalEvaluator`` runs the same code in-process, for tests and debugging.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..compress import apply_policy
from ..core import ModelInfo, Policy
from ..importance import ChannelScores
from ..train import TeacherLogits, evaluate_accuracy, recover_steps

log = logging.getLogger(__name__)


@dataclass
class EvalPayload:
    """What every evaluation needs, shipped once."""

    model: torch.nn.Module
    info: ModelInfo
    x_val: torch.Tensor
    y_val: torch.Tensor
    calib: list[torch.Tensor]
    x_train: torch.Tensor
    y_train: torch.Tensor
    channel_step: int
    recovery_steps: int = 0
    scores: ChannelScores | None = None
    """Which channels pruning removes (the problem's importance); None: L2 magnitude."""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Names this payload across processes: a worker keeps its teacher's logits per token."""


_TEACHERS: "OrderedDict[str, TeacherLogits]" = OrderedDict()
_TEACHERS_KEPT = 2


def teacher_for(payload: EvalPayload) -> TeacherLogits:
    """This process's :class:`TeacherLogits` of the payload's model over its training rows.

    Every candidate's recovery draws the same seeded rows, so after a worker's first trial the
    teacher is never run again (a Ray actor keeps its payload; Ray Tune reuses a function
    trainable's actor, which receives a fresh copy of the payload per trial, hence the token).
    At most ``_TEACHERS_KEPT`` jobs' logits stay in memory per process."""
    cached = _TEACHERS.get(payload.token)
    if cached is None or cached.x.shape != payload.x_train.shape:
        cached = _TEACHERS[payload.token] = TeacherLogits(payload.model, payload.x_train)
        while len(_TEACHERS) > _TEACHERS_KEPT:
            _TEACHERS.popitem(last=False)
    elif cached.x is not payload.x_train:   # the same job's payload, deserialized again
        cached.x, cached.teacher = payload.x_train, payload.model.eval()
    _TEACHERS.move_to_end(payload.token)
    return cached


def score_policy(payload: EvalPayload, policy_dict: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of one policy; errors are returned, not raised, so a failing trial is recorded
    and the search goes on."""
    t0 = time.perf_counter()
    try:
        policy = Policy.from_dict(policy_dict)
        model = apply_policy(payload.model, policy, payload.info, payload.calib, payload.channel_step,
                             scores=payload.scores)
        if payload.recovery_steps > 0:
            recover_steps(model, teacher_for(payload), payload.x_train, payload.y_train,
                          payload.recovery_steps)
        acc = evaluate_accuracy(model, payload.x_val, payload.y_val)
        return {"accuracy": acc, "wall_s": time.perf_counter() - t0, "error": None}
    except Exception as exc:  # noqa: BLE001 - a trial's failure is data, not a crash
        log.warning("trial failed: %s", exc)
        return {"accuracy": None, "wall_s": time.perf_counter() - t0,
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}


class LocalEvaluator:
    """In-process evaluation, one policy at a time."""

    parallelism = 1

    def __init__(self, payload: EvalPayload) -> None:
        self.payload = payload

    def evaluate(self, policies: Sequence[Policy]) -> list[dict[str, Any]]:
        return [{**score_policy(self.payload, p.to_dict()), "node": "local"} for p in policies]

    def close(self) -> None:
        pass


class _Actor:
    """A Ray actor holding the payload; one CPU each."""

    def __init__(self, payload: EvalPayload) -> None:
        torch.set_num_threads(1)
        self.payload = payload
        import ray
        self.node = ray.get_runtime_context().get_node_id()

    def evaluate(self, policy_dict: dict[str, Any]) -> dict[str, Any]:
        return {**score_policy(self.payload, policy_dict), "node": self.node}


class RayEvaluator:
    """A pool of Ray actors scoring policies in parallel; a dead actor fails its trial and is
    replaced, it does not end the search."""

    def __init__(self, payload: EvalPayload, workers: int | None = None) -> None:
        import ray

        self._ray = ray
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.parallelism = max(1, min(workers or cpus, cpus))
        self._payload_ref = ray.put(payload)  # once per job
        self._actor_cls = ray.remote(num_cpus=1, max_restarts=1)(_Actor)
        self._actors = [self._spawn() for _ in range(self.parallelism)]

    def _spawn(self):
        return self._actor_cls.options(scheduling_strategy="SPREAD").remote(self._payload_ref)

    def evaluate(self, policies: Sequence[Policy]) -> list[dict[str, Any]]:
        ray = self._ray
        results: list[dict[str, Any]] = []
        for start in range(0, len(policies), self.parallelism):
            chunk = policies[start:start + self.parallelism]
            refs = [self._actors[i].evaluate.remote(p.to_dict()) for i, p in enumerate(chunk)]
            for i, ref in enumerate(refs):
                try:
                    results.append(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - actor died or the task raised
                    results.append({"accuracy": None, "wall_s": 0.0, "node": None,
                                    "error": f"{type(exc).__name__}: {exc}"})
                    self._actors[i] = self._spawn()
        return results

    def close(self) -> None:
        for a in self._actors:
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001
                pass

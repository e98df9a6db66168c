"""Conversions between the store's plain dicts and ``hwcompress.v1`` messages (one direction
each, no logic), so the servicer reads as the API's behaviour and not as field copying.

Field copying is protobuf's own ``json_format.ParseDict`` (:func:`from_dict`): a dict whose keys
are the message's field names becomes the message, with protobuf's type checks; what is left here
is only where the store's names or forms differ from the API's (budgets stored as text, the
spec's ``hardware``/``epochs``, timestamps as Unix seconds).

Budgets cross here in one place (:func:`budget_to_pb`, :func:`budget_from_pb`, with the text
form parsed by ``BudgetTerm.parse`` only), and the engine's events are read as the records the
engine wrote (:mod:`automl.records`), so a field the engine does not write cannot be read."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from google.protobuf.json_format import ParseDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from automl.core import BUDGET_METRICS, DEFAULT_BASELINE_EPOCHS, BudgetError, BudgetTerm
from automl.records import (SCHEMA_KEY, FinishedEvent, JobEvent, LogEvent, RecordError, StartedEvent,
                            TrialEvent, event_from_dict)

from .errors import sanitize
from .proto.hwcompress.v1 import service_pb2 as pb

STATE_TO_PB = {"QUEUED": pb.JOB_STATE_QUEUED, "RUNNING": pb.JOB_STATE_RUNNING,
               "SUCCEEDED": pb.JOB_STATE_SUCCEEDED, "FAILED": pb.JOB_STATE_FAILED,
               "CANCELLED": pb.JOB_STATE_CANCELLED}
PB_TO_STATE = {v: k for k, v in STATE_TO_PB.items()}
METRIC_TO_PB = {m: i + 1 for i, m in enumerate(BUDGET_METRICS)}
PB_TO_METRIC = {v: k for k, v in METRIC_TO_PB.items()}
RL_MODE_TO_PB = {"prune": pb.RL_MODE_PRUNE, "quantize": pb.RL_MODE_QUANTIZE, "joint": pb.RL_MODE_JOINT,
                 "quant": pb.RL_MODE_QUANTIZE, "both": pb.RL_MODE_JOINT}  # the last two: old stored jobs
FORMAT_TO_PB = {"safetensors": pb.WEIGHTS_FORMAT_SAFETENSORS,
                "torch_state_dict": pb.WEIGHTS_FORMAT_TORCH_STATE_DICT}


def from_dict(d: dict[str, Any], msg: Message) -> Message:
    """Fill ``msg`` from the entries of ``d`` named like its fields (others ignored), leaving
    unset what is None or a non-finite number (NaN is no accuracy); returns ``msg``."""
    fields = msg.DESCRIPTOR.fields_by_name
    clean = {k: v for k, v in d.items() if k in fields and v is not None
             and not (isinstance(v, float) and not math.isfinite(v))}
    return ParseDict(clean, msg, ignore_unknown_fields=True)


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def budget_to_pb(term: BudgetTerm) -> pb.Budget:
    return pb.Budget(metric=METRIC_TO_PB[term.metric], value=term.value, relative=term.relative)


def budget_from_pb(msg: pb.Budget) -> BudgetTerm:
    """A Budget message as a term; :class:`BudgetError` (``field``: the metric) when its metric is
    not one or its value is not a budget."""
    metric = PB_TO_METRIC.get(msg.metric)
    if metric is None:
        raise BudgetError(f"budget metric {msg.metric} is not a BudgetMetric (1..{len(BUDGET_METRICS)})",
                          field="metric")
    return BudgetTerm(metric, float(msg.value), bool(msg.relative))


def parse_budget_text(text: str) -> pb.Budget:
    """``latency_ms=0.5x`` -> Budget; raises :class:`BudgetError` naming the metric."""
    return budget_to_pb(BudgetTerm.parse(text))


SPEC_RENAMES = {"hardware": "hardware_profile", "epochs": "baseline_epochs"}
"""The stored (validated) spec's names that differ from JobSpec's."""


def spec_to_pb(spec: dict[str, Any], idempotency_key: str | None) -> pb.JobSpec:
    fields = {SPEC_RENAMES.get(k, k): v for k, v in spec.items() if k not in ("budgets", "rl_mode")}
    if fields.get("uploaded_model_id"):
        fields.pop("model", None)  # one of the model_source oneof
    else:
        fields.pop("uploaded_model_id", None)
    fields.setdefault("baseline_epochs", DEFAULT_BASELINE_EPOCHS)
    msg = from_dict({**fields, "idempotency_key": idempotency_key}, pb.JobSpec())
    msg.rl_mode = RL_MODE_TO_PB.get(spec.get("rl_mode", ""), 0)
    msg.budgets.extend(parse_budget_text(b) for b in spec["budgets"])
    return msg


def job_to_pb(job: dict[str, Any], queue_position: int = 0) -> pb.Job:
    progress = from_dict({**job, "trials_total": job["trials_total"] or job["spec"].get("trials", 0)},
                         pb.JobProgress())
    msg = pb.Job(id=job["id"], spec=spec_to_pb(job["spec"], job["idempotency_key"]),
                 state=STATE_TO_PB[job["state"]], reason=sanitize(job["reason"] or ""),
                 created_at=timestamp(job["created_at"]), progress=progress,
                 attempts=int(job["attempts"]), queue_position=queue_position)
    if job["started_at"] is not None:
        msg.started_at.CopyFrom(timestamp(job["started_at"]))
    if job["finished_at"] is not None:
        msg.finished_at.CopyFrom(timestamp(job["finished_at"]))
    return msg


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def summary_to_pb(result: dict[str, Any], artifacts: list[dict[str, Any]],
                  result_json: str | None = None) -> pb.ResultSummary:
    """The result dict (and result.json's exact text when it is on disk) as a ResultSummary."""
    msg = pb.ResultSummary(result_json=result_json if result_json is not None
                           else json.dumps(result, indent=2))
    layers = (result.get("policy") or {}).get("layers", {})
    for name, lp in layers.items():
        from_dict({"keep_ratio": 1.0, "w_bits": 32, "a_bits": 32, **lp, "layer": name}, msg.policy.add())
    for key, value in result.items():
        if _finite(value) and key != SCHEMA_KEY:
            msg.metrics[key] = float(value)
    for point in result.get("pareto") or []:
        p = msg.pareto.add(json=json.dumps(point, sort_keys=True, default=str))
        for key, value in point.items():
            if _finite(value):
                p.metrics[key] = float(value)
    for a in artifacts:
        from_dict(a, msg.artifacts.add())
    return msg


def read_result_json(out_dir: Path) -> str | None:
    path = out_dir / "result.json"
    return path.read_text() if path.is_file() else None


def event_to_pb(job_id: str, event: dict[str, Any], out_dir: Path | None = None) -> pb.JobEvent:
    """A stored event (``seq``, ``time``, ``type``, ``payload``) as a JobEvent. The service's own
    kinds (``state``, ``result``) are read here; the engine's through :mod:`automl.records`."""
    msg = pb.JobEvent(job_id=job_id, seq=int(event["seq"]), time=timestamp(event["time"]))
    kind, payload = event["type"], event["payload"]
    if kind == "state":
        msg.state_change.state = STATE_TO_PB[payload["state"]]
        msg.state_change.reason = sanitize(payload.get("reason", ""))
    elif kind == "result":
        text = read_result_json(out_dir) if out_dir is not None else None
        msg.result.CopyFrom(summary_to_pb(payload.get("result") or {}, payload.get("artifacts") or [],
                                          text))
    else:
        try:
            record = event_from_dict({**payload, "type": kind})
        except RecordError as exc:  # a newer server's event, or none of ours: shown, not dropped
            msg.log.message = sanitize(f"{kind}: {exc}")
            return msg
        if isinstance(record, TrialEvent):
            msg.trial.CopyFrom(trial_to_pb(record))
        else:
            msg.log.message = describe(record)
    return msg


def trial_to_pb(event: TrialEvent) -> pb.Trial:
    return from_dict({**event.to_dict(), "error": sanitize(event.error or "")}, pb.Trial())


def event_from_pb(msg: pb.JobEvent) -> JobEvent | pb.StateChange | pb.ResultSummary | None:
    """Client side: what a JobEvent carries, as the engine's record where it is one (a trial ->
    :class:`TrialEvent` with the fields the API carries; a log line -> :class:`LogEvent`), or the
    message itself for the service's own kinds (state change, result)."""
    kind = msg.WhichOneof("kind")
    if kind == "trial":
        t = msg.trial
        return TrialEvent(index=t.index, total=t.total,
                          accuracy=t.accuracy if t.HasField("accuracy") else None,
                          latency_ms=t.latency_ms, feasible=t.feasible, error=t.error or None,
                          best_accuracy=t.best_accuracy if t.HasField("best_accuracy") else None,
                          strategy=t.strategy, wall_s=t.wall_s)
    if kind == "log":
        return LogEvent(msg.log.message)
    if kind == "state_change":
        return msg.state_change
    if kind == "result":
        return msg.result
    return None


def describe(event: JobEvent) -> str:
    """A one-line text for an engine event sent as a log line (started, finished, log)."""
    if isinstance(event, LogEvent):
        return event.message
    if isinstance(event, StartedEvent):
        limits = ", ".join(f"{k} ≤ {v:.4g}" for k, v in event.limits.items() if _finite(v))
        return f"search started: {event.strategy}, {event.trials} trials" + \
            (f", limits {limits}" if limits else "")
    if isinstance(event, FinishedEvent):
        res = event.to_dict()["result"]
        return "search finished: " + ", ".join(f"{k}={v:.4g}" for k, v in res.items() if _finite(v))
    return f"{event.kind}: {json.dumps(event.to_dict(), default=str)[:500]}"

"""``hwcompress.v1.CompressionService``: the RPCs, as thin as possible over the catalog (what is
accepted), the job manager (what runs) and the store (what happened).

Every error leaves through :func:`services.errors.abort` with the status code the .proto
documents and a message (at most 1 KiB, no server path) that starts with the offending field's
path; INVALID_ARGUMENT also carries a ``google.rpc.BadRequest``. Every string and repeated field
of a request is bounded before it is used.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
from pathlib import Path
from typing import Iterator

import grpc

from latency_models.profile import DEFAULT_PROFILE

from automl.core import HwcompressError
from automl.data import DEFAULT_DATASET

from . import convert
from .catalog import MAX_NAME_CHARS, Catalog, strategy_names
from .errors import IdempotencyConflict, SpecError, UploadError, UploadTooLarge, abort, abort_error, short
from .jobs import JobManager
from .metrics import ServiceMetrics
from .proto.hwcompress.v1 import service_pb2 as pb
from .proto.hwcompress.v1 import service_pb2_grpc as pb_grpc
from .store import FINAL_STATES, SUCCEEDED, JobStore, new_id
from .uploads import Header, receive
from .version import VERSION

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20          # artifact chunk size; well under the 4 MiB message limit
MAX_PAGE_SIZE = 500
MAX_PAGE_TOKEN_CHARS = 512
MAX_REASON_CHARS = 1024
MAX_ARTIFACTS = 64
MAX_STATES = len(convert.PB_TO_STATE)
JOB_ID_RE = re.compile(r"^job-[0-9a-f]{16}$")
WATCH_POLL_S = 1.0
UPLOAD_CHECK_SLOTS = 2         # uploads built and loaded at once (each builds a model on data)
UPLOAD_CHECK_WAIT_S = 30.0


def _bound(context: grpc.ServicerContext, value: str, field: str, limit: int = MAX_NAME_CHARS) -> None:
    if len(value) > limit:
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {len(value)} characters; at most {limit}")


class CompressionServicer(pb_grpc.CompressionServiceServicer):
    def __init__(self, store: JobStore, manager: JobManager, catalog: Catalog, metrics: ServiceMetrics,
                 data_dir: Path, max_upload_bytes: int, auth_required: bool,
                 max_streams: int = 0, max_streams_per_client: int = 0) -> None:
        self.store = store
        self.max_streams = max_streams
        self.max_streams_per_client = max_streams_per_client
        self._upload_slots = threading.BoundedSemaphore(UPLOAD_CHECK_SLOTS)
        self.manager = manager
        self.catalog = catalog
        self.metrics = metrics
        self.data_dir = data_dir
        self.max_upload_bytes = max_upload_bytes
        self.auth_required = auth_required

    # -- helpers ---------------------------------------------------------------------------
    def _job_or_abort(self, job_id: str, context: grpc.ServicerContext) -> dict:
        if not job_id:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "job_id: required")
        _bound(context, job_id, "job_id", 64)
        job = self.store.get_job(job_id) if JOB_ID_RE.match(job_id) else None
        if job is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"job_id: no job {short(job_id)}")
        return job  # type: ignore[return-value]

    def _job_pb(self, job: dict) -> pb.Job:
        job, position = self.manager.with_position(job["id"], job)
        return convert.job_to_pb(job, position)

    def _out_dir(self, job_id: str) -> Path:
        return self.manager.artifacts_root / job_id

    # -- RPCs ------------------------------------------------------------------------------
    def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.ServicerContext) -> pb.SubmitJobResponse:
        try:
            spec = self.catalog.validate(request.spec)
            job, created = self.manager.submit(spec, request.spec.idempotency_key or None)
        except (SpecError, IdempotencyConflict) as exc:  # their fields are the spec's
            abort_error(context, exc, prefix="spec.")
        except HwcompressError as exc:  # QueueFull, ShuttingDown
            abort_error(context, exc)
        if created:
            log.info("job %s submitted: %s %s %s x%d", job["id"], spec["model"], spec["strategy"],
                     spec["budgets"], spec["trials"])
        return pb.SubmitJobResponse(job=self._job_pb(job))

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=self._job_pb(self._job_or_abort(request.job_id, context)))

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"page_size: {request.page_size} is outside 0..{MAX_PAGE_SIZE}")
        size = request.page_size or 50
        if len(request.states) > MAX_STATES:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"states: {len(request.states)} given; at most {MAX_STATES} (each state once)")
        states = []
        for i, s in enumerate(request.states):
            if s not in convert.PB_TO_STATE:  # UNSPECIFIED and undefined values
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"states[{i}]: {s} is not a job state")
            states.append(convert.PB_TO_STATE[s])
        before = None
        if request.page_token:
            before = _parse_page_token(request.page_token)
            if before is None:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                      "page_token: not a token returned by ListJobs")
        jobs = self.store.list_jobs(sorted(set(states)), size + 1, before)
        positions = self.manager.queue_positions()
        resp = pb.ListJobsResponse()
        for job in jobs[:size]:
            if job["state"] == "QUEUED" and job["id"] not in positions:  # started since read
                job = self.store.get_job(job["id"]) or job
            resp.jobs.append(convert.job_to_pb(job, positions.get(job["id"], 0)))
        if len(jobs) > size:
            last = jobs[size - 1]
            resp.next_page_token = base64.urlsafe_b64encode(
                json.dumps([last["created_at"], last["id"]]).encode()).decode()
        return resp

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:
        _bound(context, request.reason, "reason", MAX_REASON_CHARS)
        self._job_or_abort(request.job_id, context)
        job = self.manager.cancel(request.job_id, request.reason)
        if job is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"job_id: no job {short(request.job_id)}")
        return pb.CancelJobResponse(job=self._job_pb(job))

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchJobResponse]:
        job = self._job_or_abort(request.job_id, context)
        if request.after_seq < 0:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "after_seq: must be ≥ 0")
        seq = request.after_seq
        out_dir = self._out_dir(job["id"])
        while context.is_active():
            events = self.store.events_after(job["id"], seq)
            for event in events:
                seq = event["seq"]
                yield pb.WatchJobResponse(event=convert.event_to_pb(job["id"], event, out_dir))
                if event["type"] == "state" and event["payload"]["state"] in FINAL_STATES:
                    return
            if events:
                continue
            state = self.store.get_job(job["id"])["state"]
            if state in FINAL_STATES and not self.store.events_after(job["id"], seq, 1):
                return
            if self.manager.stopping:
                abort(context, grpc.StatusCode.UNAVAILABLE,
                      f"server shutting down; watch again with after_seq={seq}")
            self.manager.wait_for_events(WATCH_POLL_S)

    def GetResult(self, request: pb.GetResultRequest, context: grpc.ServicerContext) -> Iterator[pb.GetResultResponse]:
        if len(request.artifacts) > MAX_ARTIFACTS:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"artifacts: {len(request.artifacts)} names; at most {MAX_ARTIFACTS}")
        for i, name in enumerate(request.artifacts):
            _bound(context, name, f"artifacts[{i}]", 256)
            if name in request.artifacts[:i]:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                      f"artifacts[{i}]: {short(name)} is asked for more than once")
        job = self._job_or_abort(request.job_id, context)
        if job["state"] != SUCCEEDED:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                  f"job_id: job {job['id']} is {job['state']}"
                  + (f" ({job['reason']})" if job["reason"] else "")
                  + "; a result exists once it has SUCCEEDED")
        artifacts = self.store.artifacts(job["id"])
        by_name = {a["name"]: a for a in artifacts}
        wanted = list(request.artifacts) or [a["name"] for a in artifacts]
        for i, name in enumerate(wanted):
            if name not in by_name:
                abort(context, grpc.StatusCode.NOT_FOUND,
                      f"artifacts[{i}]: job {job['id']} has no artifact {short(name)} "
                      f"(has: {sorted(by_name)})")
        out_dir = self._out_dir(job["id"])
        yield pb.GetResultResponse(summary=convert.summary_to_pb(job["result"] or {}, artifacts,
                                                           convert.read_result_json(out_dir)))
        if request.summary_only:
            return
        for name in wanted:
            path = out_dir / name
            if not path.is_file():
                abort(context, grpc.StatusCode.DATA_LOSS, f"artifacts: {short(name)} is missing on the server")
            with path.open("rb") as f:
                offset = 0
                size = path.stat().st_size
                while True:
                    data = f.read(CHUNK_BYTES)
                    last = offset + len(data) >= size
                    yield pb.GetResultResponse(chunk=pb.ArtifactChunk(name=name, offset=offset, data=data,
                                                                last=last))
                    offset += len(data)
                    if last or not data:
                        break

    def UploadModel(self, request_iterator: Iterator[pb.UploadModelRequest],
                    context: grpc.ServicerContext) -> pb.UploadModelResponse:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "header":
            self.metrics.uploads.labels("invalid").inc()
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "header: the first message must be the header")
        h = first.header
        try:
            for name in ("architecture", "dataset", "filename"):
                if len(getattr(h, name)) > 255:
                    raise SpecError(f"header.{name}", f"{len(getattr(h, name))} characters; at most 255")
            if h.format not in (pb.WEIGHTS_FORMAT_UNSPECIFIED, *convert.FORMAT_TO_PB.values()):
                raise SpecError("header.format", f"{h.format} is not a WeightsFormat")
            if h.size_bytes < 0:
                raise SpecError("header.size_bytes", f"{h.size_bytes} is negative")
            dataset_spec = self.catalog.resolve_dataset(h.dataset or DEFAULT_DATASET, "header.dataset")
        except SpecError as exc:
            self.metrics.uploads.labels("invalid").inc()
            abort_error(context, exc)
        fmt = {pb.WEIGHTS_FORMAT_SAFETENSORS: "safetensors",
               pb.WEIGHTS_FORMAT_TORCH_STATE_DICT: "torch_state_dict"}.get(h.format, "")

        def chunks() -> Iterator[bytes]:
            for msg in request_iterator:
                if msg.WhichOneof("kind") != "chunk":
                    raise UploadError("header: sent more than once")
                yield msg.chunk

        header = Header(h.architecture, dataset_spec, h.dataset or DEFAULT_DATASET, fmt, h.size_bytes)
        if not self._upload_slots.acquire(timeout=UPLOAD_CHECK_WAIT_S):
            abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                  f"uploads: {UPLOAD_CHECK_SLOTS} uploads are being checked; retry later")
        try:
            record = receive(chunks(), header, self.data_dir / "uploads", new_id("upl-"),
                             self.max_upload_bytes)
        except UploadError as exc:
            self.metrics.uploads.labels("too_large" if isinstance(exc, UploadTooLarge) else "invalid").inc()
            abort_error(context, exc)
        finally:
            self._upload_slots.release()
        self.store.add_upload(record)
        self.metrics.uploads.labels("ok").inc()
        self.metrics.upload_bytes.inc(record["size_bytes"])
        return pb.UploadModelResponse(model=pb.UploadedModel(
            id=record["id"], architecture=record["architecture"], dataset=record["dataset"],
            size_bytes=record["size_bytes"], sha256=record["sha256"],
            format=convert.FORMAT_TO_PB[record["format"]]))

    def ListHardwareProfiles(self, request, context) -> pb.ListHardwareProfilesResponse:
        resp = pb.ListHardwareProfilesResponse()
        for name, prof in sorted(self.catalog.profiles().items()):
            resp.profiles.add(name=name, kind=prof.kind, runtime=prof.runtime,
                              precisions=list(prof.precisions), channel_step=prof.channel_step,
                              hardware=prof.hardware, is_default=name == DEFAULT_PROFILE,
                              latency_tables=sorted(t for t, p in self.catalog.table_profiles.items()
                                                    if p == name))
        return resp

    def GetServerInfo(self, request, context) -> pb.GetServerInfoResponse:
        return pb.GetServerInfoResponse(info=pb.ServerInfo(
            version=VERSION, models=self.catalog.models(), datasets=self.catalog.dataset_names(),
            strategies=strategy_names(), hardware_profiles=sorted(self.catalog.profiles()),
            max_concurrent_jobs=self.manager.concurrency, max_queued_jobs=self.manager.max_queued,
            max_upload_bytes=self.max_upload_bytes, max_trials=self.catalog.max_trials,
            auth_required=self.auth_required, max_streams=self.max_streams,
            max_streams_per_client=self.max_streams_per_client))


def _parse_page_token(token: str) -> tuple[float, str] | None:
    """A ListJobs page token -> (created_at, job id), or None if it is not one we issued."""
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        return None
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
    except Exception:
        return None
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created) \
            or created < 0 or not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        return None  # NaN, Infinity and forged ids are not tokens
    return float(created), job_id

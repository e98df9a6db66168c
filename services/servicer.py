"""``hwcompress.v1.CompressionService``: the RPCs, as thin as possible over the catalog (what is
accepted), the job manager (what runs) and the store (what happened).

Every error leaves with the status code the .proto documents and a message that starts with the
offending field's name.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Iterator

import grpc

from latency_models.profile import DEFAULT_PROFILE

from . import convert
from .catalog import Catalog, SpecError, strategy_names
from .jobs import JobManager, QueueFull, ShuttingDown
from .metrics import ServiceMetrics
from .proto.hwcompress.v1 import service_pb2 as pb
from .proto.hwcompress.v1 import service_pb2_grpc as pb_grpc
from .store import FINAL_STATES, SUCCEEDED, IdempotencyConflict, JobStore, new_id
from .uploads import Header, UploadError, UploadTooLarge, receive

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20          # artifact chunk size; well under the 4 MiB message limit
MAX_PAGE_SIZE = 500
WATCH_POLL_S = 1.0
VERSION = "0.1.0"


class CompressionServicer(pb_grpc.CompressionServiceServicer):
    def __init__(self, store: JobStore, manager: JobManager, catalog: Catalog, metrics: ServiceMetrics,
                 data_dir: Path, max_upload_bytes: int, auth_required: bool) -> None:
        self.store = store
        self.manager = manager
        self.catalog = catalog
        self.metrics = metrics
        self.data_dir = data_dir
        self.max_upload_bytes = max_upload_bytes
        self.auth_required = auth_required

    # -- helpers ---------------------------------------------------------------------------
    def _job_or_abort(self, job_id: str, context: grpc.ServicerContext) -> dict:
        if not job_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id: required")
        job = self.store.get_job(job_id)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job_id: no job {job_id!r}")
        return job  # type: ignore[return-value]

    def _job_pb(self, job: dict) -> pb.Job:
        return convert.job_to_pb(job, self.manager.queue_position(job["id"]))

    def _out_dir(self, job_id: str) -> Path:
        return self.manager.artifacts_root / job_id

    # -- RPCs ------------------------------------------------------------------------------
    def SubmitJob(self, request: pb.JobSpec, context: grpc.ServicerContext) -> pb.Job:
        try:
            spec = self.catalog.validate(request)
        except SpecError as exc:
            code = grpc.StatusCode.NOT_FOUND if exc.not_found else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(exc))
        try:
            job, created = self.manager.submit(spec, request.idempotency_key or None)
        except IdempotencyConflict as exc:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except QueueFull as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"queue: {exc}; retry later")
        except ShuttingDown as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if created:
            log.info("job %s submitted: %s %s %s x%d", job["id"], spec["model"], spec["strategy"],
                     spec["budgets"], spec["trials"])
        return self._job_pb(job)

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return self._job_pb(self._job_or_abort(request.job_id, context))

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"page_size: {request.page_size} is outside 0..{MAX_PAGE_SIZE}")
        size = request.page_size or 50
        states = []
        for s in request.states:
            if s not in convert.PB_TO_STATE:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"states: {s} is not a job state")
            states.append(convert.PB_TO_STATE[s])
        before = None
        if request.page_token:
            try:
                created, job_id = json.loads(base64.urlsafe_b64decode(request.page_token.encode()))
                before = (float(created), str(job_id))
            except Exception:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "page_token: not a token returned by ListJobs")
        jobs = self.store.list_jobs(states, size + 1, before)
        resp = pb.ListJobsResponse(jobs=[self._job_pb(j) for j in jobs[:size]])
        if len(jobs) > size:
            last = jobs[size - 1]
            resp.next_page_token = base64.urlsafe_b64encode(
                json.dumps([last["created_at"], last["id"]]).encode()).decode()
        return resp

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        self._job_or_abort(request.job_id, context)
        job = self.manager.cancel(request.job_id, request.reason)
        if job is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job_id: no job {request.job_id!r}")
        return self._job_pb(job)

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        job = self._job_or_abort(request.job_id, context)
        if request.after_seq < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "after_seq: must be ≥ 0")
        seq = request.after_seq
        out_dir = self._out_dir(job["id"])
        while context.is_active():
            events = self.store.events_after(job["id"], seq)
            for event in events:
                seq = event["seq"]
                yield convert.event_to_pb(job["id"], event, out_dir)
                if event["type"] == "state" and event["payload"]["state"] in FINAL_STATES:
                    return
            if events:
                continue
            state = self.store.get_job(job["id"])["state"]
            if state in FINAL_STATES and not self.store.events_after(job["id"], seq, 1):
                return
            if self.manager.stopping:
                context.abort(grpc.StatusCode.UNAVAILABLE,
                              f"server shutting down; watch again with after_seq={seq}")
            self.manager.wait_for_events(WATCH_POLL_S)

    def GetResult(self, request: pb.GetResultRequest, context: grpc.ServicerContext) -> Iterator[pb.ResultChunk]:
        job = self._job_or_abort(request.job_id, context)
        if job["state"] != SUCCEEDED:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"job_id: job {job['id']} is {job['state']}"
                          + (f" ({job['reason']})" if job["reason"] else "")
                          + "; a result exists once it has SUCCEEDED")
        artifacts = self.store.artifacts(job["id"])
        by_name = {a["name"]: a for a in artifacts}
        wanted = list(request.artifacts) or [a["name"] for a in artifacts]
        for name in wanted:
            if name not in by_name:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"artifacts: job {job['id']} has no artifact {name!r} "
                              f"(has: {sorted(by_name)})")
        out_dir = self._out_dir(job["id"])
        yield pb.ResultChunk(summary=convert.summary_to_pb(job["result"] or {}, artifacts,
                                                           convert.read_result_json(out_dir)))
        if request.summary_only:
            return
        for name in wanted:
            path = out_dir / name
            if not path.is_file():
                context.abort(grpc.StatusCode.DATA_LOSS, f"artifacts: {name} is missing on disk")
            with path.open("rb") as f:
                offset = 0
                size = path.stat().st_size
                while True:
                    data = f.read(CHUNK_BYTES)
                    last = offset + len(data) >= size
                    yield pb.ResultChunk(chunk=pb.ArtifactChunk(name=name, offset=offset, data=data,
                                                                last=last))
                    offset += len(data)
                    if last or not data:
                        break

    def UploadModel(self, request_iterator: Iterator[pb.UploadModelRequest],
                    context: grpc.ServicerContext) -> pb.UploadedModel:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "header":
            self.metrics.uploads.labels("invalid").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "header: the first message must be the header")
        h = first.header
        try:
            dataset_spec = self.catalog.resolve_dataset(h.dataset or "digits", "header.dataset")
        except SpecError as exc:
            self.metrics.uploads.labels("invalid").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        fmt = {pb.WEIGHTS_FORMAT_SAFETENSORS: "safetensors",
               pb.WEIGHTS_FORMAT_TORCH_STATE_DICT: "torch_state_dict"}.get(h.format, "")

        def chunks() -> Iterator[bytes]:
            for msg in request_iterator:
                if msg.WhichOneof("kind") != "chunk":
                    raise UploadError("header: sent more than once")
                yield msg.chunk

        header = Header(h.architecture, dataset_spec, h.dataset or "digits", fmt, h.size_bytes)
        try:
            record = receive(chunks(), header, self.data_dir / "uploads", new_id("upl-"),
                             self.max_upload_bytes)
        except UploadTooLarge as exc:
            self.metrics.uploads.labels("too_large").inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except UploadError as exc:
            self.metrics.uploads.labels("invalid").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self.store.add_upload(record)
        self.metrics.uploads.labels("ok").inc()
        self.metrics.upload_bytes.inc(record["size_bytes"])
        return pb.UploadedModel(id=record["id"], architecture=record["architecture"],
                                dataset=record["dataset"], size_bytes=record["size_bytes"],
                                sha256=record["sha256"], format=convert.FORMAT_TO_PB[record["format"]])

    def ListHardwareProfiles(self, request, context) -> pb.ListHardwareProfilesResponse:
        resp = pb.ListHardwareProfilesResponse()
        for name, prof in sorted(self.catalog.profiles().items()):
            resp.profiles.add(name=name, kind=prof.kind, runtime=prof.runtime,
                              precisions=list(prof.precisions), channel_step=prof.channel_step,
                              hardware=prof.hardware, is_default=name == DEFAULT_PROFILE,
                              latency_tables=sorted(t for t, p in self.catalog.table_profiles.items()
                                                    if p == name))
        return resp

    def GetServerInfo(self, request, context) -> pb.ServerInfo:
        return pb.ServerInfo(version=VERSION, models=self.catalog.models(),
                             datasets=self.catalog.dataset_names(), strategies=strategy_names(),
                             hardware_profiles=sorted(self.catalog.profiles()),
                             max_concurrent_jobs=self.manager.concurrency,
                             max_queued_jobs=self.manager.max_queued,
                             max_upload_bytes=self.max_upload_bytes,
                             max_trials=self.catalog.max_trials, auth_required=self.auth_required)

"""A small Python client over the generated stub: channel options, auth metadata, TLS, and the
two multi-message operations (watching with reconnects, downloading a result).

The CLI, tests and benches use it; other languages use the .proto directly (it is the contract).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Iterator

import grpc

from .proto.hwcompress.v1 import service_pb2 as pb
from .proto.hwcompress.v1 import service_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
UPLOAD_CHUNK_BYTES = 1 << 20
TOKEN_ENV = "HWCOMPRESS_AUTH_TOKEN"
TOKEN_FILE_ENV = "HWCOMPRESS_AUTH_TOKEN_FILE"
FINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


def read_token(token_file: str | None = None) -> str | None:
    """The bearer token: ``token_file``, else $HWCOMPRESS_AUTH_TOKEN_FILE, else
    $HWCOMPRESS_AUTH_TOKEN; None when none is set (auth off)."""
    path = token_file or os.environ.get(TOKEN_FILE_ENV)
    if path:
        token = Path(path).read_text().strip()
        if not token:
            raise ValueError(f"auth token file {path}: empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


class Client:
    def __init__(self, target: str, token: str | None = None, tls_ca: str | None = None,
                 timeout: float = 30.0) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if tls_ca:
            creds = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(target, creds, options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.stub = pb_grpc.CompressionServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- unary -----------------------------------------------------------------------------
    def submit(self, spec: pb.JobSpec) -> pb.Job:
        return self.stub.SubmitJob(pb.SubmitJobRequest(spec=spec), metadata=self.metadata,
                                   timeout=self.timeout).job

    def get(self, job_id: str) -> pb.Job:
        return self.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=self.metadata,
                                timeout=self.timeout).job

    def list(self, states: list[int] | None = None, page_size: int = 50,
             page_token: str = "") -> pb.ListJobsResponse:
        return self.stub.ListJobs(pb.ListJobsRequest(states=states or [], page_size=page_size,
                                                     page_token=page_token),
                                  metadata=self.metadata, timeout=self.timeout)

    def cancel(self, job_id: str, reason: str = "") -> pb.Job:
        return self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id, reason=reason),
                                   metadata=self.metadata, timeout=self.timeout).job

    def profiles(self) -> pb.ListHardwareProfilesResponse:
        return self.stub.ListHardwareProfiles(pb.ListHardwareProfilesRequest(),
                                              metadata=self.metadata, timeout=self.timeout)

    def info(self) -> pb.ServerInfo:
        return self.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=self.metadata,
                                       timeout=self.timeout).info

    def wait_ready(self, timeout: float = 60.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    # -- streams ---------------------------------------------------------------------------
    def watch(self, job_id: str, after_seq: int = 0, reconnect_s: float = 0.0) -> Iterator[pb.JobEvent]:
        """The job's events until its final state. With ``reconnect_s`` > 0, a broken stream
        (server restart) is resumed from the last event seen, for up to that many seconds of
        consecutive failures."""
        seq = after_seq
        failing_since: float | None = None
        while True:
            try:
                for resp in self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=seq),
                                               metadata=self.metadata):
                    event = resp.event
                    failing_since = None
                    seq = event.seq
                    yield event
                return
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                      grpc.StatusCode.INTERNAL) or reconnect_s <= 0:
                    raise
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > reconnect_s:
                    raise
                time.sleep(1.0)

    def download_result(self, job_id: str, out_dir: str | Path,
                        artifacts: list[str] | None = None) -> pb.ResultSummary:
        """Write result.json (exactly as the search wrote it) and the artifacts to ``out_dir``,
        checking each file's sha256 against the summary."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary: pb.ResultSummary | None = None
        handles: dict[str, tuple[object, "hashlib._Hash"]] = {}
        try:
            for msg in self.stub.GetResult(pb.GetResultRequest(job_id=job_id, artifacts=artifacts or []),
                                           metadata=self.metadata):
                if msg.WhichOneof("kind") == "summary":
                    summary = msg.summary
                    (out / "result.json").write_text(summary.result_json)
                    continue
                chunk = msg.chunk
                name = Path(chunk.name).name  # never let a name escape out_dir
                if name not in handles:
                    handles[name] = ((out / name).open("wb"), hashlib.sha256())
                f, digest = handles[name]
                f.write(chunk.data)  # type: ignore[attr-defined]
                digest.update(chunk.data)
                if chunk.last:
                    f.close()  # type: ignore[attr-defined]
        finally:
            for f, _ in handles.values():
                f.close()  # type: ignore[attr-defined]
        if summary is None:
            raise RuntimeError(f"GetResult {job_id}: the server sent no summary")
        expected = {a.name: a.sha256 for a in summary.artifacts}
        for name, (_, digest) in handles.items():
            if expected.get(name) and expected[name] != digest.hexdigest():
                raise RuntimeError(f"GetResult {job_id}: {name} arrived corrupted (sha256 mismatch)")
        return summary

    def upload(self, path: str | Path, architecture: str, dataset: str = "digits") -> pb.UploadedModel:
        path = Path(path)
        fmt = (pb.WEIGHTS_FORMAT_SAFETENSORS if path.suffix == ".safetensors"
               else pb.WEIGHTS_FORMAT_TORCH_STATE_DICT)

        def requests() -> Iterator[pb.UploadModelRequest]:
            yield pb.UploadModelRequest(header=pb.UploadHeader(
                architecture=architecture, dataset=dataset, format=fmt, filename=path.name,
                size_bytes=path.stat().st_size))
            with path.open("rb") as f:
                for block in iter(lambda: f.read(UPLOAD_CHUNK_BYTES), b""):
                    yield pb.UploadModelRequest(chunk=block)

        return self.stub.UploadModel(requests(), metadata=self.metadata,
                                     timeout=max(self.timeout, 300)).model

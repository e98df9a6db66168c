"""What a hostile or careless client used to break (issue 13), each on a real in-process server on
a loopback port: stream exhaustion, paging and queue-position edge cases, duplicated replay
events after a restart, a lost runtime, exposure defaults, reflection v1, upload format checks.
Jobs run the named test-only work functions of test_service_api (what they compute is irrelevant
here); the zip bomb against a real ``hwcompress serve`` process is in test_service_uploads.py.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.client import Client
from services.proto.hwcompress.v1 import service_pb2 as pb
from services.server import ServerConfig, Service, check_exposure
from services.testing import metric_sum, scrape

from .test_service_api import (Gate, _service, assert_invalid, client, instant_work_for_tests,  # noqa: F401 - fixtures
                               server, spec, wait_state)


@pytest.mark.parametrize("threads,limit,per_client,expect_open", [
    (64, 48, 40, 40),      # one client past its limit: 60 of its 100 streams refused
    (128, 110, 110, 100),  # a server sized for it: all 100 open at once
])
def test_a_hundred_watch_streams_leave_health_and_get_job_answering(tmp_path, threads, limit,
                                                                    per_client, expect_open):
    """100 WatchJob streams on a job that never ends: streams past a limit are refused at once
    with RESOURCE_EXHAUSTED, and with every admitted stream open Health/Check and GetJob still
    answer in well under 2 s (the pool keeps threads that no stream may take)."""
    gate = Gate()
    svc = _service(tmp_path, gate, rpc_threads=threads, max_streams=limit,
                   max_streams_per_client=per_client)
    target = f"127.0.0.1:{svc.port}"
    channels = [grpc.insecure_channel(target) for _ in range(10)]
    calls: list = []
    try:
        with Client(target) as c:
            job = c.submit(spec())
            assert gate.started.wait(10)
            for i in range(100):
                stub = c.stub.__class__(channels[i % len(channels)])
                calls.append(stub.WatchJob(pb.WatchJobRequest(job_id=job.id)))
            # a stream that got a slot yields the job's history; a refused one ends at once
            refused = []
            opened = []

            def first(call):
                try:
                    return next(call)
                except grpc.RpcError as exc:
                    return exc

            with ThreadPoolExecutor(20) as pool:
                for call, got in zip(calls, pool.map(first, calls)):
                    (refused if isinstance(got, grpc.RpcError) else opened).append((call, got))
            assert len(opened) == expect_open, (len(opened), [r[1].details() for r in refused[:3]])
            assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for _, e in refused)
            assert all(e.details().startswith("streams:") for _, e in refused), refused[:1]
            assert svc.streams.open == expect_open
            with grpc.insecure_channel(target) as ch:
                health = health_pb2_grpc.HealthStub(ch)
                worst = 0.0
                for _ in range(5):
                    t0 = time.monotonic()
                    assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING
                    assert c.get(job.id).state == pb.JOB_STATE_RUNNING
                    worst = max(worst, time.monotonic() - t0)
            print(f"health + GetJob with {expect_open} open streams ({len(refused)} refused): "
                  f"worst {worst * 1000:.1f} ms")
            assert worst < 2.0
            for call, _ in opened:
                call.cancel()
            deadline = time.monotonic() + 10  # the slots come back once the streams end
            while svc.streams.open and time.monotonic() < deadline:
                time.sleep(0.1)
            assert svc.streams.open == 0
            again = c.stub.WatchJob(pb.WatchJobRequest(job_id=job.id))
            assert next(again).event.seq == 1
            again.cancel()
    finally:
        gate.release.set()
        for ch in channels:
            ch.close()
        svc.stop()


def test_stream_limits_must_leave_threads_for_unary_calls(tmp_path):
    with pytest.raises(ValueError, match="max_streams"):
        Service(ServerConfig(data_dir=str(tmp_path), port=0, metrics_port=None, rpc_threads=16,
                             max_streams=16), work=instant_work_for_tests)


def test_paging_tokens_artifact_lists_and_long_fields_are_bounded(client):
    job = client.submit(spec())
    wait_state(client, job.id, {pb.JOB_STATE_SUCCEEDED})
    for created in ("NaN", "Infinity", "-1"):
        token = base64.urlsafe_b64encode(f'[{created}, "{job.id}"]'.encode()).decode()
        with pytest.raises(grpc.RpcError) as err:
            client.list(page_token=token)
        assert_invalid(err.value, "page_token")
    forged = base64.urlsafe_b64encode(json.dumps([1.0, "x" * 100]).encode()).decode()
    for token in (forged, "A" * 10_000):
        with pytest.raises(grpc.RpcError) as err:
            client.list(page_token=token)
        assert_invalid(err.value, "page_token")
    for states, field in (([pb.JOB_STATE_UNSPECIFIED], "states[0]"), ([pb.JOB_STATE_QUEUED, -3], "states[1]"),
                          ([pb.JOB_STATE_QUEUED] * 6, "states")):
        with pytest.raises(grpc.RpcError) as err:
            client.list(states=states)
        assert_invalid(err.value, field)
    # the same artifact asked for twice (it used to stream 200 copies) and too many names
    for names, field in ((["result.json"] * 200, "artifacts"), (["result.json", "result.json"], "artifacts[1]")):
        with pytest.raises(grpc.RpcError) as err:
            list(client.stub.GetResult(pb.GetResultRequest(job_id=job.id, artifacts=names)))
        assert_invalid(err.value, field)
    for call, field in ((lambda: client.get("j" * (1 << 20)), "job_id"),
                        (lambda: client.cancel(job.id, "r" * 5000), "reason")):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert_invalid(err.value, field)


def test_queue_positions_are_one_to_n_each_once(tmp_path):
    gate = Gate()
    svc = _service(tmp_path, gate)
    try:
        with Client(f"127.0.0.1:{svc.port}") as c:
            first = c.submit(spec())
            assert gate.started.wait(10)
            queued = [c.submit(spec(seed=i)) for i in range(1, 6)]
            positions = {j.id: j.queue_position for j in c.list().jobs}
            assert positions[first.id] == 0
            assert sorted(positions[j.id] for j in queued) == [1, 2, 3, 4, 5]
            assert [c.get(j.id).queue_position for j in queued] == [1, 2, 3, 4, 5]
            gate.release.set()
            seen: set[tuple[str, int]] = set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # while the queue drains: no QUEUED job at 0
                jobs = c.list().jobs
                for j in jobs:
                    if j.state == pb.JOB_STATE_QUEUED:
                        assert j.queue_position >= 1, j
                    else:
                        assert j.queue_position == 0, j
                pos = [j.queue_position for j in jobs if j.state == pb.JOB_STATE_QUEUED]
                assert sorted(pos) == list(range(1, len(pos) + 1)), pos
                seen |= {(j.id, j.queue_position) for j in jobs}
                if all(j.state == pb.JOB_STATE_SUCCEEDED for j in jobs):
                    break
                time.sleep(0.01)
            assert all(j.state == pb.JOB_STATE_SUCCEEDED for j in c.list().jobs)
    finally:
        gate.release.set()
        svc.stop()


class ReplayingWork:
    """TEST-ONLY work function shaped like a resumed search: the first attempt reports trials
    0..2 and then waits to be stopped (the drain); the next attempt replays 0..2 from its log
    (as ``cached``) and goes on to ``total``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.attempts = 0
        self.reported = threading.Event()

    def __call__(self, spec_, on_event, should_stop):
        self.attempts += 1
        first = self.attempts == 1
        for i in range(3 if first else self.total):
            on_event({"type": "trial", "index": i, "total": self.total, "accuracy": 0.5 + i / 100,
                      "latency_ms": 0.1, "feasible": True, "error": None,
                      "best_accuracy": 0.5 + i / 100, "strategy": spec_["strategy"], "wall_s": 0.01,
                      "cached": not first and i < 3})
        if first:
            self.reported.set()
            while not should_stop():
                time.sleep(0.02)
            raise RuntimeError("stopped at a trial boundary")
        return instant_work_for_tests({**spec_, "trials": 0}, on_event, should_stop)


def test_a_resumed_job_never_repeats_a_trial_and_counts_right(tmp_path):
    work = ReplayingWork(total=6)
    svc = _service(tmp_path, work)
    with Client(f"127.0.0.1:{svc.port}") as c:
        job = c.submit(spec(trials=6))
        assert work.reported.wait(10)
        first_events = []
        for e in c.watch(job.id):
            first_events.append(e)
            if sum(x.WhichOneof("kind") == "trial" for x in first_events) == 3:
                break
        assert c.get(job.id).progress.trials_done == 3
    svc.stop()  # drain: the job goes back to QUEUED and resumes on the next start
    svc = Service(svc.config, work=work).start()
    try:
        with Client(f"127.0.0.1:{svc.port}") as c:
            events = list(c.watch(job.id, after_seq=first_events[-1].seq))
            final = c.get(job.id)
            assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
            indexes = [e.trial.index for e in first_events + events if e.WhichOneof("kind") == "trial"]
            assert indexes == [0, 1, 2, 3, 4, 5], indexes
            assert final.progress.trials_done == 6 and final.progress.trials_total == 6
            assert final.progress.best_accuracy == pytest.approx(0.55)
            all_trials = [e for e in c.watch(job.id) if e.WhichOneof("kind") == "trial"]
            assert len(all_trials) == 6
            # this process counted only the trials it added (3..5), not the replayed 0..2
            assert metric_sum(scrape(svc.metrics_port), "hwcompress_trials_total") == 3
    finally:
        svc.stop()


class FlakyRuntimeWork:
    """TEST-ONLY work function whose first ``fails`` attempts lose the runtime the way a dead
    Ray connection surfaces (ConnectionError), then succeeds."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls = 0

    def __call__(self, spec_, on_event, should_stop):
        self.calls += 1
        if self.calls <= self.fails:
            raise ConnectionError("lost the connection to the Ray cluster")
        return instant_work_for_tests(spec_, on_event, should_stop)


def test_a_lost_runtime_requeues_the_job_with_backoff_instead_of_failing_it(tmp_path):
    work = FlakyRuntimeWork(fails=2)
    svc = _service(tmp_path, work)
    svc.manager.transient_backoff_s = 0.2
    try:
        with Client(f"127.0.0.1:{svc.port}") as c:
            t0 = time.monotonic()
            job = c.submit(spec())
            done = wait_state(c, job.id, {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED})
            assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
            assert done.attempts == 3 and work.calls == 3
            assert time.monotonic() - t0 >= 0.2 + 0.4  # backed off 0.2 s, then 0.4 s
            reasons = [e.state_change.reason for e in c.watch(job.id)
                       if e.WhichOneof("kind") == "state_change"]
            assert sum("requeued" in r for r in reasons) == 2, reasons
        # past the retries it does fail, naming the cause
        work2 = FlakyRuntimeWork(fails=99)
        svc.manager.work = work2
        with Client(f"127.0.0.1:{svc.port}") as c:
            job = c.submit(spec(seed=5))
            done = wait_state(c, job.id, {pb.JOB_STATE_FAILED}, timeout=30)
            assert "ConnectionError" in done.reason and work2.calls == 4
    finally:
        svc.stop()


def test_non_loopback_without_auth_needs_insecure(tmp_path, capsys):
    base = dict(data_dir=str(tmp_path), port=0, metrics_port=None)
    assert ServerConfig().host == "127.0.0.1" and ServerConfig().metrics_host == "127.0.0.1"
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert check_exposure(ServerConfig(host=host, **base)) is None
    with pytest.raises(ValueError, match="--insecure"):
        check_exposure(ServerConfig(host="0.0.0.0", **base))
    assert check_exposure(ServerConfig(host="0.0.0.0", auth_token="t", **base)) is None
    svc = Service(ServerConfig(host="0.0.0.0", insecure=True, **base), work=instant_work_for_tests)
    try:
        assert "WITHOUT authentication" in capsys.readouterr().err
    finally:
        svc.server.stop(0)


def test_serve_refuses_all_interfaces_without_auth_or_insecure(tmp_path):
    import subprocess
    import sys

    from services.testing import REPO, free_port
    proc = subprocess.run([sys.executable, "-m", "services.cli.main", "serve", "--host", "0.0.0.0",
                           "--port", str(free_port()), "--metrics-port", "-1", "--data-dir",
                           str(tmp_path / "d")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--insecure" in proc.stderr, proc.stderr[-2000:]


def test_reflection_v1_and_v1alpha(server):
    from grpc_reflection.v1alpha import reflection_pb2

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        for version in ("v1", "v1alpha"):
            call = ch.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                    request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                    response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            replies = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
            names = {s.name for s in replies[0].list_services_response.service}
            assert {"hwcompress.v1.CompressionService", "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection"} <= names, (version, names)




def test_upload_header_format_and_size_are_verified(client, server, tmp_path):
    from safetensors.torch import save_file

    from automl.models import build_model

    good = tmp_path / "lenet.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("lenet5", 1, 10).state_dict().items()}, str(good))
    data = good.read_bytes()

    def upload(fmt: int, size: int, payload: bytes = data, arch: str = "lenet5"):
        def reqs():
            yield pb.UploadModelRequest(header=pb.UploadHeader(architecture=arch, dataset="digits",
                                                               format=fmt, size_bytes=size))
            yield pb.UploadModelRequest(chunk=payload)
        return client.stub.UploadModel(reqs(), timeout=60)

    for fmt, size, payload, arch, field in (
            (7, len(data), data, "lenet5", "header.format"),
            (-1, len(data), data, "lenet5", "header.format"),
            (pb.WEIGHTS_FORMAT_SAFETENSORS, len(data) + 1, data, "lenet5", "header.size_bytes"),
            (pb.WEIGHTS_FORMAT_SAFETENSORS, -5, data, "lenet5", "header.size_bytes"),
            (pb.WEIGHTS_FORMAT_TORCH_STATE_DICT, len(data), data, "lenet5", "header.format"),
            (pb.WEIGHTS_FORMAT_SAFETENSORS, 0, data, "a" * 300, "header.architecture"),
            (pb.WEIGHTS_FORMAT_SAFETENSORS, 0, (10 ** 9).to_bytes(8, "little") + b"{}", "lenet5", "chunk")):
        with pytest.raises(grpc.RpcError) as err:
            upload(fmt, size, payload, arch)
        assert_invalid(err.value, field)
        assert server.config.data_dir not in err.value.details(), err.value.details()
    assert upload(pb.WEIGHTS_FORMAT_SAFETENSORS, len(data)).model.size_bytes == len(data)

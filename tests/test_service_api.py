"""The gRPC API's contract on an in-process server on a loopback port: every bad input gets the
right status code and names its field; auth; uploads are size-limited and never unpickled; the
queue and the 50-concurrent-submissions accounting; health and reflection.

These tests are about the RPC layer, so their jobs run ``instant_work_for_tests`` (documented
below) instead of a real search; the end-to-end tests (test_service_e2e.py,
test_service_restart.py) run the real search runner on Ray.
"""

from __future__ import annotations

import math
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import torch

from automl.records import TrialEvent
from services.client import Client
from services.proto.hwcompress.v1 import service_pb2 as pb
from services.server import ServerConfig, Service
from services.testing import metric_sum, scrape

LAT = pb.BUDGET_METRIC_LATENCY_MS
SIZE = pb.BUDGET_METRIC_SIZE_MB


def instant_work_for_tests(spec, on_event, should_stop):
    """TEST-ONLY work function: emits the runner's event records for ``spec['trials']`` fake
    trials in milliseconds and returns a result-shaped dict. Used only where what a job computes
    is irrelevant (RPC validation, queue accounting); never in the end-to-end tests."""
    best = None
    for i in range(int(spec["trials"])):
        if should_stop():
            raise RuntimeError("stopped")
        acc = 0.5 + 0.01 * i
        best = acc if best is None else max(best, acc)
        on_event(TrialEvent(index=i, total=spec["trials"], accuracy=acc, latency_ms=0.01, feasible=True,
                            best_accuracy=best, strategy=spec["strategy"], wall_s=0.001))
    Path(spec["out_dir"], "result.json").write_text('{"policy": {"layers": {}}}')
    return {"policy": {"layers": {}}, "accuracy_after_finetune": best, "strategy": spec["strategy"]}


class Gate:
    """A TEST-ONLY work function that blocks until released (to hold jobs RUNNING/QUEUED)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, spec, on_event, should_stop):
        self.started.set()
        deadline = time.monotonic() + 60
        while not self.release.is_set() and time.monotonic() < deadline:
            if should_stop():
                raise RuntimeError("stopped")
            time.sleep(0.02)
        return instant_work_for_tests(spec, on_event, should_stop)


def _service(tmp_path: Path, work, **kw) -> Service:
    cfg = ServerConfig(data_dir=str(tmp_path / "data"), port=0, host="127.0.0.1", metrics_port=0,
                       metrics_host="127.0.0.1", drain_grace_s=1, drain_jobs_s=10, **kw)
    return Service(cfg, work=work).start()


@pytest.fixture()
def server(tmp_path):
    svc = _service(tmp_path, instant_work_for_tests, max_upload_bytes=200_000)
    yield svc
    svc.stop()


@pytest.fixture()
def client(server):
    with Client(f"127.0.0.1:{server.port}") as c:
        yield c


def spec(**kw) -> pb.JobSpec:
    base = dict(model="lenet5", dataset="digits", strategy="uniform", trials=3,
                budgets=[pb.Budget(metric=LAT, value=0.7, relative=True)])
    base.update(kw)
    return pb.JobSpec(**base)


def wait_state(client: Client, job_id: str, states: set[int], timeout: float = 30) -> pb.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id)
        if job.state in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{job_id} stuck in {pb.JobState.Name(job.state)}")


BAD_SPECS = [
    ("unknown model", dict(model="resnet9000"), "model"),
    ("module path as model", dict(model="os:system"), "model"),
    ("unknown dataset", dict(dataset="imagenet"), "dataset"),
    ("dataset path", dict(dataset="mnist:/etc/passwd"), "dataset"),
    ("unknown profile", dict(hardware_profile="tpu-v9"), "hardware_profile"),
    ("unknown table", dict(latency_table="nope"), "latency_table"),
    ("unknown strategy", dict(strategy="simulated-annealing"), "strategy"),
    ("zero trials", dict(trials=0), "trials"),
    ("negative trials", dict(trials=-5), "trials"),
    ("no budget", dict(budgets=[]), "budgets"),
    ("negative budget", dict(budgets=[pb.Budget(metric=LAT, value=-1.0)]), "budgets[0].value"),
    ("NaN budget", dict(budgets=[pb.Budget(metric=LAT, value=math.nan)]), "budgets[0].value"),
    ("infinite budget", dict(budgets=[pb.Budget(metric=LAT, value=math.inf)]), "budgets[0].value"),
    ("absurd absolute budget", dict(budgets=[pb.Budget(metric=LAT, value=1e12)]), "budgets[0].value"),
    ("relative budget above 1x", dict(budgets=[pb.Budget(metric=LAT, value=3.0, relative=True)]),
     "budgets[0].value"),
    ("absurd relative budget", dict(budgets=[pb.Budget(metric=LAT, value=1e-9, relative=True)]),
     "budgets[0].value"),
    ("unspecified metric", dict(budgets=[pb.Budget(value=0.5)]), "budgets[0].metric"),
    ("negative metric -1", dict(budgets=[pb.Budget(metric=-1, value=0.5)]), "budgets[0].metric"),
    ("negative metric -4", dict(budgets=[pb.Budget(metric=-4, value=0.5)]), "budgets[0].metric"),
    ("undefined metric", dict(budgets=[pb.Budget(metric=99, value=0.5)]), "budgets[0].metric"),
    ("too many budgets", dict(budgets=[pb.Budget(metric=LAT, value=0.5, relative=True)] * 5), "budgets"),
    ("duplicate metric", dict(budgets=[pb.Budget(metric=LAT, value=0.5, relative=True),
                                       pb.Budget(metric=LAT, value=0.6, relative=True)]),
     "budgets[1].metric"),
    ("negative fine-tune", dict(finetune_epochs=-1.0), "finetune_epochs"),
    ("NaN fine-tune", dict(finetune_epochs=math.nan), "finetune_epochs"),
    ("undefined rl mode", dict(rl_mode=7), "rl_mode"),
    ("negative rl mode", dict(rl_mode=-1), "rl_mode"),
    ("1 MB model name", dict(model="m" * (1 << 20)), "model"),
    ("long dataset name", dict(dataset="d" * 129), "dataset"),
    ("long strategy", dict(strategy="s" * 4096), "strategy"),
    ("long upload id", dict(model=None, uploaded_model_id="u" * 200), "uploaded_model_id"),
    ("huge input size", dict(dataset="digits@256"), "dataset"),
    ("bad input size", dict(dataset="digits@big"), "dataset"),
    ("bad idempotency key", dict(idempotency_key="has spaces and / slashes"), "idempotency_key"),
]


@pytest.mark.parametrize("case,fields,field", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_job_spec_is_invalid_argument_naming_the_field(client, case, fields, field):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        client.submit(spec(**fields))
    assert time.monotonic() - t0 < 2.0, "validation on the RPC thread must be cheap"
    assert_invalid(err.value, f"spec.{field}")


def assert_invalid(exc: grpc.RpcError, field: str) -> None:
    """INVALID_ARGUMENT, the message starts with the field, a BadRequest names it, ≤ 1 KiB."""
    from services.errors import bad_request

    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert exc.details().startswith(f"{field}:"), exc.details()
    assert len(exc.details().encode()) <= 1024
    assert [f for f, _ in bad_request(exc)] == [field], bad_request(exc)


def test_a_check_that_needs_the_model_runs_in_the_job_and_names_the_field(client):
    """An unreachable size budget needs the model traced: SubmitJob accepts at once and the job
    ends FAILED with the field's name (the check ran in the job worker, not the RPC thread)."""
    t0 = time.monotonic()
    job = client.submit(spec(budgets=[pb.Budget(metric=LAT, value=0.7, relative=True),
                                      pb.Budget(metric=SIZE, value=1e-6)]))
    assert time.monotonic() - t0 < 2.0
    done = wait_state(client, job.id, {pb.JOB_STATE_FAILED, pb.JOB_STATE_SUCCEEDED})
    assert done.state == pb.JOB_STATE_FAILED
    assert done.reason.startswith("spec.budgets[1].value:") and "unreachable" in done.reason, done.reason


def test_unknown_job_is_not_found_everywhere(client):
    calls = [lambda: client.get("job-nope"), lambda: client.cancel("job-nope"),
             lambda: list(client.watch("job-nope")),
             lambda: client.download_result("job-nope", "/nonexistent-never-written")]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "job_id" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.submit(spec(model=None, uploaded_model_id="upl-nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details().startswith("spec.uploaded_model_id:")


def test_result_of_unfinished_job_is_failed_precondition_and_queue_full_is_exhausted(tmp_path):
    gate = Gate()
    svc = _service(tmp_path, gate, max_queued=2)
    try:
        with Client(f"127.0.0.1:{svc.port}") as c:
            running = c.submit(spec())
            assert gate.started.wait(10)
            queued = [c.submit(spec(seed=i)) for i in (1, 2)]
            assert [c.get(j.id).queue_position for j in queued] == [1, 2]
            with pytest.raises(grpc.RpcError) as err:
                c.submit(spec(seed=3))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details().startswith("queue:")
            for job in (running, queued[0]):
                with pytest.raises(grpc.RpcError) as err:
                    c.download_result(job.id, tmp_path / "r")
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "RUNNING" in err.value.details() or "QUEUED" in err.value.details()
            # cancelling a queued job is immediate, and it leaves the queue in order
            assert c.cancel(queued[0].id, "not needed").state == pb.JOB_STATE_CANCELLED
            assert c.get(queued[1].id).queue_position == 1
            gate.release.set()
            wait_state(c, queued[1].id, {pb.JOB_STATE_SUCCEEDED})
            assert c.get(running.id).state == pb.JOB_STATE_SUCCEEDED
            with pytest.raises(grpc.RpcError) as err:
                c.download_result(queued[0].id, tmp_path / "r")
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "CANCELLED (not needed)" in err.value.details()
    finally:
        gate.release.set()
        svc.stop()


def test_idempotency_key_returns_the_same_job(client, server):
    a = client.submit(spec(idempotency_key="nightly-2024-01-01"))
    b = client.submit(spec(idempotency_key="nightly-2024-01-01"))
    assert a.id == b.id
    with pytest.raises(grpc.RpcError) as err:
        client.submit(spec(idempotency_key="nightly-2024-01-01", trials=7))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.value.details().startswith("spec.idempotency_key:")
    wait_state(client, a.id, {pb.JOB_STATE_SUCCEEDED})
    assert metric_sum(scrape(server.metrics_port), "hwcompress_jobs_submitted_total") == 1


def test_fifty_concurrent_submissions_are_all_accounted_for(tmp_path):
    svc = _service(tmp_path, instant_work_for_tests, concurrency=2)
    target = f"127.0.0.1:{svc.port}"

    def submit(i: int) -> str:
        with Client(target) as c:  # one channel per caller: really concurrent clients
            return c.submit(spec(seed=i % 50, trials=2, idempotency_key=f"batch-{i % 50}")).id

    try:
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(submit, range(60)))  # 10 retries of already-sent keys mixed in
        assert len(set(ids)) == 50 and ids[50:] == ids[:10]
        with Client(target) as c:
            for job_id in set(ids):
                wait_state(c, job_id, {pb.JOB_STATE_SUCCEEDED})
            listed, token = [], ""
            for _ in range(20):
                page = c.list(page_size=7, page_token=token)
                listed += [j.id for j in page.jobs]
                token = page.next_page_token
                if not token:
                    break
            assert sorted(listed) == sorted(set(ids))
            m = scrape(svc.metrics_port)
            assert metric_sum(m, "hwcompress_jobs_submitted_total") == 50
            assert metric_sum(m, "hwcompress_jobs_finished_total", state="SUCCEEDED") == 50
            assert metric_sum(m, "hwcompress_jobs", state="SUCCEEDED") == 50
            assert metric_sum(m, "hwcompress_jobs", state="QUEUED") == 0
            assert metric_sum(m, "hwcompress_trials_total") == 100
            assert metric_sum(m, "hwcompress_job_queue_wait_seconds_count") == 50
            assert metric_sum(m, "grpc_server_handled_total", grpc_method="SubmitJob", grpc_code="OK") == 60
    finally:
        svc.stop()


def test_late_watcher_gets_the_history(client):
    job = client.submit(spec(trials=4))
    wait_state(client, job.id, {pb.JOB_STATE_SUCCEEDED})
    events = list(client.watch(job.id))
    kinds = [e.WhichOneof("kind") for e in events]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert kinds.count("trial") == 4 and kinds[-2:] == ["result", "state_change"]
    states = [e.state_change.state for e in events if e.WhichOneof("kind") == "state_change"]
    assert states == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED]
    assert events[-3].trial.best_accuracy == pytest.approx(0.53)
    resumed = list(client.watch(job.id, after_seq=events[2].seq))
    assert [e.seq for e in resumed] == [e.seq for e in events[3:]]


def test_auth_on_and_off(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    from services.client import read_token
    svc = _service(tmp_path, instant_work_for_tests, auth_token=read_token(str(token_file)))
    target = f"127.0.0.1:{svc.port}"
    try:
        for bad in (None, "wrong"):
            with Client(target, token=bad) as c:
                for call in (lambda: c.submit(spec()), lambda: c.list(), lambda: list(c.watch("x")),
                             lambda: c.profiles()):
                    with pytest.raises(grpc.RpcError) as err:
                        call()
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert err.value.details().startswith("authorization:")
        with Client(target, token="s3cret-token") as c:
            job = c.submit(spec())
            assert wait_state(c, job.id, {pb.JOB_STATE_SUCCEEDED}).id == job.id
            assert c.info().auth_required
        # health stays reachable without a token (probes carry none)
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        with grpc.insecure_channel(target) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        m = scrape(svc.metrics_port)
        assert metric_sum(m, "grpc_server_handled_total", grpc_code="Unauthenticated") == 8
    finally:
        svc.stop()
    # and off: the same calls without a token succeed
    svc = _service(tmp_path / "off", instant_work_for_tests)
    try:
        with Client(f"127.0.0.1:{svc.port}") as c:
            assert c.profiles().profiles and not c.info().auth_required
    finally:
        svc.stop()


def test_uploads_are_size_limited_checked_and_never_unpickled(client, server, tmp_path):
    from safetensors.torch import save_file

    from automl.models import build_model

    net = build_model("lenet5", 1, 10)
    good = tmp_path / "lenet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(good))
    up = client.upload(good, "lenet5", "digits")
    assert up.id.startswith("upl-") and up.format == pb.WEIGHTS_FORMAT_SAFETENSORS
    job = client.submit(spec(model=None, uploaded_model_id=up.id))
    assert job.spec.uploaded_model_id == up.id
    wait_state(client, job.id, {pb.JOB_STATE_SUCCEEDED})

    state_dict = tmp_path / "lenet.pt"
    torch.save(net.state_dict(), state_dict)
    assert client.upload(state_dict, "lenet5").format == pb.WEIGHTS_FORMAT_TORCH_STATE_DICT

    wrong_arch = tmp_path / "lenet-5-classes.safetensors"  # shapes that do not fit digits' 10 classes
    save_file({k: v.contiguous() for k, v in build_model("lenet5", 1, 5).state_dict().items()},
              str(wrong_arch))
    big = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(100_000)}, str(big))  # 400 kB > the 200 kB limit of this server
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": Exploit()}))  # a raw pickle: neither format
    evil_zip = tmp_path / "evil_zip.pt"
    torch.save({"w": Exploit()}, evil_zip)  # a torch zip whose pickle calls open()
    marker.unlink(missing_ok=True)

    cases = [(wrong_arch, "lenet5", grpc.StatusCode.INVALID_ARGUMENT, "chunk:"),
             (good, "alexnet", grpc.StatusCode.INVALID_ARGUMENT, "header.architecture:"),
             (big, "lenet5", grpc.StatusCode.RESOURCE_EXHAUSTED, "header.size_bytes:"),
             (evil, "lenet5", grpc.StatusCode.INVALID_ARGUMENT, "chunk:"),
             (evil_zip, "lenet5", grpc.StatusCode.INVALID_ARGUMENT, "chunk:")]
    for path, arch, code, prefix in cases:
        with pytest.raises(grpc.RpcError) as err:
            client.upload(path, arch)
        assert err.value.code() == code, (path.name, err.value.details())
        assert err.value.details().startswith(prefix), err.value.details()
    assert not marker.exists(), "an uploaded pickle was executed"
    m = scrape(server.metrics_port)
    assert metric_sum(m, "hwcompress_model_uploads_total", outcome="ok") == 2
    assert metric_sum(m, "hwcompress_model_uploads_total", outcome="too_large") == 1


def test_health_reflection_profiles_and_server_info(client, server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert {"hwcompress.v1.CompressionService", "grpc.health.v1.Health"} <= services
    profiles = {p.name: p for p in client.profiles().profiles}
    assert profiles["cpu-ort"].is_default and "bitfusion-sim" in profiles
    info = client.info()
    assert "lenet5" in info.models and "digits" in info.datasets and "uniform" in info.strategies
    assert info.max_upload_bytes == 200_000


def test_list_filters_by_state_and_rejects_bad_paging(client):
    ok = client.submit(spec())
    wait_state(client, ok.id, {pb.JOB_STATE_SUCCEEDED})
    assert [j.id for j in client.list([pb.JOB_STATE_SUCCEEDED]).jobs] == [ok.id]
    assert not client.list([pb.JOB_STATE_FAILED]).jobs
    for kwargs, field in ((dict(page_size=-1), "page_size"), (dict(page_token="garbage"), "page_token")):
        with pytest.raises(grpc.RpcError) as err:
            client.list(**kwargs)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field}:")

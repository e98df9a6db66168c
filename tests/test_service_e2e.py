"""End to end with the real search on embedded Ray: a ``hwcompress serve`` subprocess on a
loopback port, driven by the CLI and by a client generated from the .proto alone; cancel; and
/metrics scraped over HTTP and checked against what happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest

from services.client import Client
from services.proto.hwcompress.v1 import service_pb2 as pb
from services.testing import REPO, ServerProcess, metric_sum, scrape

MODEL, DATA = "lenet5", "digits"
BUDGET = "size_mb=0.5x"
"""A tiny job: reachable for LeNet-5 on this CPU's profile and over in seconds."""

RESULT_KEYS = {"policy", "accuracy_before_finetune", "accuracy_after_finetune", "latency_ms_predicted",
               "latency_ms_measured", "latency_ms_budget", "energy_mj_predicted", "size_mb",
               "evaluations", "wall_s", "strategy", "model", "dataset"}  # + pareto when multi-objective


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("e2e") / "data", ["--concurrency", "1"])
    srv.start(timeout=90)
    yield srv
    assert srv.terminate() == 0, srv.log()


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "GRPC_VERBOSITY": "ERROR"})


def test_cli_submit_watch_result(server, tmp_path):
    sub = cli("submit", "--server", f"localhost:{server.port}", "--model", MODEL, "--data", DATA,
              "--budget", BUDGET, "--strategy", "uniform", "--trials", "4", "--watch")
    assert sub.returncode == 0, sub.stderr[-3000:] + server.log()
    job_id = sub.stdout.splitlines()[0].strip()
    assert job_id.startswith("job-")
    assert "SUCCEEDED" in sub.stderr

    out = tmp_path / "res"
    res = cli("result", "--server", f"localhost:{server.port}", job_id, "--out", str(out))
    assert res.returncode == 0, res.stderr
    result = json.loads((out / "result.json").read_text())
    assert RESULT_KEYS <= set(result), RESULT_KEYS - set(result)
    assert result["model"] == MODEL and result["strategy"] == "uniform"
    # byte for byte what the search wrote, and the exported model arrived intact
    server_side = server.data_dir / "jobs" / job_id
    assert (out / "result.json").read_bytes() == (server_side / "result.json").read_bytes()
    assert (out / "compressed.onnx").read_bytes() == (server_side / "compressed.onnx").read_bytes()
    import onnx
    onnx.checker.check_model(onnx.load(str(out / "compressed.onnx")))

    got = json.loads(cli("get", "--server", f"localhost:{server.port}", job_id).stdout)
    assert got["state"] == "JOB_STATE_SUCCEEDED" and got["progress"]["trials_done"] >= 1


CLIENT_FROM_PROTO = textwrap.dedent('''
    """Only grpcio and the stubs generated from the .proto: no hwcompress code on sys.path."""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import grpc
    from hwcompress.v1 import service_pb2 as pb, service_pb2_grpc as rpc
    assert not any(m.split(".")[0] in ("services", "automl", "latency_models") for m in sys.modules)
    stub = rpc.CompressionServiceStub(grpc.insecure_channel(sys.argv[2]))
    profiles = [p.name for p in stub.ListHardwareProfiles(pb.ListHardwareProfilesRequest()).profiles]
    info = stub.GetServerInfo(pb.GetServerInfoRequest()).info
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=pb.JobSpec(
        model="lenet5", dataset="digits", strategy="random", trials=3, seed=1,
        budgets=[pb.Budget(metric=pb.BUDGET_METRIC_SIZE_MB, value=0.5, relative=True)]))).job
    kinds, final = [], None
    for resp in stub.WatchJob(pb.WatchJobRequest(job_id=job.id)):
        ev = resp.event
        kinds.append(ev.WhichOneof("kind"))
        if ev.WhichOneof("kind") == "state_change":
            final = pb.JobState.Name(ev.state_change.state)
    files, summary = {}, None
    for msg in stub.GetResult(pb.GetResultRequest(job_id=job.id)):
        if msg.WhichOneof("kind") == "summary":
            summary = msg.summary
        else:
            files[msg.chunk.name] = files.get(msg.chunk.name, b"") + msg.chunk.data
    print(json.dumps({"profiles": profiles, "strategies": list(info.strategies), "job": job.id,
                      "final": final, "kinds": kinds, "files": {k: len(v) for k, v in files.items()},
                      "result_keys": sorted(json.loads(summary.result_json)),
                      "policy_layers": len(summary.policy)}))
''')


def test_client_generated_from_the_proto_alone(server, tmp_path):
    from grpc_tools import protoc
    import grpc_tools

    gen = tmp_path / "gen"
    gen.mkdir()
    proto_root = REPO / "services" / "proto"
    rc = protoc.main(["protoc", f"-I{proto_root}", f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
                      f"--python_out={gen}", f"--grpc_python_out={gen}",
                      "hwcompress/v1/service.proto"])
    assert rc == 0
    script = tmp_path / "client.py"
    script.write_text(CLIENT_FROM_PROTO)
    # -I: isolated mode, neither the repo nor PYTHONPATH is importable
    proc = subprocess.run([sys.executable, "-I", str(script), str(gen), server.target], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert "cpu-ort" in out["profiles"] and "random" in out["strategies"]
    assert out["final"] == "JOB_STATE_SUCCEEDED"
    assert "trial" in out["kinds"] and out["kinds"][-2:] == ["result", "state_change"]
    assert out["files"]["compressed.onnx"] > 0 and out["files"]["result.json"] > 0
    assert RESULT_KEYS <= set(out["result_keys"]) and out["policy_layers"] > 0


def test_cancel_stops_a_running_search(server):
    with Client(server.target) as c:
        job = c.submit(pb.JobSpec(model=MODEL, dataset=DATA, strategy="random", trials=500, seed=7,
                                  budgets=[pb.Budget(metric=pb.BUDGET_METRIC_SIZE_MB, value=0.5,
                                                     relative=True)]))
        for event in c.watch(job.id):
            if event.WhichOneof("kind") == "trial":
                break
        with pytest.raises(grpc.RpcError) as err:  # not finished: no result yet
            list(c.stub.GetResult(pb.GetResultRequest(job_id=job.id)))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        t0 = time.monotonic()
        c.cancel(job.id, "test cancels")
        events = list(c.watch(job.id, after_seq=event.seq))
        elapsed = time.monotonic() - t0
        final = c.get(job.id)
        assert final.state == pb.JOB_STATE_CANCELLED and final.reason == "test cancels"
        assert elapsed < 30, f"cancel took {elapsed:.1f}s"
        assert final.progress.trials_done < 500
        # after CANCELLED nothing else happens to the job
        time.sleep(1.0)
        assert c.get(job.id).progress.trials_done == final.progress.trials_done
        assert events[-1].state_change.state == pb.JOB_STATE_CANCELLED


def test_metrics_match_what_happened(server):
    """Runs last in this module: every job above is accounted for on /metrics."""
    with Client(server.target) as c:
        jobs = list(c.list(page_size=500).jobs)
        trials = {j.id: sum(1 for e in c.watch(j.id) if e.WhichOneof("kind") == "trial") for j in jobs}
        for _ in range(3):
            c.get(jobs[0].id)
    m = scrape(server.metrics_port)
    by_state: dict[str, int] = {}
    for j in jobs:
        name = pb.JobState.Name(j.state).removeprefix("JOB_STATE_")
        by_state[name] = by_state.get(name, 0) + 1
    assert metric_sum(m, "hwcompress_jobs_submitted_total") == len(jobs) == 3
    for state in ("SUCCEEDED", "CANCELLED", "FAILED"):
        assert metric_sum(m, "hwcompress_jobs_finished_total", state=state) == by_state.get(state, 0)
    for state in ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"):
        assert metric_sum(m, "hwcompress_jobs", state=state) == by_state.get(state, 0)
    assert metric_sum(m, "hwcompress_trials_total") == sum(trials.values()) > 0
    assert metric_sum(m, "hwcompress_trials_total", strategy="random") == sum(
        n for j in jobs for jid, n in trials.items() if jid == j.id and j.spec.strategy == "random")
    assert metric_sum(m, "hwcompress_latency_predictions_total", hardware_profile="cpu-ort") == sum(trials.values())
    assert metric_sum(m, "hwcompress_evaluation_duration_seconds_count") >= 1
    assert metric_sum(m, "hwcompress_job_duration_seconds_count") == 3
    assert metric_sum(m, "hwcompress_job_queue_wait_seconds_count") == 3
    assert metric_sum(m, "hwcompress_ray_cpus", kind="total") >= 1
    assert metric_sum(m, "hwcompress_ray_nodes") >= 1
    # no running job left: the per-job gauges are gone (bounded cardinality)
    assert not m.get("hwcompress_running_job_best_accuracy")
    # per-RPC metrics under go-grpc-prometheus' names and labels
    svc = "hwcompress.v1.CompressionService"
    assert metric_sum(m, "grpc_server_handled_total", grpc_service=svc, grpc_method="SubmitJob",
                      grpc_code="OK", grpc_type="unary") == 3
    assert metric_sum(m, "grpc_server_handled_total", grpc_method="GetResult",
                      grpc_code="FailedPrecondition", grpc_type="server_stream") == 1
    assert metric_sum(m, "grpc_server_started_total", grpc_method="GetJob") >= 3
    assert metric_sum(m, "grpc_server_handling_seconds_count", grpc_method="GetJob") == \
        metric_sum(m, "grpc_server_handled_total", grpc_method="GetJob")


def test_serve_as_a_user_starts_it_completes_a_job(tmp_path):
    """`hwcompress serve --port P --metrics-port M --data-dir D` from the installed console script,
    default host and gRPC logging (nothing of ServerProcess' test settings), then the first job
    submitted to it. It used to end FAILED: the job's worker thread forked Ray's GCS after gRPC's
    threads existed ("skipping fork() handlers"), and the child crashed."""
    import shutil
    from services.testing import free_port

    exe = shutil.which("hwcompress", path=str(Path(sys.executable).parent)) or shutil.which("hwcompress")
    assert exe, "the hwcompress console script is not installed"
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([exe, "serve", "--port", str(port), "--metrics-port", str(metrics_port),
                                 "--data-dir", str(tmp_path / "data")], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # a user waits for the "listening" line
        while "listening on port" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.5)
        sub = subprocess.run([exe, "submit", "--server", f"localhost:{port}", "--model", MODEL,
                              "--data", DATA, "--budget", BUDGET, "--strategy", "uniform",
                              "--trials", "3", "--watch"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        served = log_path.read_text(errors="replace")
        assert sub.returncode == 0, sub.stderr[-3000:] + served[-4000:]
        assert "SUCCEEDED" in sub.stderr
        assert "skipping fork() handlers" not in served, served[-4000:]
        assert "Segmentation fault" not in served
    finally:
        proc.send_signal(15)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, log_path.read_text(errors="replace")[-4000:]


def test_a_joint_rl_job_submitted_over_grpc_runs_to_a_result(server, tmp_path):
    """RlMode JOINT reaches the agent as its own 'joint' mode (keep ratio and bit-widths per
    layer): a tiny DDPG job (LeNet-5 on digits, 3 episodes, the simulated bit-flexible profile)."""
    from services.store import JobStore

    with Client(server.target) as c:
        job = c.submit(pb.JobSpec(model=MODEL, dataset=DATA, strategy="ddpg", trials=3, seed=0,
                                  rl_mode=pb.RL_MODE_JOINT, hardware_profile="bitfusion-sim",
                                  budgets=[pb.Budget(metric=pb.BUDGET_METRIC_SIZE_MB, value=0.5,
                                                     relative=True)]))
        assert job.spec.rl_mode == pb.RL_MODE_JOINT
        for _ in c.watch(job.id):
            pass
        final = c.get(job.id)
        assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
        summary = c.download_result(job.id, tmp_path / "res")
    assert summary.policy and json.loads(summary.result_json)["strategy"] == "ddpg"
    trials = [e["payload"] for e in JobStore(server.data_dir / "jobs.sqlite").events_after(job.id)
              if e["type"] == "trial"]
    # the agent's own state travels in the trial record's strategy_state (automl.records.TrialEvent)
    assert trials and {t["strategy_state"].get("rl_mode") for t in trials} == {"joint"}, trials[:1]

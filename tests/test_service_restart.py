"""Nothing is lost on restart: SIGKILL the server mid-job, start it again on the same data
directory, and the job resumes (its finished evaluations are reused) and succeeds; SIGTERM
drains (exit 0, the running job goes back to QUEUED, not FAILED) and the next start finishes it.
Real ``hwcompress serve`` subprocesses, real search on the server's embedded Ray head, which
must not outlive a killed server's restart."""

from __future__ import annotations

import json
import os
import signal
import time


from services.client import Client
from services.proto.hwcompress.v1 import service_pb2 as pb
from services.ray_local import _group_alive
from services.store import JobStore
from services.testing import ServerProcess

SPEC = dict(model="lenet5", dataset="digits", strategy="random", trials=8, seed=3,
            budgets=[pb.Budget(metric=pb.BUDGET_METRIC_SIZE_MB, value=0.5, relative=True)])


def _wait_trials(client: Client, job_id: str, n: int, timeout: float = 180) -> int:
    """Block until the job has reported ``n`` trials; return the last event's seq."""
    deadline = time.monotonic() + timeout
    seen = 0
    for event in client.watch(job_id):
        if event.WhichOneof("kind") == "trial":
            seen += 1
            if seen >= n:
                return event.seq
        assert time.monotonic() < deadline, "no progress"
    raise AssertionError(f"job ended after {seen} trials: {client.get(job_id)}")


def _pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                pass
    return pids


def test_sigkill_then_sigterm_mid_job_and_the_job_still_finishes(tmp_path):
    """One job through a crash and a clean stop (one flow, to keep the suite short):
    run -> SIGKILL -> restart resumes it -> SIGTERM drains it back to QUEUED -> restart -> done."""
    data = tmp_path / "data"
    srv = ServerProcess(data)
    srv.start(timeout=90)
    try:
        with Client(srv.target) as c:
            job = c.submit(pb.JobSpec(**SPEC, idempotency_key="restart-test"))
            _wait_trials(c, job.id, 2)
        pgid = srv.proc.pid
        ray_group = json.loads((data / "embedded-ray.json").read_text())["pid"]  # its own group
        assert _group_alive(ray_group)
        srv.kill()  # SIGKILL: no drain, no chance to write anything
        assert JobStore(data / "jobs.sqlite").get_job(job.id)["state"] == "RUNNING"
        evaluated_before = (data / "jobs" / job.id / "state" / "evaluations.jsonl").read_text().count("\n")
        assert evaluated_before >= 1

        srv.start(timeout=90)
        # the killed server's embedded Ray (its own process group) is gone: its `ray start`
        # leader got SIGTERM when the server died, and the new server reaps whatever is left
        deadline = time.monotonic() + 15
        while (_pids_in_group(pgid) or _group_alive(ray_group)) and time.monotonic() < deadline:
            time.sleep(0.5)
        leftovers = _pids_in_group(pgid) + _pids_in_group(ray_group)
        for group in (pgid, ray_group):  # never leave strays behind, but fail
            if _group_alive(group):
                os.killpg(group, signal.SIGKILL)
        assert not leftovers, f"processes of the killed server survived its restart: {leftovers}"
        assert json.loads((data / "embedded-ray.json").read_text())["pid"] != ray_group
        with Client(srv.target) as c:
            # the same idempotency key still names the same job after the crash
            assert c.submit(pb.JobSpec(**SPEC, idempotency_key="restart-test")).id == job.id
            resumed = c.get(job.id)
            assert resumed.attempts >= 1 and resumed.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
            for event in c.watch(job.id):  # wait until the resumed run reports a trial
                if event.WhichOneof("kind") == "trial" and c.get(job.id).attempts == 2:
                    break

        t0 = time.monotonic()
        assert srv.terminate(timeout=90) == 0, srv.log()  # SIGTERM drains
        assert time.monotonic() - t0 < 60
        stored = JobStore(data / "jobs.sqlite").get_job(job.id)
        assert stored["state"] == "QUEUED" and "resumes" in stored["reason"], stored

        assert not (data / "embedded-ray.json").exists()  # a clean stop stops its Ray too
        srv.start(timeout=90)
        with Client(srv.target) as c:
            events = list(c.watch(job.id, reconnect_s=60))
            final = c.get(job.id)
            assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
            assert final.attempts == 3
            # a restart never repeats a trial a watcher had, and progress counts each trial once
            indexes = [e.trial.index for e in events if e.WhichOneof("kind") == "trial"]
            assert len(indexes) == len(set(indexes)), indexes
            assert final.progress.trials_done == len(indexes), (final.progress, indexes)
            reasons = [e.state_change.reason for e in events if e.WhichOneof("kind") == "state_change"]
            assert any("server restarted" in r for r in reasons), reasons
            assert any("server shut down" in r for r in reasons), reasons
            summary = c.download_result(job.id, tmp_path / "result")
        result = json.loads(summary.result_json)
        assert result["evaluations"] >= evaluated_before
    finally:
        assert srv.terminate() == 0, srv.log()

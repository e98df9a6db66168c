"""/metrics follows Prometheus' conventions: ``promtool check metrics`` is clean on a real scrape
of a real server holding a running job (so every per-job series exists), base units in names
(seconds, bytes, joules), one unit per series, and ``hwcompress_build_info``."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from services.client import Client
from services.proto.hwcompress.v1 import service_pb2 as pb
from services.server import ServerConfig, Service
from services.testing import metric_sum, scrape

from .test_deploy_prometheus import require


class HeldJob:
    """A TEST-ONLY work function: reports a start with resolved limits and one trial, then
    blocks until released, so the running-job series exist while the test scrapes."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.trial_sent = threading.Event()

    def __call__(self, spec, on_event, should_stop):
        on_event({"type": "started", "limits": {"latency_ms": 0.25, "size_mb": 0.05}})
        on_event({"type": "trial", "index": 0, "total": spec["trials"], "accuracy": 0.9,
                  "latency_ms": 0.2, "feasible": True, "error": None, "best_accuracy": 0.9,
                  "strategy": spec["strategy"], "wall_s": 0.01})
        self.trial_sent.set()
        deadline = time.monotonic() + 60
        while not self.release.is_set() and not should_stop() and time.monotonic() < deadline:
            time.sleep(0.02)
        Path(spec["out_dir"], "result.json").write_text('{"policy": {"layers": {}}}')
        return {"policy": {"layers": {}}, "accuracy_after_finetune": 0.9, "strategy": spec["strategy"]}


def test_promtool_check_metrics_clean_on_a_real_scrape(tmp_path):
    promtool = require("promtool")
    work = HeldJob()
    cfg = ServerConfig(data_dir=str(tmp_path / "data"), port=0, host="127.0.0.1", metrics_port=0,
                       metrics_host="127.0.0.1", drain_grace_s=1, drain_jobs_s=10)
    svc = Service(cfg, work=work).start()
    try:
        with Client(f"127.0.0.1:{svc.port}") as c:
            with pytest.raises(Exception):
                c.submit(pb.JobSpec(model="lenet5", dataset="digits", strategy="uniform", trials=0))
            budgets = [pb.Budget(metric=pb.BUDGET_METRIC_LATENCY_MS, value=0.5, relative=True),
                       pb.Budget(metric=pb.BUDGET_METRIC_SIZE_MB, value=0.05),
                       pb.Budget(metric=pb.BUDGET_METRIC_ENERGY_MJ, value=2.0)]
            job = c.submit(pb.JobSpec(model="lenet5", dataset="digits", strategy="uniform",
                                      trials=3, budgets=budgets))
            assert work.trial_sent.wait(30)
            time.sleep(0.2)
            text = urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics_port}/metrics",
                                          timeout=10).read()
            check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                                   timeout=60)
            assert check.returncode == 0, (check.stdout + check.stderr).decode()

            m = scrape(svc.metrics_port)
            labels = dict(job_id=job.id, model="lenet5", strategy="uniform")
            assert metric_sum(m, "hwcompress_running_job_best_latency_seconds", **labels) == pytest.approx(0.2e-3)
            assert metric_sum(m, "hwcompress_running_job_budget_seconds", **labels) == pytest.approx(0.25e-3)
            assert metric_sum(m, "hwcompress_running_job_budget_bytes", **labels) == pytest.approx(50_000)
            assert metric_sum(m, "hwcompress_running_job_budget_joules", **labels) == pytest.approx(2e-3)
            assert metric_sum(m, "hwcompress_running_job_budget_ratio", metric="latency_ms", **labels) == 0.5
            info = m["hwcompress_build_info"]
            assert len(info) == 1 and list(info.values()) == [1.0]
            assert dict(next(iter(info)))["version"] == c.info().version
            # no name carries an abbreviated or non-base unit
            for name in m:
                assert not name.endswith(("_ms", "_mj", "_mb")) and "_ms_" not in name, name

            work.release.set()
            deadline = time.monotonic() + 30
            while c.get(job.id).state != pb.JOB_STATE_SUCCEEDED and time.monotonic() < deadline:
                time.sleep(0.05)
        m = scrape(svc.metrics_port)
        assert not [n for n in m if n.startswith("hwcompress_running_job_")
                    and m[n]], "per-job series outlive the job"
    finally:
        work.release.set()
        svc.stop()

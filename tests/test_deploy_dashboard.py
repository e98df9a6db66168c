"""The Grafana dashboard: a valid dashboard whose datasources the provisioning defines, and, end
to end, every panel's PromQL evaluated by a real Prometheus that scraped a real ``hwcompress
serve`` while it ran real jobs: each query must return a non-empty, sane result, and may only
name metrics the service exports."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from services.client import Client
from services.proto.hwcompress.v1 import service_pb2 as pb
from services.testing import ServerProcess, free_port, scrape

from .test_deploy_prometheus import require

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "hwcompress.json").read_text())
METRIC_RE = re.compile(r"\b((?:hwcompress|grpc_server)_[a-z_]+)\b")


def _panels() -> list[dict]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def test_dashboard_structure():
    assert isinstance(DASHBOARD["schemaVersion"], int) and DASHBOARD["schemaVersion"] >= 36
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    provisioned = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    # the datasource is a variable (any Prometheus), defaulting to the provisioned one
    ds_var = variables["datasource"]
    assert ds_var["type"] == "datasource" and ds_var["query"] == "prometheus"
    assert uids.get(ds_var["current"]["value"]) == "prometheus"
    var_ds = {"type": "prometheus", "uid": "${datasource}"}
    for v in DASHBOARD["templating"]["list"]:
        assert v.get("datasource", var_ds) == var_ds, v["name"]
    for p in _panels():
        assert p["title"] and p["description"] and p["targets"], p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
        for ds in [p["datasource"], *(t["datasource"] for t in p["targets"])]:
            assert ds == var_ds, (p["title"], ds)
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            used = set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}
            assert used <= set(variables), (p["title"], used)
    assert "prometheus" not in json.dumps(_panels()).replace('"type": "prometheus"', ""), \
        "a panel names a datasource uid instead of $datasource"
    titles = " ".join(p["title"].lower() for p in _panels())
    for needed in ("versions serving", "size budget", "jobs by state", "per minute", "queue wait", "job duration", "trials per second",
                   "best accuracy", "evaluation duration", "requests per second", "error ratio",
                   "predictions", "ray cpus", "ray nodes"):
        assert needed in titles, needed


class Prometheus:
    """A real Prometheus on loopback scraping one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
               "rule_files": ["alerts.yml"],
               "scrape_configs": [{"job_name": "hwcompress", "static_configs": [{"targets": [target]}]}]}
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        shutil.copy(DEPLOY / "prometheus" / "alerts.yml", workdir / "alerts.yml")
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [require("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError("prometheus did not become ready")

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        body = json.loads(urllib.request.urlopen(url, timeout=30).read())
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


SPEC = dict(model="lenet5", dataset="digits",
            budgets=[pb.Budget(metric=pb.BUDGET_METRIC_SIZE_MB, value=0.5, relative=True)])
LATENCY_BUDGET = pb.Budget(metric=pb.BUDGET_METRIC_LATENCY_MS, value=50.0)


def test_every_panel_query_returns_sane_data_from_a_real_prometheus(tmp_path):
    require("prometheus")
    srv = ServerProcess(tmp_path / "data").start(timeout=90)
    prom = None
    try:
        prom = Prometheus(tmp_path / "prom", f"127.0.0.1:{srv.metrics_port}")
        t_start = time.time()
        with Client(srv.target) as c:
            with pytest.raises(Exception):  # one client error, so error ratios have a numerator
                c.submit(pb.JobSpec(**{**SPEC, "trials": 0}))
            done = c.submit(pb.JobSpec(**SPEC, strategy="uniform", trials=3))
            for _ in c.watch(done.id):
                pass
            assert c.get(done.id).state == pb.JOB_STATE_SUCCEEDED
            # the running job also has an absolute latency budget, so every budget panel has a series
            running = c.submit(pb.JobSpec(**{**SPEC, "budgets": [*SPEC["budgets"], LATENCY_BUDGET]},
                                          strategy="random", trials=400, seed=5))
            seen = 0
            for event in c.watch(running.id):
                seen += event.WhichOneof("kind") == "trial"
                if seen >= 3:
                    break
            time.sleep(4)  # a few more scrapes with the job running
            exported = set(scrape(srv.metrics_port))
            raw = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10).read()
            check = subprocess.run([require("promtool"), "check", "metrics"], input=raw,
                                   capture_output=True, timeout=60)
            assert check.returncode == 0, (check.stdout + check.stderr).decode()
            bad: list[str] = []
            for panel in _panels():
                for target in panel["targets"]:
                    expr = (target["expr"].replace("$__rate_interval", "30s")
                            .replace("$job_id", running.id))
                    names = set(METRIC_RE.findall(expr))
                    missing = {n for n in names if n not in exported}
                    if missing:
                        bad.append(f"{panel['title']}: names unexported metrics {sorted(missing)}")
                        continue
                    data = prom.api("query_range", query=expr, start=f"{t_start:.3f}",
                                    end=f"{time.time():.3f}", step="1")
                    values = [float(v) for series in data["result"] for _, v in series["values"]]
                    finite = [v for v in values if math.isfinite(v)]
                    if not finite:
                        bad.append(f"{panel['title']} [{target['refId']}]: no data for {expr}")
                    elif min(finite) < 0:
                        bad.append(f"{panel['title']}: negative value {min(finite)} for {expr}")
                    elif panel["fieldConfig"]["defaults"]["unit"] == "percentunit" and max(finite) > 1 + 1e-9:
                        bad.append(f"{panel['title']}: ratio {max(finite)} > 1 for {expr}")
            # the template variable's own query finds the running job
            labels = prom.api("label/job_id/values", **{"match[]": "hwcompress_running_job_best_accuracy"})
            assert running.id in labels
            c.cancel(running.id, "test over")
            assert not bad, "\n".join(bad)
            # and the alert rules loaded against the real series, none firing on a healthy run
            rules = prom.api("rules")
            states = {r["name"]: r["state"] for g in rules["groups"] for r in g["rules"]}
            assert len(states) == 7 and set(states.values()) == {"inactive"}, states
    finally:
        if prom is not None:
            prom.stop()
        assert srv.terminate() == 0, srv.log()

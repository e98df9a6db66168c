"""Render the generated deploy files: the Grafana dashboard (``grafana/dashboards/hwcompress.json``)
from one list of panels, its Kubernetes ConfigMap (``k8s/grafana-dashboard.yaml``), and the
Prometheus ConfigMap (``k8s/prometheus-config.yaml``: ``k8s/prometheus.yml`` + the same
``prometheus/alerts.yml``), so nothing is written twice by hand and copies never drift.
``python deploy/render.py [--check]`` (a test runs ``--check``).

Every query uses only metrics ``hwcompress serve`` exports (docs/service.md); the deploy
end-to-end test evaluates each one against a real Prometheus scraping a real server.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "grafana" / "dashboards" / "hwcompress.json"
CONFIGMAP = HERE / "k8s" / "grafana-dashboard.yaml"
PROM_CONFIGMAP = HERE / "k8s" / "prometheus-config.yaml"
DS = {"type": "prometheus", "uid": "${datasource}"}  # the dashboard's datasource variable
DEFAULT_DS = "prometheus"   # its default: the uid grafana/provisioning/datasources defines
RI = "$__rate_interval"
SVC = 'grpc_service="hwcompress.v1.CompressionService"'
JOB = 'job_id=~"$job_id"'


def q(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legendFormat": legend}


# (title, type, unit, description, [queries], width)
ROWS: list[tuple[str, list[tuple[str, str, str, str, list[dict], int]]]] = [
    ("Jobs", [
        ("Jobs by state", "timeseries", "short",
         "Jobs currently in each state (read from the jobs database at every scrape).",
         [q("sum by (state) (hwcompress_jobs)", "{{state}}")], 8),
        ("Submissions and completions per minute", "timeseries", "short",
         "Accepted SubmitJob calls per minute, and jobs reaching a final state per minute by that state.",
         [q(f"sum(rate(hwcompress_jobs_submitted_total[{RI}])) * 60", "submitted"),
          q(f"sum by (state) (rate(hwcompress_jobs_finished_total[{RI}])) * 60", "{{state}}")], 8),
        ("Running / queued", "stat", "short",
         "Jobs running now and waiting in the queue, against the configured limits.",
         [q('sum(hwcompress_jobs{state="RUNNING"})', "running"),
          q('sum(hwcompress_jobs{state="QUEUED"})', "queued"),
          q("max(hwcompress_max_concurrent_jobs)", "concurrency")], 8),
        ("Queue wait (p50 / p95)", "timeseries", "s",
         "How long jobs waited before a worker started them.",
         [q(f"histogram_quantile(0.5, sum by (le) (rate(hwcompress_job_queue_wait_seconds_bucket[{RI}])))", "p50"),
          q(f"histogram_quantile(0.95, sum by (le) (rate(hwcompress_job_queue_wait_seconds_bucket[{RI}])))", "p95")], 12),
        ("Job duration (p50 / p95)", "timeseries", "s",
         "Wall time from a job's first start to its final state, by final state.",
         [q(f"histogram_quantile(0.5, sum by (le, state) (rate(hwcompress_job_duration_seconds_bucket[{RI}])))", "p50 {{state}}"),
          q(f"histogram_quantile(0.95, sum by (le, state) (rate(hwcompress_job_duration_seconds_bucket[{RI}])))", "p95 {{state}}")], 12),
    ]),
    ("Search", [
        ("Trials per second by strategy", "timeseries", "ops",
         "Policies evaluated per second (trials, or RL episodes), by strategy.",
         [q(f"sum by (strategy) (rate(hwcompress_trials_total[{RI}]))", "{{strategy}}")], 8),
        ("Evaluation duration (p50 / p95)", "timeseries", "s",
         "Wall time of one policy evaluation on Ray (compress a copy + accuracy on the validation slice).",
         [q(f"histogram_quantile(0.5, sum by (le) (rate(hwcompress_evaluation_duration_seconds_bucket[{RI}])))", "p50"),
          q(f"histogram_quantile(0.95, sum by (le) (rate(hwcompress_evaluation_duration_seconds_bucket[{RI}])))", "p95")], 8),
        ("Latency-table predictions per second", "timeseries", "ops",
         "Whole-model latency predictions made from latency tables, by hardware profile.",
         [q(f"sum by (hardware_profile) (rate(hwcompress_latency_predictions_total[{RI}]))", "{{hardware_profile}}")], 8),
    ]),
    ("Running jobs ($job_id)", [
        ("Best accuracy of running jobs", "timeseries", "percentunit",
         "Best feasible accuracy found so far by each running job (only running jobs have a series).",
         [q(f"hwcompress_running_job_best_accuracy{{{JOB}}}", "{{job_id}} {{model}} {{strategy}}")], 8),
        ("Best policy's latency against the budget", "timeseries", "s",
         "Predicted latency of each running job's best feasible policy, and its latency budget "
         "(absolute; a relative budget appears once the search resolved it).",
         [q(f"hwcompress_running_job_best_latency_seconds{{{JOB}}}", "{{job_id}} best"),
          q(f"hwcompress_running_job_budget_seconds{{{JOB}}}", "{{job_id}} budget")], 8),
        ("Progress", "bargauge", "percentunit",
         "Trials done / trials planned, and seconds since the job's last event (stuck jobs grow).",
         [q(f"hwcompress_running_job_trials_done{{{JOB}}} / hwcompress_running_job_trials_target{{{JOB}}}", "{{job_id}}")], 4),
        ("Seconds since last progress", "stat", "s",
         "Time since each running job's last trial or start; the HwcompressJobNoProgress alert fires past 15 min.",
         [q(f"time() - hwcompress_running_job_last_progress_timestamp_seconds{{{JOB}}}", "{{job_id}}")], 4),
        ("Size budget of running jobs", "stat", "decbytes",
         "Each running job's model-size budget (absolute; relative budgets once resolved).",
         [q(f"hwcompress_running_job_budget_bytes{{{JOB}}}", "{{job_id}}")], 12),
        ("Relative budgets as submitted", "stat", "percentunit",
         "Budgets given as a fraction of the uncompressed model, per metric.",
         [q(f"hwcompress_running_job_budget_ratio{{{JOB}}}", "{{job_id}} {{metric}}")], 12),
    ]),
    ("gRPC", [
        ("Requests per second by method", "timeseries", "reqps",
         "Completed RPCs per second by method.",
         [q(f"sum by (grpc_method) (rate(grpc_server_handled_total{{{SVC}}}[{RI}]))", "{{grpc_method}}")], 8),
        ("Error ratio by method", "timeseries", "percentunit",
         "Share of RPCs that did not end OK, by method (0 when there were none).",
         [q(f'(sum by (grpc_method) (rate(grpc_server_handled_total{{{SVC},grpc_code!="OK"}}[{RI}])) '
            f'or sum by (grpc_method) (rate(grpc_server_handled_total{{{SVC}}}[{RI}])) * 0) '
            f'/ sum by (grpc_method) (rate(grpc_server_handled_total{{{SVC}}}[{RI}]))', "{{grpc_method}}")], 8),
        ("Handling time p95 by method", "timeseries", "s",
         "95th percentile of RPC handling time (streams: until the stream ends).",
         [q(f"histogram_quantile(0.95, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{{{SVC}}}[{RI}])))", "{{grpc_method}}")], 8),
    ]),
    ("Ray", [
        ("Ray CPUs", "timeseries", "short",
         "CPUs in the Ray cluster the service runs searches on: total and currently available.",
         [q("sum by (kind) (hwcompress_ray_cpus)", "{{kind}}")], 12),
        ("Ray nodes", "stat", "short", "Alive nodes in the Ray cluster.",
         [q("max(hwcompress_ray_nodes)", "nodes")], 12),
    ]),
    ("Build", [
        ("Versions serving", "table", "short",
         "hwcompress_build_info: the hwcompress, Python, torch, Ray and ONNX Runtime versions of "
         "each scraped server (a mixed fleet shows several rows).",
         [q("count by (version, python_version, torch_version, ray_version, onnxruntime_version) "
            "(hwcompress_build_info)", "{{version}}")], 24),
    ]),
]


def build() -> dict:
    panels: list[dict] = []
    pid, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x = pid + 1, y + 1, 0
        for title, ptype, unit, desc, queries, width in row_panels:
            if x + width > 24:
                x, y = 0, y + 8
            targets = [{"refId": chr(ord("A") + i), "datasource": DS, "expr": t["expr"],
                        "legendFormat": t["legendFormat"], "range": True} for i, t in enumerate(queries)]
            panels.append({"id": pid, "type": ptype, "title": title, "description": desc,
                           "datasource": DS, "gridPos": {"h": 8, "w": width, "x": x, "y": y},
                           "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                           "options": {}, "targets": targets})
            pid, x = pid + 1, x + width
        y += 8
    return {
        "uid": "hwcompress", "title": "hwcompress", "tags": ["hwcompress", "grpc", "ray"],
        "schemaVersion": 39, "version": 1, "editable": True, "timezone": "browser",
        "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []}, "links": [],
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "refresh": 1, "regex": "", "hide": 0, "multi": False,
            "includeAll": False, "options": [],
            "current": {"selected": True, "text": DEFAULT_DS, "value": DEFAULT_DS}}, {
            "name": "job_id", "label": "running job", "type": "query", "datasource": DS,
            "query": {"query": "label_values(hwcompress_running_job_best_accuracy, job_id)",
                      "refId": "job_id"},
            "definition": "label_values(hwcompress_running_job_best_accuracy, job_id)",
            "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [], "sort": 1, "hide": 0}]},
        "panels": panels,
    }


def _configmap(name: str, labels: dict[str, str], files: dict[str, str], source: str) -> str:
    out = [f"# Generated by deploy/render.py from {source}: edit those, not this file.",
           "apiVersion: v1", "kind: ConfigMap", "metadata:", f"  name: {name}",
           "  namespace: hwcompress"]
    if labels:
        out.append("  labels:")
        out += [f'    {k}: "{v}"' for k, v in labels.items()]
    out.append("data:")
    for key, text in files.items():
        out.append(f"  {key}: |")
        out += [("    " + line) if line else "" for line in text.splitlines()]
    return "\n".join(out) + "\n"


def configmap(dashboard_json: str) -> str:
    return _configmap("hwcompress-grafana-dashboard", {"grafana_dashboard": "1"},
                      {"hwcompress.json": dashboard_json}, "deploy/render.py's panels")


def prometheus_configmap() -> str:
    return _configmap("hwcompress-prometheus", {},
                      {"prometheus.yml": (HERE / "k8s" / "prometheus.yml").read_text(),
                       "alerts.yml": (HERE / "prometheus" / "alerts.yml").read_text()},
                      "deploy/k8s/prometheus.yml and deploy/prometheus/alerts.yml")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    args = ap.parse_args(argv)
    text = json.dumps(build(), indent=2) + "\n"
    files = {DASHBOARD: text, CONFIGMAP: configmap(text), PROM_CONFIGMAP: prometheus_configmap()}
    stale = [p for p, t in files.items() if not p.is_file() or p.read_text() != t]
    if args.check:
        for p in stale:
            print(f"stale: {p}", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(files[p])
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The service's Prometheus metrics, on their own registry and HTTP port.

Names follow Prometheus conventions (base units, ``_total`` counters) and, for RPCs, the names
go-grpc-prometheus uses, so stock gRPC dashboards and alerts work unchanged. Label values are
bounded: method names, status codes, states, strategy and profile names. The only job-id label
is on the ``hwcompress_running_job_*`` gauges, which exist for *running* jobs only (at most
``--concurrency`` series each) and are removed when the job ends; see docs/service.md.

A registry per server (not the process-global one) so that tests can run several servers in
one process and each /metrics shows exactly one server's numbers.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics,
                               start_http_server)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

disable_created_metrics()  # the *_created series double every counter and nobody here reads them

GRPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)  # go-grpc-prometheus
JOB_DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200)
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 14400)
EVAL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

RUNNING_JOB_LABELS = ("job_id", "model", "strategy")

BUDGET_UNITS: dict[str, tuple[str, float]] = {
    "latency_ms": ("seconds", 1e-3), "energy_mj": ("joules", 1e-3), "size_mb": ("bytes", 1e6),
    "macs": ("macs", 1.0)}
"""Budget metric (automl.core.BUDGET_METRICS) -> (base-unit suffix of its gauge, factor from the
budget's unit to it). size_mb counts decimal megabytes (automl.core: bits / 8 / 1e6)."""


def _build_info() -> dict[str, str]:
    import platform

    from .version import VERSION, dist_version as v
    return {"version": VERSION, "python_version": platform.python_version(),
            "torch_version": v("torch"), "ray_version": v("ray"),
            "onnxruntime_version": v("onnxruntime")}


BUILD_INFO = _build_info()


class _StateCollector(Collector):
    """``hwcompress_jobs{state}`` read from the database at scrape time, so the gauge is right
    after a restart and can never drift from what GetJob reports."""

    def __init__(self, count_by_state: Callable[[], dict[str, int]], states: tuple[str, ...]) -> None:
        self._count = count_by_state
        self._states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("hwcompress_jobs", "Jobs currently in each state.", labels=["state"])
        try:
            counts = self._count()
        except Exception:  # a scrape must never fail because of a transient DB error
            log.exception("counting jobs for /metrics")
            counts = {}
        for state in self._states:
            g.add_metric([state], counts.get(state, 0))
        yield g


class _RayCollector(Collector):
    """Ray cluster size, asked of the connected Ray at scrape time (0 before Ray starts)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cpus = GaugeMetricFamily("hwcompress_ray_cpus",
                                 "CPUs in the Ray cluster the service uses (kind=total|available).",
                                 labels=["kind"])
        nodes = GaugeMetricFamily("hwcompress_ray_nodes", "Alive nodes in the Ray cluster.")
        total = available = 0.0
        alive = 0
        try:
            import ray
            if ray.is_initialized():
                total = float(ray.cluster_resources().get("CPU", 0.0))
                available = float(ray.available_resources().get("CPU", 0.0))
                alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        except Exception:
            log.debug("asking Ray for its resources", exc_info=True)
        cpus.add_metric(["total"], total)
        cpus.add_metric(["available"], available)
        nodes.add_metric([], alive)
        yield cpus
        yield nodes


class ServiceMetrics:
    """Every metric the service exports (see docs/service.md for the list and its meaning)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        rpc = ["grpc_type", "grpc_service", "grpc_method"]
        self.grpc_started = Counter("grpc_server_started_total",
                                    "RPCs started on the server.", rpc, registry=r)
        self.grpc_handled = Counter("grpc_server_handled_total",
                                    "RPCs completed on the server, regardless of success or failure.",
                                    [*rpc, "grpc_code"], registry=r)
        self.grpc_msg_received = Counter("grpc_server_msg_received_total",
                                         "RPC stream messages received on the server.", rpc, registry=r)
        self.grpc_msg_sent = Counter("grpc_server_msg_sent_total",
                                     "gRPC stream messages sent by the server.", rpc, registry=r)
        self.grpc_handling = Histogram("grpc_server_handling_seconds",
                                       "Response latency of RPCs handled by the server (seconds).",
                                       rpc, buckets=GRPC_BUCKETS, registry=r)

        self.jobs_submitted = Counter("hwcompress_jobs_submitted_total",
                                      "Jobs accepted by SubmitJob (idempotent re-submissions excluded).",
                                      registry=r)
        self.jobs_finished = Counter("hwcompress_jobs_finished_total",
                                     "Jobs that reached a final state, by that state.", ["state"],
                                     registry=r)
        self.job_duration = Histogram("hwcompress_job_duration_seconds",
                                      "Wall time from a job's first start to its final state.",
                                      ["state"], buckets=JOB_DURATION_BUCKETS, registry=r)
        self.queue_wait = Histogram("hwcompress_job_queue_wait_seconds",
                                    "Time a job waited in the queue before it started.",
                                    buckets=QUEUE_WAIT_BUCKETS, registry=r)
        self.trials = Counter("hwcompress_trials_total",
                              "Policies evaluated (trials, or RL episodes), by strategy and outcome "
                              "(feasible | infeasible | error).", ["strategy", "outcome"], registry=r)
        self.evaluation_duration = Histogram("hwcompress_evaluation_duration_seconds",
                                             "Wall time of one policy evaluation (trial/episode).",
                                             ["strategy"], buckets=EVAL_BUCKETS, registry=r)
        self.latency_predictions = Counter("hwcompress_latency_predictions_total",
                                           "Whole-model latency predictions made from a latency "
                                           "table (one per evaluated policy), by hardware profile.",
                                           ["hardware_profile"], registry=r)
        self.uploads = Counter("hwcompress_model_uploads_total", "UploadModel calls by outcome.",
                               ["outcome"], registry=r)
        self.upload_bytes = Counter("hwcompress_model_upload_bytes_total",
                                    "Bytes received by successful uploads.", registry=r)
        self.running_best_accuracy = Gauge(
            "hwcompress_running_job_best_accuracy",
            "Best feasible accuracy so far of each running job (only running jobs have a series).",
            RUNNING_JOB_LABELS, registry=r)
        self.running_best_latency = Gauge(
            "hwcompress_running_job_best_latency_seconds",
            "Predicted latency (seconds) of each running job's best feasible policy.",
            RUNNING_JOB_LABELS, registry=r)
        # one series per unit (Prometheus: one unit per metric, base units): an absolute limit
        # appears as soon as it is known (submitted absolute, or resolved by the search)
        self.running_budget_abs = {
            metric: Gauge(f"hwcompress_running_job_budget_{unit}",
                          f"Each running job's absolute {metric} budget, in {unit} (a relative "
                          f"budget appears here once the search resolved it).",
                          RUNNING_JOB_LABELS, registry=r)
            for metric, (unit, _) in BUDGET_UNITS.items()}
        self.running_budget_ratio = Gauge(
            "hwcompress_running_job_budget_ratio",
            "Each running job's relative budgets as submitted: a fraction of the uncompressed "
            "model's value of that metric.", [*RUNNING_JOB_LABELS, "metric"], registry=r)
        self.build_info = Gauge(
            "hwcompress_build_info",
            "Always 1; the labels say which hwcompress (and which runtimes) serve these metrics.",
            list(BUILD_INFO), registry=r)
        self.build_info.labels(*BUILD_INFO.values()).set(1)
        self.running_trials_done = Gauge(
            "hwcompress_running_job_trials_done", "Trials/episodes each running job has finished.",
            RUNNING_JOB_LABELS, registry=r)
        self.running_trials_target = Gauge(
            "hwcompress_running_job_trials_target", "Trials/episodes each running job will run.",
            RUNNING_JOB_LABELS, registry=r)
        self.running_last_progress = Gauge(
            "hwcompress_running_job_last_progress_timestamp_seconds",
            "Unix time of each running job's last event (start or trial): alert on staleness.",
            RUNNING_JOB_LABELS, registry=r)
        self.concurrency = Gauge("hwcompress_max_concurrent_jobs",
                                 "Configured number of jobs that may run at once.", registry=r)
        self.max_queued = Gauge("hwcompress_max_queued_jobs",
                                "Configured queue capacity (SubmitJob answers RESOURCE_EXHAUSTED "
                                "beyond it).", registry=r)
        self._running_gauges = (self.running_best_accuracy, self.running_best_latency,
                                self.running_trials_done, self.running_trials_target,
                                self.running_last_progress)
        self._budget_series: dict[str, set[tuple[Gauge, tuple[str, ...]]]] = {}
        for state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            # export zeros from the start: rate()/increase() cannot see a series' first increment
            self.jobs_finished.labels(state)
            self.job_duration.labels(state)
        r.register(_RayCollector())

    def watch_job_states(self, count_by_state: Callable[[], dict[str, int]],
                         states: tuple[str, ...]) -> None:
        self.registry.register(_StateCollector(count_by_state, states))

    # -- per running job -------------------------------------------------------------------
    def set_budget(self, labels: tuple[str, str, str], metric: str, value: float,
                   relative: bool) -> None:
        """Set the job's ``metric`` budget: a relative fraction as submitted, or an absolute limit
        in the budget's own unit (``latency_ms``...), exported in base units."""
        if relative:
            gauge, key, v = self.running_budget_ratio, (*labels, metric), value
        elif metric in BUDGET_UNITS:
            gauge, key = self.running_budget_abs[metric], tuple(labels)
            v = value * BUDGET_UNITS[metric][1]
        else:
            return
        gauge.labels(*key).set(v)
        self._budget_series.setdefault(labels[0], set()).add((gauge, key))

    def forget_job(self, labels: tuple[str, str, str]) -> None:
        """Drop a job's running-job series once it leaves RUNNING (bounded cardinality)."""
        for gauge in self._running_gauges:
            try:
                gauge.remove(*labels)
            except KeyError:
                pass
        for gauge, key in self._budget_series.pop(labels[0], set()):
            try:
                gauge.remove(*key)
            except KeyError:
                pass

    def serve(self, port: int, addr: str = "0.0.0.0"):
        """Start /metrics on ``addr:port``; returns (server, thread)."""
        return start_http_server(port, addr=addr, registry=self.registry)

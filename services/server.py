"""Assembling and running the service: gRPC server (+ health, reflection, interceptors),
job manager, store, metrics endpoint; and the SIGTERM drain.

Shutdown order matters: health flips to NOT_SERVING (load balancers stop sending), the gRPC
server stops accepting and gives in-flight RPCs a grace period, then the job manager asks running
jobs to stop at a trial boundary (they stay QUEUED and resume on the next start), then Ray is
disconnected. Nothing is marked failed because the server went away.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .catalog import Catalog
from .interceptors import BearerTokenInterceptor, MetricsInterceptor
from .jobs import JobManager, WorkFn
from .metrics import ServiceMetrics
from .proto.hwcompress.v1 import service_pb2 as pb
from .proto.hwcompress.v1 import service_pb2_grpc as pb_grpc
from .servicer import CompressionServicer
from .store import JobStore

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CompressionService"].full_name


@dataclass
class ServerConfig:
    """Everything ``hwcompress serve`` can set (flags and HWCOMPRESS_* env vars)."""

    data_dir: str = "hwcompress-data"
    port: int = 50051                 # 0: pick a free port (see Service.port)
    host: str = "[::]"
    metrics_port: int | None = 9464   # None: no /metrics endpoint
    metrics_host: str = "0.0.0.0"
    ray_address: str | None = None
    concurrency: int = 1
    max_queued: int = 1000
    auth_token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_upload_bytes: int = 100 * 1024 * 1024
    max_message_bytes: int = 4 * 1024 * 1024
    rpc_threads: int = 64
    datasets: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    quick_tables: bool = False
    drain_grace_s: float = 10.0
    drain_jobs_s: float = 60.0


class Service:
    """A running server. ``work`` overrides the job's work function (tests of queueing only)."""

    def __init__(self, config: ServerConfig, work: WorkFn | None = None) -> None:
        self.config = config
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = ServiceMetrics()
        self.store = JobStore(data_dir / "jobs.sqlite")
        if work is None:
            from .work import ensure_ray, is_search_cancellation, make_search_work
            from .ray_local import reap
            reap(data_dir)
            # Ray first, before any gRPC thread exists: ray.init forks GCS and the raylet, and a
            # fork while gRPC's threads run skips gRPC's fork handlers and can crash the child
            # (the first job used to fail with "Timed out waiting for file .../gcs_server_port").
            # It also means health reports SERVING only once the runtime jobs need is up.
            ensure_ray(config.ray_address, str(data_dir))
            work = make_search_work(config.ray_address, config.quick_tables, str(data_dir))
            is_cancel = is_search_cancellation
        else:
            is_cancel = None
        self.manager = JobManager(self.store, work, data_dir / "jobs", self.metrics,
                                  config.concurrency, config.max_queued, is_cancel)
        self.catalog = Catalog(datasets=dict(config.datasets), tables=dict(config.tables),
                               table_profiles=_table_profiles(config.tables),
                               lookup_upload=self.store.get_upload)
        interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor(self.metrics)]
        if config.auth_token:
            interceptors.append(BearerTokenInterceptor(config.auth_token))
        options = [("grpc.max_receive_message_length", config.max_message_bytes),
                   ("grpc.max_send_message_length", config.max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.rpc_threads,
                                                              thread_name_prefix="rpc"),
                                  interceptors=interceptors, options=options)
        self.servicer = CompressionServicer(self.store, self.manager, self.catalog, self.metrics,
                                            data_dir, config.max_upload_bytes,
                                            auth_required=bool(config.auth_token))
        pb_grpc.add_CompressionServiceServicer_to_server(self.servicer, self.server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        address = f"{config.host}:{config.port}"
        if config.tls_cert or config.tls_key:
            if not (config.tls_cert and config.tls_key):
                raise ValueError("TLS: give both --tls-cert and --tls-key")
            creds = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
            self.port = self.server.add_secure_port(address, creds)
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind the gRPC port {address}")
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self._stopped = threading.Event()

    def start(self) -> "Service":
        from .catalog import strategy_names
        strategy_names()  # import the strategy registry now, not inside the first SubmitJob
        if self.config.metrics_port is not None:
            self._metrics_server, _ = self.metrics.serve(self.config.metrics_port, self.config.metrics_host)
            self.metrics_port = self._metrics_server.server_port
        self.manager.start()
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on port %d (metrics on %s), data in %s", SERVICE_NAME, self.port,
                 self.metrics_port, self.config.data_dir)
        return self

    def stop(self) -> None:
        """Drain (see the module docstring). Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.manager._stopping = True  # refuse new jobs while RPCs drain
        self.server.stop(self.config.drain_grace_s).wait()
        if not self.manager.shutdown(self.config.drain_jobs_s):
            log.warning("some jobs did not stop within %.0fs; they resume on the next start",
                        self.config.drain_jobs_s)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        try:
            import ray
            if ray.is_initialized():
                ray.shutdown()
        except Exception:
            log.debug("ray.shutdown", exc_info=True)
        from .ray_local import reap
        reap(self.config.data_dir, own=True)

    def wait(self) -> None:
        self._stopped.wait()


def _table_profiles(tables: dict[str, str]) -> dict[str, str]:
    """Each registered table's profile (its metadata's device), for validating JobSpecs."""
    out = {}
    for table_id, path in tables.items():
        try:
            from latency_models.table import LatencyTable
            out[table_id] = LatencyTable.load(path).metadata.device
        except Exception as exc:
            raise ValueError(f"--latency-table {table_id}={path}: cannot load ({exc})") from exc
    return out


def serve_forever(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT, then drain. Returns the exit code."""
    faulthandler.enable()  # a native crash (Ray, gRPC core) leaves a Python traceback in the log
    service = Service(config).start()
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        # Ray's native failure-signal handler (absl) sees SIGTERM first, chains to this one and
        # arms alarm(3) expecting the process to die; cancel it or the drain ends in SIGABRT.
        signal.alarm(0)
        log.info("got %s: draining", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"hwcompress serve: listening on port {service.port}"
          + (f", metrics on port {service.metrics_port}" if service.metrics_port else "")
          + f", pid {os.getpid()}", flush=True)
    while not done.wait(1.0):
        pass
    service.stop()
    print("hwcompress serve: stopped", flush=True)
    return 0

"""Assembling and running the service: gRPC server (+ health, reflection, interceptors),
job manager, store, metrics endpoint; and the SIGTERM drain.

Shutdown order matters: health flips to NOT_SERVING (load balancers stop sending), the gRPC
server stops accepting and gives in-flight RPCs a grace period, then the job manager asks running
jobs to stop at a trial boundary (they stay QUEUED and resume on the next start), then Ray is
disconnected. Nothing is marked failed because the server went away.
"""

from __future__ import annotations

import faulthandler
import ipaddress
import logging
import os
import signal
import sys
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
from .streams import MIN_UNARY_THREADS, StreamLimiter, StreamLimitInterceptor
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
    host: str = "127.0.0.1"           # loopback; another address needs auth or insecure=True
    metrics_port: int | None = 9464   # None: no /metrics endpoint
    metrics_host: str = "127.0.0.1"
    insecure: bool = False            # allow a non-loopback bind without auth (warns)
    ray_address: str | None = None
    concurrency: int = 1
    max_queued: int = 1000
    auth_token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_upload_bytes: int = 100 * 1024 * 1024
    max_message_bytes: int = 4 * 1024 * 1024
    rpc_threads: int = 64
    max_streams: int = 48             # open streams server-wide; < rpc_threads - MIN_UNARY_THREADS
    max_streams_per_client: int = 16
    datasets: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    quick_tables: bool = False
    drain_grace_s: float = 10.0
    drain_jobs_s: float = 60.0


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(config: ServerConfig) -> str | None:
    """Refuse to serve every interface unauthenticated by accident; returns the warning to
    print when the operator opted in with ``insecure``. Raises ValueError otherwise."""
    if is_loopback(config.host) or config.auth_token:
        return None
    if not config.insecure:
        raise ValueError(f"--host {config.host}: a non-loopback address without auth lets anyone who "
                         "can reach it run jobs; set --auth-token-file (or $HWCOMPRESS_AUTH_TOKEN), "
                         "or pass --insecure to serve it unauthenticated anyway")
    return (f"WARNING: serving {config.host}:{config.port} WITHOUT authentication (--insecure): "
            "anyone who can reach this address can submit jobs and upload files")


class Service:
    """A running server. ``work`` overrides the job's work function (tests of queueing only)."""

    def __init__(self, config: ServerConfig, work: WorkFn | None = None) -> None:
        self.config = config
        warning = check_exposure(config)
        if warning:
            log.warning("%s", warning)
            print(warning, file=sys.stderr, flush=True)
        if not 1 <= config.max_streams <= config.rpc_threads - MIN_UNARY_THREADS:
            raise ValueError(f"max_streams {config.max_streams}: must be 1..rpc_threads - "
                             f"{MIN_UNARY_THREADS} ({config.rpc_threads - MIN_UNARY_THREADS}) so "
                             "streams never take every RPC thread")
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = ServiceMetrics()
        self.store = JobStore(data_dir / "jobs.sqlite")
        from .work import is_transient, validated
        if work is None:
            from .work import ensure_ray, is_search_cancellation, make_search_work
            from .ray_local import reap
            reap(data_dir)
            # Ray first, before any gRPC thread exists: starting the embedded head forks, and a
            # fork while gRPC's threads run skips gRPC's fork handlers and can crash the child
            # (the first job used to fail with "Timed out waiting for file .../gcs_server_port").
            # It also means health reports SERVING only once the runtime jobs need is up.
            ensure_ray(config.ray_address, str(data_dir))
            work = make_search_work(config.ray_address, config.quick_tables, str(data_dir))
            is_cancel = is_search_cancellation
        else:
            is_cancel = None
        self.catalog = Catalog(datasets=dict(config.datasets), tables=dict(config.tables),
                               table_profiles=_table_profiles(config.tables),
                               lookup_upload=self.store.get_upload)
        self.manager = JobManager(self.store, validated(work, self.catalog.check_reachable),
                                  data_dir / "jobs", self.metrics, config.concurrency,
                                  config.max_queued, is_cancel, is_transient)
        self.streams = StreamLimiter(config.max_streams, config.max_streams_per_client)
        interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor(self.metrics)]
        if config.auth_token:
            interceptors.append(BearerTokenInterceptor(config.auth_token))
        interceptors.append(StreamLimitInterceptor(self.streams))  # after auth: refused calls hold no slot
        options = [("grpc.max_receive_message_length", config.max_message_bytes),
                   ("grpc.max_send_message_length", config.max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.rpc_threads,
                                                              thread_name_prefix="rpc"),
                                  interceptors=interceptors, options=options)
        self.servicer = CompressionServicer(self.store, self.manager, self.catalog, self.metrics,
                                            data_dir, config.max_upload_bytes,
                                            auth_required=bool(config.auth_token),
                                            max_streams=config.max_streams,
                                            max_streams_per_client=self.streams.max_per_client)
        pb_grpc.add_CompressionServiceServicer_to_server(self.servicer, self.server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1)
        reflection.enable_server_reflection(names, self.server)
        _add_reflection_v1(names, self.server)
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
        from .ray_local import stop
        stop(self.config.data_dir)

    def wait(self) -> None:
        self._stopped.wait()


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _add_reflection_v1(names: tuple[str, ...], server: grpc.Server) -> None:
    """Serve ``grpc.reflection.v1`` beside v1alpha (newer grpcurl / Postman ask v1 first).

    grpcio-reflection ships only v1alpha's servicer, and the two protocols' messages are the same
    fields under another package name, hence the same bytes on the wire: v1alpha's servicer and
    (de)serializers answer v1 calls unchanged."""
    from grpc_reflection.v1alpha import reflection_pb2

    servicer = reflection.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),))


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
    try:
        check_exposure(config)  # before Ray starts: a refused bind should fail in a second
    except ValueError as exc:
        print(f"hwcompress serve: {exc}", file=sys.stderr)
        return 2
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

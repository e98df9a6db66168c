"""Helpers shared by the service's tests, benches and the deploy end-to-end test: free loopback
ports, a real ``hwcompress serve`` subprocess, and scraping /metrics with prometheus-client's
own parser. Nothing here fakes the service; the only stand-in work function lives in the tests
that need one, named as such."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(metrics_port: int, host: str = "127.0.0.1") -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics parsed by prometheus-client: sample name -> {sorted label items: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=10).read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def metric_sum(samples: dict[str, dict], name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.get(name, {}).items():
        d = dict(key)
        if all(d.get(k) == v for k, v in labels.items()):
            total += value
    return total


class ServerProcess:
    """``hwcompress serve`` on loopback in a subprocess, for tests that must kill it."""

    def __init__(self, data_dir: str | Path, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, port: int | None = None,
                 metrics_port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.extra_args = list(extra_args or [])
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRPC_VERBOSITY": "ERROR",
                    **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-serve.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "services.cli.main", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--metrics-host", "127.0.0.1",
               "--metrics-port", str(self.metrics_port), "--data-dir", str(self.data_dir),
               *self.extra_args]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"server not healthy after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the server (and only it: its embedded Ray head, in a process group of its own,
        gets SIGTERM from the kernel when the server dies; see services.ray_local)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM and wait for the drain; returns the exit code (SIGKILL after ``timeout``)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return int(self.proc.returncode)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.terminate()

"""A real multi-host Ray cluster on this machine, driven over gRPC the way deploy/ runs it.

Three hosts, each in a network namespace of its own (and a PID namespace of its own: Ray finds
its node's raylet by listing processes, which across real machines never shows another host's),
on a bridge with private addresses the test creates (10.231.N.0/24):

- ``head``   10.231.N.2: ``ray start --head`` (1 CPU)
- ``worker`` 10.231.N.3: ``ray start --address HEAD:6379`` (1 CPU)
- ``svc``    10.231.N.4: the service container of deploy/docker-compose.yml, its very command
  (``ray start --address=ray-head:6379 --num-cpus=0 && exec hwcompress serve ... --ray-address
  ray-head:6379``) and environment, the host name replaced by the head's address, as
  Docker's DNS would

Token auth is on for every Ray process (one RAY_AUTH_TOKEN) and bearer auth on the gRPC port.
From outside all three (this test's own namespace, over the bridge), the real client submits a
small job, watches it to the end, downloads its result and checks in the trial records
(``trace.json``) that trials ran on the head and on the worker: node ids, matched to the nodes'
addresses with ``ray.nodes()``.

Needs root and ``ip netns``; skipped otherwise. Slow (a few minutes on a busy 2-core machine):
``make test-cluster`` runs it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from services.testing import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

RAY_BIN = str(Path(sys.executable).parent / "ray")
GCS_PORT = 6379          # each host has a network stack of its own: the deployed ports are free
GRPC_PORT = 50051
HOSTS = {"head": 2, "worker": 3, "svc": 4}


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


def _skip_unless_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network and PID namespaces)")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs `{tool}`")
    probe = f"hwc-probe-{secrets.token_hex(3)}"
    made = _run("ip", "netns", "add", probe)
    if made.returncode != 0:
        pytest.skip(f"`ip netns add` does not work here: {made.stderr.strip()}")
    _run("ip", "netns", "del", probe)


def _free_subnet() -> int:
    used = _run("ip", "-4", "-o", "addr").stdout + _run("ip", "-4", "route").stdout
    for _ in range(50):
        n = 1 + secrets.randbelow(254)
        if f"10.231.{n}." not in used:
            return n
    pytest.skip("no free 10.231.N.0/24 subnet")


class Lan:
    """A bridge in this namespace and one namespace per host, each with a veth on the bridge;
    processes run inside with ``spawn``. ``close`` kills them and removes everything."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.suffix = secrets.token_hex(3)
        self.net = _free_subnet()
        self.bridge = f"hwcbr{self.suffix}"
        self.ns: dict[str, str] = {}
        self.links: list[str] = []
        self.procs: list[subprocess.Popen] = []
        # each host's own /tmp (Ray's temp dir), short: Ray's socket paths are limited to 107 bytes
        self.tmp = Path(tempfile.mkdtemp(prefix="hwc-"))

    def ip(self, host: str) -> str:
        return f"10.231.{self.net}.{HOSTS[host]}"

    def up(self) -> "Lan":
        def sh(*argv: str) -> None:
            r = _run(*argv)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")

        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        sh("ip", "addr", "add", f"10.231.{self.net}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for host, i in HOSTS.items():
            ns = self.ns[host] = f"hwc-{self.suffix}-{host}"
            sh("ip", "netns", "add", ns)
            veth = f"hwc{self.suffix}{i}"
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.links.append(veth)
            sh("ip", "link", "set", veth, "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"10.231.{self.net}.1")
            (self.tmp / host).mkdir()
        return self

    def spawn(self, host: str, argv: list[str], env: dict[str, str], name: str | None = None,
              pid_namespace: bool = True) -> subprocess.Popen:
        """``argv`` inside ``host``'s network namespace and, by default, a PID namespace of its
        own whose processes all die with the returned process (``unshare --kill-child``)."""
        wrap = ["ip", "netns", "exec", self.ns[host]]
        if pid_namespace:
            wrap += ["unshare", "--pid", "--mount-proc", "--kill-child=SIGKILL", "--"]
        log = (self.logs / f"{name or host}.log").open("wb")
        proc = subprocess.Popen(wrap + argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str, n: int = 4000) -> str:
        try:
            return (self.logs / f"{name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def close(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.ns.values():
            _run("ip", "netns", "del", ns)
        for link in reversed(self.links):
            if _run("ip", "link", "show", link).returncode == 0:
                _run("ip", "link", "del", link)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def lan(tmp_path):
    _skip_unless_netns()
    net = Lan(tmp_path)
    try:
        yield net.up()
    finally:
        net.close()


def _wait_file(path: Path, proc: subprocess.Popen, lan: Lan, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{lan.log(name)}"
        assert time.monotonic() < deadline, f"{name} not up after {timeout:.0f}s:\n{lan.log(name)}"
        time.sleep(0.5)


def _reachable(lan: Lan, env: dict[str, str]) -> None:
    """The worker's namespace reaches a port in the head's, over the bridge."""
    server = lan.spawn("head", [sys.executable, "-c", (
        "import socket; s = socket.create_server(('%s', 9)); s.settimeout(30); s.accept()"
        % lan.ip("head"))], env, name="reach-head", pid_namespace=False)
    probe = (f"import socket, time\nfor _ in range(60):\n    try:\n"
             f"        socket.create_connection(('{lan.ip('head')}', 9), timeout=2); break\n"
             f"    except OSError: time.sleep(0.5)\nelse: raise SystemExit('unreachable')")
    client = lan.spawn("worker", [sys.executable, "-c", probe], env, name="reach-worker",
                       pid_namespace=False)
    assert client.wait(60) == 0, "the namespaces cannot reach each other over the bridge " \
                                 "(a firewall on bridged traffic?)"
    server.wait(30)


def _compose_service(lan: Lan, data: Path, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """deploy/docker-compose.yml's hwcompress service: its command and environment, with the
    host name resolved (as Docker's DNS would) and this checkout's interpreter and paths."""
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    svc = compose["services"]["hwcompress"]
    assert svc["command"][:2] == ["sh", "-c"], svc["command"]
    script = svc["command"][2]
    for old, new in [("ray-head:6379", f"{lan.ip('head')}:{GCS_PORT}"),
                     ("ray start", f"{RAY_BIN} start --temp-dir={lan.tmp / 'svc'}"),
                     ("hwcompress serve", f"{sys.executable} -m services.cli.main serve --quick-tables"),
                     ("--data-dir /data", f"--data-dir {data}")]:
        assert old in script, f"the compose command changed shape ({old!r} not in {script!r})"
        script = script.replace(old, new)
    svc_env = dict(env)
    for key, value in svc["environment"].items():
        value = str(value)
        if value.startswith("${"):  # ${VAR:?message}: from the environment `docker compose up` runs in
            var = value[2:].split(":")[0].split("}")[0]
            value = env[var]
        svc_env[key] = value
    return ["sh", "-c", script], svc_env


PROBE = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + 180
while True:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) >= int(sys.argv[2]) or time.monotonic() > deadline:
        break
    time.sleep(1)
print(json.dumps({n["NodeID"]: {"ip": n["NodeManagerAddress"], "cpus": n["Resources"].get("CPU", 0)}
                  for n in nodes}))
"""


def test_service_on_a_multi_host_cluster_runs_trials_on_both_nodes(lan, tmp_path, lenet_digits):
    from services.client import Client
    from services.proto.hwcompress.v1 import service_pb2 as pb

    t0 = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               HWCOMPRESS_AUTH_TOKEN=secrets.token_hex(16), PYTHONPATH=str(REPO),
               PYTHONUNBUFFERED="1", GRPC_VERBOSITY="ERROR",
               RAY_worker_niceness="0")  # Ray's default 15 starves the trials on a busy machine
    _reachable(lan, env)
    node = ["--block", "--num-cpus", "1", "--disable-usage-stats"]

    head = lan.spawn("head", [RAY_BIN, "start", "--head", "--port", str(GCS_PORT),
                              "--node-ip-address", lan.ip("head"), "--include-dashboard=false",
                              "--temp-dir", str(lan.tmp / "head"), *node], env)
    # `ray start` writes its temp dir's ray_current_cluster once the node is up
    _wait_file(lan.tmp / "head" / "ray_current_cluster", head, lan, "head", 180)
    address = f"{lan.ip('head')}:{GCS_PORT}"
    worker = lan.spawn("worker", [RAY_BIN, "start", "--address", address,
                                  "--node-ip-address", lan.ip("worker"),
                                  "--temp-dir", str(lan.tmp / "worker"), *node], env)
    command, svc_env = _compose_service(lan, tmp_path / "data", env)
    svc = lan.spawn("svc", command, svc_env)

    # the cluster as Ray sees it, from a driver on the head: three nodes, at our three addresses
    probe = subprocess.run(["ip", "netns", "exec", lan.ns["head"], sys.executable, "-c", PROBE,
                            address, "3"], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=400)
    assert probe.returncode == 0, probe.stderr[-3000:]
    nodes = json.loads(probe.stdout.strip().splitlines()[-1])
    by_ip = {info["ip"]: node_id for node_id, info in nodes.items()}
    assert set(by_ip) == {lan.ip(h) for h in HOSTS}, (nodes, lan.log("worker"), lan.log("svc"))
    assert nodes[by_ip[lan.ip("svc")]]["cpus"] == 0  # the service's raylet takes no trials
    assert worker.poll() is None, lan.log("worker")
    cluster_up = time.monotonic() - t0

    target = f"{lan.ip('svc')}:{GRPC_PORT}"
    with Client(target, token=env["HWCOMPRESS_AUTH_TOKEN"], timeout=60) as client:
        deadline = time.monotonic() + 300
        while True:  # serving once Ray is connected (health says SERVING only then)
            assert svc.poll() is None, f"the service exited with {svc.returncode}:\n{lan.log('svc')}"
            try:
                info = client.info()
                break
            except Exception:  # noqa: BLE001 - UNAVAILABLE while it starts
                assert time.monotonic() < deadline, f"the service is not up:\n{lan.log('svc')}"
                time.sleep(1)
        assert info.auth_required
        job = client.submit(pb.JobSpec(
            model="lenet5", dataset="digits", strategy="random", trials=6, seed=1,
            finetune_epochs=0.1,
            budgets=[pb.Budget(metric=pb.BUDGET_METRIC_SIZE_MB, value=0.5, relative=True)]))
        trials = [e.trial for e in client.watch(job.id) if e.WhichOneof("kind") == "trial"]
        final = client.get(job.id)
        assert final.state == pb.JOB_STATE_SUCCEEDED, f"{final.reason}\n{lan.log('svc')}"
        assert len(trials) == 6
        summary = client.download_result(job.id, tmp_path / "result")

    result = json.loads(summary.result_json)
    trace = json.loads((tmp_path / "result" / "trace.json").read_text())
    ran = [row for row in trace if row.get("accuracy") is not None]
    assert len(ran) >= 2 and result["evaluations"] == len(ran), (result["evaluations"], trace)
    trial_nodes = {row["node"] for row in ran}
    ips = {nodes[n]["ip"] for n in trial_nodes if n in nodes}
    assert ips == {lan.ip("head"), lan.ip("worker")}, (trial_nodes, nodes)
    assert set(result["nodes"]) == trial_nodes == {by_ip[lan.ip("head")], by_ip[lan.ip("worker")]}
    print(f"\ncluster up in {cluster_up:.0f}s; job of {len(trials)} trials ({len(ran)} scored) "
          f"done in {time.monotonic() - t0 - cluster_up:.0f}s; nodes: "
          + ", ".join(f"{nodes[n]['ip']}={n[:8]}" for n in sorted(trial_nodes)))

"""The server's embedded Ray: a one-node cluster the server starts and owns, and cleaning up
after one whose server was SIGKILLed.

Without ``--ray-address`` the server starts Ray's head itself, the public way an operator would:
``ray start --head --block`` as a child in a process group of its own (a new session), then it
connects as a driver with ``ray.init(address=...)`` like any other. The group's leader is that
``ray start`` process: on SIGTERM it stops every process of the node, and if it dies any other
way Ray's own reaper kills the rest of its group. So the server keeps one handle on all of it:

- the leader's pid (= the group id) and its private temp dir, which appears on the leader's
  command line, are written to ``embedded-ray.json`` in the data directory;
- the leader is told (``PR_SET_PDEATHSIG``) to get SIGTERM when the server dies, even by SIGKILL;
- a restarted server reads the file and, if that pid still runs ``ray start`` with that temp
  dir (a reused pid never matches), terminates its group before starting a new head.

The head gets a private ``--temp-dir`` (so it never rewrites ``/tmp/ray/ray_current_cluster``,
which a bare ``ray.init()`` on the machine would follow), its own free ports, and token auth:
the server shares ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN`` with it (generated when unset).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STATE_FILE = "embedded-ray.json"
START_TIMEOUT_S = 180.0   # a busy 2-core machine has taken 20 s; leave room
STOP_TIMEOUT_S = 45.0   # the leader drains the node for up to 30 s first
ADDRESS_FILE = "ray_current_cluster"
"""What ``ray start`` writes into its temp dir once the node is up (holds the GCS address)."""
WORKER_NICENESS_ENV = "RAY_worker_niceness"
_PR_SET_PDEATHSIG = 1


@dataclass
class EmbeddedHead:
    address: str
    pid: int          # the `ray start --block` leader, also the process group id
    temp_dir: str
    proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        return _is_leader(self.pid, self.temp_dir)


_head: EmbeddedHead | None = None
_lock = threading.Lock()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _ray_executable() -> str:
    """The `ray` script beside this interpreter (the same installation), else the one on PATH."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.is_file() else (shutil.which("ray") or "ray")


def ensure_auth_env() -> None:
    """Token auth for the embedded head and this driver: the same token on both (Ray's default
    for clusters started with `ray start`). An operator's own settings win. Ray reads
    ``RAY_AUTH_MODE`` once, when it is imported: call this before ``import ray``."""
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ.get("RAY_AUTH_MODE") == "token" and not os.environ.get("RAY_AUTH_TOKEN"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def _head_env() -> dict[str, str]:
    env = dict(os.environ)
    if "RAY_AUTH_MODE" not in env:
        # Ray was imported before ensure_auth_env could set the mode, so this driver runs
        # without auth; a head with auth would refuse it
        log.warning("Ray was imported before the embedded head's token auth was set up: the "
                    "embedded head runs without authentication")
        env["RAY_AUTH_MODE"] = "disabled"
    # Ray nices its workers to 15 by default: on a busy machine any other process then starves
    # the trials. The search *is* this server's work, so its workers run at its priority.
    env.setdefault(WORKER_NICENESS_ENV, "0")
    return env


def _parent_death_signal():
    """A function for Popen's preexec_fn that asks for SIGTERM when the forking thread dies
    (Linux ``prctl``, looked up here, in the parent: the child between fork and exec only calls
    it); None elsewhere, where a restarted server still reaps the head."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return die_with_parent


def start(data_dir: str | Path, timeout: float = START_TIMEOUT_S) -> str:
    """The GCS address of this server's embedded head, starting it first if it is not running."""
    global _head
    with _lock:
        if _head is not None:
            if _head.alive():
                return _head.address
            shutil.rmtree(_head.temp_dir, ignore_errors=True)  # it died: start another
            _head = None
        ensure_auth_env()
        temp_dir = tempfile.mkdtemp(prefix="hwcompress-ray-")  # short: Ray's socket paths are limited
        port = _free_port()
        cmd = [_ray_executable(), "start", "--head", "--block", "--port", str(port),
               "--ray-client-server-port", str(_free_port()), "--dashboard-port", str(_free_port()),
               "--include-dashboard=false", "--disable-usage-stats",
               "--min-worker-port", "0", "--max-worker-port", "0", "--temp-dir", temp_dir]
        env = _head_env()
        out = open(Path(temp_dir, "ray-start.log"), "wb")
        # the parent-death signal follows the thread that forks; only the main thread lives as
        # long as the server
        on_main = threading.current_thread() is threading.main_thread()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_parent_death_signal() if on_main else None)
        out.close()
        head = EmbeddedHead(f"127.0.0.1:{port}", proc.pid, temp_dir, proc)
        Path(data_dir, STATE_FILE).write_text(json.dumps(
            {"pid": head.pid, "temp_dir": temp_dir, "address": head.address, "owner": os.getpid()}))
        address_file = Path(temp_dir, ADDRESS_FILE)
        deadline = time.monotonic() + timeout
        while not address_file.is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = _tail(Path(temp_dir, "ray-start.log"))
                _stop(head)
                Path(data_dir, STATE_FILE).unlink(missing_ok=True)
                why = f"exited with {proc.returncode}" if proc.returncode is not None else f"not up after {timeout:.0f}s"
                raise RuntimeError(f"embedded Ray head {why}:\n{tail}")
            time.sleep(0.2)
        head.address = address_file.read_text().strip() or head.address
        Path(data_dir, STATE_FILE).write_text(json.dumps(
            {"pid": head.pid, "temp_dir": temp_dir, "address": head.address, "owner": os.getpid()}))
        _head = head
        log.info("embedded Ray head at %s (pid %d, temp dir %s)", head.address, head.pid, temp_dir)
        return head.address


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _is_leader(pid: int, temp_dir: str) -> bool:
    """True while ``pid`` is the `ray start` of that temp dir (never a process that reused the pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return temp_dir.encode() in argv and b"start" in argv


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _stop(head: EmbeddedHead, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the head: SIGTERM to the leader (it stops the node's processes in order), then
    SIGKILL to what is left of its group after ``timeout``. False if the pid is no longer that
    head's leader (nothing is signalled)."""
    if not _is_leader(head.pid, head.temp_dir):
        shutil.rmtree(head.temp_dir, ignore_errors=True)
        return False
    try:
        os.kill(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while _group_alive(head.pid) and time.monotonic() < deadline:
        if head.proc is not None:
            head.proc.poll()  # reap our own child so the group can empty
        time.sleep(0.2)
    if _group_alive(head.pid):
        log.warning("embedded Ray head (group %d) did not stop in %.0fs; SIGKILL", head.pid, timeout)
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if head.proc is not None:
        try:
            head.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    shutil.rmtree(head.temp_dir, ignore_errors=True)
    return True


def stop(data_dir: str | Path) -> None:
    """Stop this server's own embedded head (after ``ray.shutdown()``)."""
    global _head
    with _lock:
        head, _head = _head, None
        if head is not None:
            _stop(head)
            Path(data_dir, STATE_FILE).unlink(missing_ok=True)


def reap(data_dir: str | Path) -> int | None:
    """Stop the embedded head a previous, killed server left running; returns its group id
    (None when there was none, or it had already gone)."""
    path = Path(data_dir, STATE_FILE)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        head = EmbeddedHead(str(state["address"]), int(state["pid"]), str(state["temp_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if state.get("owner") == os.getpid():  # our own: stop() handles it
        return None
    stopped = _stop(head)
    path.unlink(missing_ok=True)
    if stopped:
        log.warning("stopped the embedded Ray head a previous server left running (group %d, %s)",
                    head.pid, head.temp_dir)
        return head.pid
    return None

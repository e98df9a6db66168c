"""The server's embedded Ray head (services/ray_local.py): started with `ray start` in a process
group the server owns, with token auth and the driver's priority; stopped with the server; a
head whose server was SIGKILLed is reaped by the next start, and a reused pid never is.
Each Ray runs in a subprocess of its own (Ray reads its auth mode once, at import)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from services import ray_local
from services.testing import REPO

OWN = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from services import ray_local
    from services.work import ensure_ray
    data = Path(sys.argv[1])
    ensure_ray(None, str(data))
    import ray

    @ray.remote(num_cpus=1)
    def worker():
        return os.nice(0), os.environ.get("RAY_AUTH_MODE")

    state = json.loads((data / ray_local.STATE_FILE).read_text())
    nice, mode = ray.get(worker.remote(), timeout=120)
    ray.shutdown()
    ray_local.stop(data)
    try:
        os.killpg(state["pid"], 0)
        alive = True
    except ProcessLookupError:
        alive = False
    print(json.dumps({"state": state, "worker_nice": nice, "driver_nice": os.nice(0),
                      "worker_auth": mode, "driver_auth": os.environ.get("RAY_AUTH_MODE"),
                      "alive_after_stop": alive, "state_left": (data / ray_local.STATE_FILE).exists(),
                      "temp_left": Path(state["temp_dir"]).exists()}))
""")

ORPHAN = textwrap.dedent("""
    import sys, threading, time
    from services import ray_local
    ray_local.ensure_auth_env()
    # from a thread: no parent-death signal, so the head outlives this process as a SIGKILLed
    # server's would if the kernel's signal were lost
    t = threading.Thread(target=ray_local.start, args=(sys.argv[1],))
    t.start(); t.join()
    print("up", flush=True)
    time.sleep(600)
""")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")} | {"PYTHONPATH": str(REPO)}


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_embedded_head_runs_with_token_auth_at_the_drivers_priority_and_stops_with_it(tmp_path):
    proc = subprocess.run([sys.executable, "-c", OWN, str(tmp_path)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["driver_auth"] == out["worker_auth"] == "token"
    assert out["worker_nice"] == out["driver_nice"]
    assert not out["alive_after_stop"] and not out["state_left"] and not out["temp_left"], out


def test_a_head_left_by_a_killed_server_is_reaped(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN, str(tmp_path)], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    pgid = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "up":
                break
        else:
            raise AssertionError(f"the head did not start: {proc.wait()}")
        state = json.loads((tmp_path / ray_local.STATE_FILE).read_text())
        pgid = state["pid"]
        proc.kill()  # SIGKILL, as a crashed server
        proc.wait(30)
        time.sleep(2)
        assert _alive(pgid), "the head should have outlived its (signal-less) server"
        assert ray_local.reap(tmp_path) == pgid
        assert not _alive(pgid)
        assert not (tmp_path / ray_local.STATE_FILE).exists()
        assert not os.path.exists(state["temp_dir"])
    finally:
        if proc.poll() is None:
            proc.kill()
        if pgid is not None and _alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_reap_never_signals_a_process_that_reused_the_pid(tmp_path):
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (tmp_path / ray_local.STATE_FILE).write_text(json.dumps(
            {"pid": other.pid, "temp_dir": str(tmp_path / "hwcompress-ray-gone"),
             "address": "127.0.0.1:1", "owner": 1}))
        assert ray_local.reap(tmp_path) is None
        assert other.poll() is None  # still running
        assert not (tmp_path / ray_local.STATE_FILE).exists()
    finally:
        other.kill()
        other.wait()

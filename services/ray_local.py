"""Cleaning up after an embedded Ray whose server was SIGKILLed.

``ray.init()`` without an address starts GCS, raylet and helpers as children of the server. Some
of them outlive a server killed with SIGKILL (it gets no chance to call ``ray.shutdown``), and a
restarted server would start a second Ray beside the orphans. So the server writes the pids of
the Ray it started to its data directory, and on the next start stops those processes, each
checked to name that Ray session on its command line or to hold files open in the session's
directory, so a reused pid is never hit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

STATE_FILE = "embedded-ray.json"


def record(data_dir: str | Path) -> None:
    """Remember the local Ray this process started (no-op when connected to a cluster)."""
    try:
        import ray
        node = ray._private.worker._global_node
        if node is None or not node.head:
            return
        pids = [p.process.pid for procs in node.all_processes.values() for p in procs
                if getattr(p, "process", None) is not None]
        state = {"session_dir": node.get_session_dir_path(), "pids": pids, "owner": os.getpid()}
        Path(data_dir, STATE_FILE).write_text(json.dumps(state))
    except Exception:  # best effort: only used to tidy up after a crash
        log.debug("recording the embedded Ray's processes", exc_info=True)


def _belongs_to(pid: int, session: str) -> bool:
    """True if ``pid`` names the session on its command line or holds files open in it (the
    raylet's agents rename themselves ``ray::DashboardAgent`` but keep their logs open there)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if session in cmdline or Path(session).name in cmdline:
        return True
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(session):
                return True
        except OSError:
            continue
    return False


def _pids_using(session: str) -> set[int]:
    """Processes of this user with the session on their command line or files open in it."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _belongs_to(int(entry), session):
            found.add(int(entry))
    return found


def reap(data_dir: str | Path, own: bool = False) -> list[int]:
    """Stop what a previous, killed server's embedded Ray left running; returns the pids hit.
    With ``own``, this process' own embedded Ray after ``ray.shutdown()`` (whose raylet agents
    otherwise linger as orphans)."""
    path = Path(data_dir, STATE_FILE)
    if not path.is_file():
        return []
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return []
    killed = []
    session = str(state.get("session_dir", ""))
    if session and (own or state.get("owner") != os.getpid()):
        recorded = {int(p) for p in state.get("pids", [])}
        for pid in sorted(recorded | _pids_using(session)):
            if pid != os.getpid() and _belongs_to(pid, session):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
    if killed:
        log.log(logging.INFO if own else logging.WARNING, "stopped %d leftover process(es) of the embedded Ray in %s: %s",
                    len(killed), session, killed)
    path.unlink(missing_ok=True)
    return killed

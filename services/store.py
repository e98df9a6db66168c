"""Jobs, their events, artifacts' metadata and uploads in one SQLite database (WAL).

Why SQLite: the service must lose nothing on restart (even SIGKILL), needs no separate database
server, and its write rate is small (a state change or trial event every few hundred ms per
job). WAL lets the RPC threads read while a worker writes. Every thread gets its own connection;
writes go through one lock so concurrent writers never see SQLITE_BUSY, and each state change is
one transaction, so a killed server leaves either the old state or the new one.

Records are plain dicts with JSON-decoded ``spec``/``payload``; the gRPC layer converts them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from .errors import IdempotencyConflict

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    trials_done INTEGER NOT NULL DEFAULT 0,
    trials_total INTEGER NOT NULL DEFAULT 0,
    best_accuracy REAL,
    best_latency_ms REAL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS artifacts (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    architecture TEXT NOT NULL,
    dataset TEXT NOT NULL,
    format TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""

_JOB_COLUMNS = ("id", "idempotency_key", "spec", "state", "reason", "created_at", "queued_at",
                "started_at", "finished_at", "attempts", "trials_done", "trials_total",
                "best_accuracy", "best_latency_ms", "result")


def new_id(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex[:16]


class JobStore:
    """The service's durable state. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        conn.commit()

    # -- connections -----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kill
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._write_lock:
            return self._conn().execute(sql, tuple(params))

    @staticmethod
    def _job(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        job = dict(row)
        job["spec"] = json.loads(job["spec"])
        job["result"] = json.loads(job["result"]) if job["result"] else None
        return job

    # -- jobs ------------------------------------------------------------------------------
    def create_job(self, spec: dict[str, Any], idempotency_key: str | None = None,
                   max_queued: int | None = None) -> tuple[dict[str, Any], bool]:
        """Insert a QUEUED job; return (job, created). With a known idempotency key, return the
        existing job (created=False), or raise :class:`IdempotencyConflict` when the spec
        differs. With ``max_queued``, raise :class:`OverflowError` when that many are queued."""
        spec_json = json.dumps(spec, sort_keys=True)
        with self._write_lock:
            conn = self._conn()
            if idempotency_key:
                row = conn.execute("SELECT * FROM jobs WHERE idempotency_key=?",
                                   (idempotency_key,)).fetchone()
                if row is not None:
                    if row["spec"] != spec_json:
                        raise IdempotencyConflict(
                            field="idempotency_key", reason=f"{idempotency_key!r} was used for "
                            f"job {row['id']} with a different spec")
                    return self._job(row), False  # type: ignore[return-value]
            if max_queued is not None and self.count_by_state().get(QUEUED, 0) >= max_queued:
                raise OverflowError(f"queue full: {max_queued} jobs are already queued")
            now = time.time()
            job_id = new_id("job-")
            conn.execute("INSERT INTO jobs (id, idempotency_key, spec, state, created_at, queued_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         (job_id, idempotency_key or None, spec_json, QUEUED, now, now))
            return self.get_job(job_id), True  # type: ignore[return-value]

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self._job(self._conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

    def list_jobs(self, states: Iterable[str] = (), limit: int = 50,
                  before: tuple[float, str] | None = None) -> list[dict[str, Any]]:
        """Newest first. ``before`` is the (created_at, id) of the last job of the previous page."""
        where, params = [], []
        states = list(states)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params += states
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [before[0], before[0], before[1]]
        sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = self._conn().execute(sql, (*params, limit)).fetchall()
        return [self._job(r) for r in rows]  # type: ignore[misc]

    def jobs_in_state(self, state: str) -> list[dict[str, Any]]:
        """Oldest first: the queue order."""
        rows = self._conn().execute("SELECT * FROM jobs WHERE state=? ORDER BY queued_at, rowid",
                                    (state,)).fetchall()
        return [self._job(r) for r in rows]  # type: ignore[misc]

    def count_by_state(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def update_job(self, job_id: str, **fields: Any) -> None:
        bad = set(fields) - set(_JOB_COLUMNS)
        if bad:
            raise KeyError(f"unknown job columns {sorted(bad)}")
        if "result" in fields and fields["result"] is not None:
            fields["result"] = json.dumps(fields["result"])
        sets = ", ".join(f"{k}=?" for k in fields)
        self._write(f"UPDATE jobs SET {sets} WHERE id=?", (*fields.values(), job_id))

    def transition(self, job_id: str, state: str, reason: str = "", **fields: Any) -> int:
        """Set the state (and other columns) and append the state-change event, atomically.
        Returns the event's seq."""
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if "result" in fields and fields["result"] is not None:
                    fields["result"] = json.dumps(fields["result"])
                cols = {"state": state, "reason": reason, **fields}
                conn.execute(f"UPDATE jobs SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?",
                             (*cols.values(), job_id))
                seq = self._append(conn, job_id, "state", {"state": state, "reason": reason})
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return seq

    # -- events ----------------------------------------------------------------------------
    @staticmethod
    def _append(conn: sqlite3.Connection, job_id: str, type_: str, payload: dict[str, Any]) -> int:
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id=?",
                           (job_id,)).fetchone()
        seq = int(row[0]) + 1
        conn.execute("INSERT INTO events (job_id, seq, time, type, payload) VALUES (?, ?, ?, ?, ?)",
                     (job_id, seq, time.time(), type_, json.dumps(payload, default=str)))
        return seq

    def append_event(self, job_id: str, type_: str, payload: dict[str, Any],
                     **job_fields: Any) -> int:
        """Append one event (and update job columns such as progress in the same transaction)."""
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = self._append(conn, job_id, type_, payload)
                if job_fields:
                    conn.execute(f"UPDATE jobs SET {', '.join(f'{k}=?' for k in job_fields)} "
                                 "WHERE id=?", (*job_fields.values(), job_id))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return seq

    def events_after(self, job_id: str, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT seq, time, type, payload FROM events WHERE job_id=? AND seq>? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit)).fetchall()
        return [{"seq": r["seq"], "time": r["time"], "type": r["type"],
                 "payload": json.loads(r["payload"])} for r in rows]

    def trial_indexes(self, job_id: str) -> set[int]:
        """The trial indexes a job's stored events already hold (what a resumed search replays)."""
        rows = self._conn().execute("SELECT json_extract(payload, '$.index') FROM events "
                                    "WHERE job_id=? AND type='trial'", (job_id,)).fetchall()
        return {int(r[0]) for r in rows if isinstance(r[0], int)}

    # -- artifacts -------------------------------------------------------------------------
    def set_artifacts(self, job_id: str, artifacts: list[dict[str, Any]]) -> None:
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM artifacts WHERE job_id=?", (job_id,))
            conn.executemany("INSERT INTO artifacts (job_id, name, size_bytes, sha256, content_type)"
                             " VALUES (?, ?, ?, ?, ?)",
                             [(job_id, a["name"], a["size_bytes"], a["sha256"], a["content_type"])
                              for a in artifacts])
            conn.execute("COMMIT")

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT name, size_bytes, sha256, content_type FROM artifacts "
                                    "WHERE job_id=? ORDER BY name", (job_id,)).fetchall()
        return [dict(r) for r in rows]

    # -- uploads ---------------------------------------------------------------------------
    def add_upload(self, record: dict[str, Any]) -> None:
        self._write("INSERT INTO uploads (id, architecture, dataset, format, path, size_bytes, "
                    "sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (record["id"], record["architecture"], record["dataset"], record["format"],
                     record["path"], record["size_bytes"], record["sha256"], record["created_at"]))

    def get_upload(self, upload_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM uploads WHERE id=?", (upload_id,)).fetchone()
        return dict(row) if row is not None else None

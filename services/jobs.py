"""The job manager: a bounded pool of workers running queued jobs in order, durably.

Generic over a *work function* ``(spec, on_event, should_stop) -> result dict`` so the
scheduling, persistence and cancellation logic does not depend on what a job does; the service
plugs in :func:`services.work.run_search_job` (the real search on Ray). What a work function
sends ``on_event`` is one of the engine's event records (:mod:`automl.records`), or its dict
form; progress and metrics are read from the record's fields, and the store keeps its
``to_dict()``.

Durability: every state change and event is written to the :class:`JobStore` before anyone is
told about it. On start, jobs the previous process left RUNNING (it was killed) go back to the
front of the queue and run again with the same ``out_dir``, where the search finds its Optuna
storage / checkpoints and resumes. A clean shutdown asks running jobs to stop at their next trial
boundary and leaves them QUEUED the same way, so SIGTERM never turns a job into a failure.
A resumed search replays the trials it answers from its evaluation log; those events are stored
once (by trial index), so watchers, progress and the trial counter never count a trial twice.
A failure the work function calls transient (a lost Ray connection) puts the job back at the
front of the queue after a backoff instead of failing it, a few times.

Taking a job off the queue and marking it RUNNING happen under one lock, so a QUEUED job always
has a queue position (1..n, each once) and a RUNNING one none.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from automl.core import BudgetError, BudgetTerm, HwcompressError
from automl.records import JobEvent, StartedEvent, TrialEvent, event_from_dict

from .errors import QueueFull, ShuttingDown, SpecError
from .metrics import ServiceMetrics
from .store import CANCELLED, FAILED, FINAL_STATES, QUEUED, RUNNING, STATES, SUCCEEDED, JobStore

log = logging.getLogger(__name__)

OnEvent = Callable[[JobEvent | Mapping[str, Any]], None]
ShouldStop = Callable[[], bool]
WorkFn = Callable[[dict[str, Any], OnEvent, ShouldStop], dict[str, Any]]

ARTIFACT_TYPES = {".json": "application/json", ".onnx": "application/octet-stream",
                  ".png": "image/png", ".pt": "application/octet-stream",
                  ".ts": "application/octet-stream", ".csv": "text/csv", ".txt": "text/plain",
                  ".md": "text/markdown", ".safetensors": "application/octet-stream"}
"""Files of a job's out_dir that are artifacts (search state such as Optuna's DB is not)."""


TRANSIENT_RETRIES = 3
TRANSIENT_BACKOFF_S = 2.0


@dataclass
class _Running:
    """A running job's in-memory handle: how to stop it and what its metrics carry."""

    job_id: str
    labels: tuple[str, str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None


class JobManager:
    """Queue, workers, cancellation, restart recovery and the event feed for watchers."""

    def __init__(self, store: JobStore, work: WorkFn, artifacts_root: str | Path,
                 metrics: ServiceMetrics | None = None, concurrency: int = 1,
                 max_queued: int = 1000, is_cancellation: Callable[[BaseException], bool] | None = None,
                 is_transient: Callable[[BaseException], bool] | None = None,
                 transient_backoff_s: float = TRANSIENT_BACKOFF_S) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be ≥ 1, got {concurrency}")
        self.store = store
        self.work = work
        self.artifacts_root = Path(artifacts_root)
        self.metrics = metrics or ServiceMetrics()
        self.concurrency = concurrency
        self.max_queued = max_queued
        self._is_cancellation = is_cancellation or (lambda exc: False)
        self._is_transient = is_transient or (lambda exc: False)
        self.transient_backoff_s = transient_backoff_s
        self._retries: dict[str, int] = {}       # job id -> transient failures so far
        self._not_before: dict[str, float] = {}  # job id -> monotonic time it may run again
        self._queue: collections.deque[str] = collections.deque()
        self._cv = threading.Condition()          # guards _queue, _running, _stopping
        self._events_cv = threading.Condition()   # notified on every new event (watchers)
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self.metrics.concurrency.set(concurrency)
        self.metrics.max_queued.set(max_queued)
        self.metrics.watch_job_states(store.count_by_state, STATES)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Recover what a previous process left, then start the workers."""
        interrupted = self.store.jobs_in_state(RUNNING)
        for job in interrupted:
            self.store.transition(job["id"], QUEUED,
                                  "server restarted while the job ran: it resumes from its last "
                                  "checkpoint", queued_at=job["queued_at"])
        with self._cv:
            self._queue.extend(j["id"] for j in interrupted)
            self._queue.extend(j["id"] for j in self.store.jobs_in_state(QUEUED)
                               if j["id"] not in self._queue)
        self._notify_events()
        for i in range(self.concurrency):
            t = threading.Thread(target=self._worker, name=f"job-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        log.info("job manager: %d worker(s), %d job(s) queued (%d resumed)", self.concurrency,
                 len(self._queue), len(interrupted))

    def shutdown(self, timeout: float = 60.0) -> bool:
        """Stop taking jobs, ask running ones to stop at their next trial boundary (they go back
        to QUEUED and resume on the next start), wait up to ``timeout``. True if all stopped."""
        with self._cv:
            self._stopping = True
            for run in self._running.values():
                run.stop.set()
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        self._notify_events()
        return not any(t.is_alive() for t in self._workers)

    # -- API used by the servicer -------------------------------------------------------------
    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Persist a QUEUED job and wake a worker. Returns (job, created)."""
        if self._stopping:
            raise ShuttingDown("the server is shutting down and accepts no new jobs")
        try:
            job, created = self.store.create_job(spec, idempotency_key, self.max_queued)
        except OverflowError as exc:
            raise QueueFull(field="queue", reason=f"{exc}; retry later") from None
        if created:
            self.store.append_event(job["id"], "state", {"state": QUEUED, "reason": "submitted"})
            self.metrics.jobs_submitted.inc()
            with self._cv:
                self._queue.append(job["id"])
                self._cv.notify()
            self._notify_events()
        return job, created

    def cancel(self, job_id: str, reason: str = "") -> dict[str, Any] | None:
        """Cancel a queued job now, or ask a running one to stop. None if the job is unknown."""
        reason = reason or "cancelled by the client"
        with self._cv:
            job = self.store.get_job(job_id)
            if job is None:
                return None
            if job["state"] == QUEUED and job_id in self._queue:
                self._queue.remove(job_id)
                self._finish(job, CANCELLED, reason)
            elif job["state"] == RUNNING and job_id in self._running:
                run = self._running[job_id]
                if run.cancel_reason is None:
                    run.cancel_reason = reason
                    run.stop.set()
                    self.store.append_event(job_id, "log", {"message": f"cancel requested: {reason}"})
            elif job["state"] == QUEUED:  # queued but not yet in this process' queue: impossible
                self._finish(job, CANCELLED, reason)  # after start(); kept for safety
        self._notify_events()
        return self.store.get_job(job_id)

    def queue_position(self, job_id: str) -> int:
        with self._cv:
            try:
                return self._queue.index(job_id) + 1
            except ValueError:
                return 0

    def queue_positions(self) -> dict[str, int]:
        """Every queued job's 1-based position, from one snapshot (so no two share one)."""
        with self._cv:
            return {job_id: i + 1 for i, job_id in enumerate(self._queue)}

    def with_position(self, job_id: str, job: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The job as stored now and its queue position, read together under the queue lock."""
        with self._cv:
            fresh = self.store.get_job(job_id) or job
            try:
                return fresh, self._queue.index(job_id) + 1
            except ValueError:
                return fresh, 0

    def wait_for_events(self, timeout: float) -> None:
        """Block until some job gets a new event (or ``timeout``): watchers poll the store after."""
        with self._events_cv:
            self._events_cv.wait(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- internals -------------------------------------------------------------------------
    def _notify_events(self) -> None:
        with self._events_cv:
            self._events_cv.notify_all()

    def _next(self) -> tuple[dict[str, Any], _Running] | None:
        """Take the first runnable job and mark it RUNNING, both under the queue lock."""
        with self._cv:
            while not self._stopping:
                now = time.monotonic()
                ready = [j for j in self._queue if self._not_before.get(j, 0.0) <= now]
                if not ready:
                    self._cv.wait(0.2 if self._queue else 1.0)
                    continue
                job_id = ready[0]
                self._queue.remove(job_id)
                self._not_before.pop(job_id, None)
                job = self.store.get_job(job_id)
                if job is None or job["state"] != QUEUED:
                    continue  # cancelled or finished meanwhile
                spec = job["spec"]
                run = _Running(job_id, (job_id, str(spec.get("model", "")), str(spec.get("strategy", ""))))
                self._running[job_id] = run
                started = time.time()
                self.store.transition(job_id, RUNNING, "started" if job["attempts"] == 0 else
                                      f"resumed (attempt {job['attempts'] + 1})",
                                      started_at=job["started_at"] or started,
                                      attempts=job["attempts"] + 1)
                self.metrics.queue_wait.observe(max(0.0, started - job["queued_at"]))
                return job, run
            return None

    def _worker(self) -> None:
        while True:
            taken = self._next()
            if taken is None:
                return
            job, run = taken
            try:
                self._run(job, run)
            except Exception:  # a bug here must not kill the worker: record it on the job
                log.exception("job %s: manager error", job["id"])
                stored = self.store.get_job(job["id"])
                if stored is not None and stored["state"] not in FINAL_STATES:
                    self._finish(stored, FAILED, "internal error in the job manager (see server log)")
                self._notify_events()

    def _run(self, job: dict[str, Any], run: _Running) -> None:
        job_id, spec, labels = job["id"], job["spec"], run.labels
        self._notify_events()
        self._start_running_metrics(run, spec)
        out_dir = self.artifacts_root / job_id
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = self.work({**spec, "out_dir": str(out_dir)}, self._on_event(run, job),
                               run.stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - every outcome must be recorded
            self._after_failure(run, job, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._retries.pop(job_id, None)
            artifacts = self._collect_artifacts(out_dir)
            self.store.set_artifacts(job_id, artifacts)
            summary = {"result": result, "artifacts": artifacts}
            self._finish(self.store.get_job(job_id), SUCCEEDED, "finished",
                         result=result, result_event=summary)
        finally:
            with self._cv:
                self._running.pop(job_id, None)
            self.metrics.forget_job(labels)
            self._notify_events()

    def _after_failure(self, run: _Running, job: dict[str, Any], exc: BaseException) -> None:
        job = self.store.get_job(job["id"]) or job
        stopped = run.stop.is_set()
        if stopped and run.cancel_reason is not None:
            self._finish(job, CANCELLED, run.cancel_reason)
        elif stopped and self._stopping:
            self.store.transition(job["id"], QUEUED, "server shut down while the job ran: it "
                                  "resumes from its last checkpoint on the next start")
        elif self._is_cancellation(exc):
            self._finish(job, CANCELLED, f"stopped: {exc}")
        elif self._is_transient(exc) and self._retries.get(job["id"], 0) < TRANSIENT_RETRIES:
            self._requeue(job, exc)
        else:
            self._retries.pop(job["id"], None)
            log.warning("job %s failed: %s: %s", job["id"], type(exc).__name__, exc,
                        exc_info=not isinstance(exc, (HwcompressError, ValueError)))
            # a spec check run by the job names the spec's field
            self._finish(job, FAILED, f"spec.{exc.field}: {exc.reason}" if isinstance(exc, SpecError)
                         else f"{type(exc).__name__}: {exc}")

    def _requeue(self, job: dict[str, Any], exc: BaseException) -> None:
        """Back to the front of the queue, runnable after an exponential backoff."""
        n = self._retries.get(job["id"], 0) + 1
        self._retries[job["id"]] = n
        delay = self.transient_backoff_s * 2 ** (n - 1)
        log.warning("job %s: transient failure (%s: %s); requeued, retry %d of %d in %.0fs",
                    job["id"], type(exc).__name__, exc, n, TRANSIENT_RETRIES, delay)
        with self._cv:
            self.store.transition(job["id"], QUEUED, f"lost the runtime ({type(exc).__name__}); "
                                  f"requeued, retry {n} of {TRANSIENT_RETRIES} in {delay:.0f}s")
            self._not_before[job["id"]] = time.monotonic() + delay
            self._queue.appendleft(job["id"])
            self._cv.notify()

    def _finish(self, job: dict[str, Any], state: str, reason: str,
                result: dict[str, Any] | None = None,
                result_event: dict[str, Any] | None = None) -> None:
        now = time.time()
        fields: dict[str, Any] = {"finished_at": now}
        if result is not None:
            fields["result"] = result
        if result_event is not None:
            self.store.append_event(job["id"], "result", result_event)
        self.store.transition(job["id"], state, reason, **fields)
        self.metrics.jobs_finished.labels(state).inc()
        started = job.get("started_at")
        if started:
            self.metrics.job_duration.labels(state).observe(max(0.0, now - started))

    def _start_running_metrics(self, run: _Running, spec: dict[str, Any]) -> None:
        m, labels = self.metrics, run.labels
        m.running_trials_done.labels(*labels).set(0)
        m.running_trials_target.labels(*labels).set(spec.get("trials", 0))
        m.running_last_progress.labels(*labels).set(time.time())
        for text in spec.get("budgets", []):
            try:
                term = BudgetTerm.parse(text)
            except BudgetError:
                continue  # validated on submit; a metric is not worth failing the job over
            m.set_budget(labels, term.metric, term.value, term.relative)

    def _on_event(self, run: _Running, job: dict[str, Any]) -> OnEvent:
        """Translate the work function's events into stored events, job progress and metrics.
        Progress starts from what earlier attempts stored; a trial index already stored (a
        resumed search replaying its log) is not stored, counted or sent again."""
        m, labels, spec = self.metrics, run.labels, job["spec"]
        strategy = str(spec.get("strategy", ""))
        profile = str(spec.get("hardware") or "default")
        seen = self.store.trial_indexes(run.job_id)
        state = {"done": len(seen), "best": job.get("best_accuracy"),
                 "best_latency": job.get("best_latency_ms")}

        def on_event(event: JobEvent | Mapping[str, Any]) -> None:
            try:
                # a dict without a type is a log line, as it always was
                _handle(event_from_dict({"type": "log", **event}) if isinstance(event, Mapping) else event)
            except Exception:  # never let bookkeeping break the search
                log.exception("job %s: recording event %r", run.job_id, getattr(event, "kind", event))

        def _handle(event: JobEvent) -> None:
            now = time.time()
            if isinstance(event, TrialEvent):
                if event.index in seen:
                    return  # replayed from the evaluation log after a restart: the watcher had it
                seen.add(event.index)
                state["done"] += 1
                acc = _num(event.accuracy)
                outcome = "error" if event.error else ("feasible" if event.feasible else "infeasible")
                m.trials.labels(event.strategy or strategy, outcome).inc()
                wall = _num(event.wall_s)
                if wall is not None:
                    m.evaluation_duration.labels(event.strategy or strategy).observe(wall)
                if _num(event.latency_ms) is not None:
                    m.latency_predictions.labels(profile).inc()
                best = _num(event.best_accuracy)
                if event.feasible and acc is not None and (state["best"] is None or acc >= state["best"]):
                    state["best_latency"] = _num(event.latency_ms)
                if best is not None:
                    state["best"] = best
                    m.running_best_accuracy.labels(*labels).set(best)
                if state["best_latency"] is not None:
                    m.running_best_latency.labels(*labels).set(state["best_latency"] / 1000.0)
                m.running_trials_done.labels(*labels).set(state["done"])
                m.running_last_progress.labels(*labels).set(now)
                self.store.append_event(run.job_id, event.kind, event.to_dict(), trials_done=state["done"],
                                        trials_total=event.total or int(spec.get("trials", 0)),
                                        best_accuracy=state["best"],
                                        best_latency_ms=state["best_latency"])
            else:
                if isinstance(event, StartedEvent):
                    m.running_last_progress.labels(*labels).set(now)
                    for metric, value in event.limits.items():
                        if _num(value) is not None:
                            m.set_budget(labels, metric, float(value), relative=False)
                    m.running_trials_done.labels(*labels).set(state["done"])
                self.store.append_event(run.job_id, event.kind, event.to_dict())
            self._notify_events()

        return on_event

    def _collect_artifacts(self, out_dir: Path) -> list[dict[str, Any]]:
        artifacts = []
        for path in sorted(out_dir.iterdir()):
            ctype = ARTIFACT_TYPES.get(path.suffix.lower())
            if path.is_file() and ctype is not None:
                digest = hashlib.sha256()
                with path.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                artifacts.append({"name": path.name, "size_bytes": path.stat().st_size,
                                  "sha256": digest.hexdigest(), "content_type": ctype})
        return artifacts


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None

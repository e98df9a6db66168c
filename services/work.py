"""The work function the service runs for each job: the search runner on Ray.

Kept apart from the job manager so the manager stays generic (tests of pure queueing use a
trivial work function) and this is the one place that knows how a stored job spec becomes a
:class:`automl.search.runner.SearchConfig`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from automl.core import DEFAULT_BASELINE_EPOCHS, SearchCancelled
from automl.records import JobEvent
from automl.search.runner import init_ray

from .catalog import RL_MODES

log = logging.getLogger(__name__)
_ray_lock = threading.Lock()
RAY_INIT_ATTEMPTS = 4
RAY_INIT_BACKOFF_S = 2.0
OnEvent = Callable[[JobEvent], None]
WorkFn = Callable[[dict[str, Any], OnEvent, Callable[[], bool]], dict[str, Any]]


def ensure_ray(address: str | None, data_dir: str | None = None,
               attempts: int = RAY_INIT_ATTEMPTS, backoff_s: float = RAY_INIT_BACKOFF_S) -> None:
    """Start or connect Ray once per process, retrying with exponential backoff.

    With no ``address`` and a ``data_dir`` (the server), the Ray is an embedded head the server
    starts with ``ray start`` and owns (:mod:`services.ray_local`); with neither (tests of the
    work function alone), ``ray.init``'s own local instance.

    The server calls this at start-up, before its gRPC threads exist (see
    :class:`services.server.Service`); jobs call it again, which is a no-op while Ray is up and
    reconnects after a lost cluster. ``ray.init`` is not safe to race from two threads, so the
    first caller does it while the others wait. A GCS start-up can time out on a loaded machine
    or a cluster head can be restarting: both are transient, hence the retries."""
    embedded = not (address or os.environ.get("RAY_ADDRESS")) and data_dir is not None
    if embedded:
        from .ray_local import ensure_auth_env
        ensure_auth_env()  # before Ray is imported: it reads the auth mode once, then
    import ray

    with _ray_lock:
        for attempt in range(attempts):
            try:
                if ray.is_initialized():
                    return
                target = address or os.environ.get("RAY_ADDRESS")
                if embedded:  # the server's own head (see ray_local)
                    from .ray_local import start
                    target = start(data_dir)
                init_ray(target)
                return
            except Exception:
                if attempt + 1 == attempts:
                    raise
                delay = backoff_s * 2 ** attempt
                log.warning("ray.init failed (attempt %d of %d); retrying in %.0fs", attempt + 1,
                            attempts, delay, exc_info=True)
                try:
                    ray.shutdown()
                except Exception:
                    pass
                time.sleep(delay)


def spec_to_config(spec: dict[str, Any], ray_address: str | None = None,
                   quick_table: bool = False) -> Any:
    from automl.search.runner import SearchConfig

    return SearchConfig(model=spec["model"], data=spec["data"], budgets=list(spec["budgets"]),
                        strategy=spec["strategy"], trials=int(spec["trials"]),
                        seed=int(spec["seed"]), hardware=spec.get("hardware"),
                        table=spec.get("table"), finetune_epochs=float(spec["finetune_epochs"]),
                        out_dir=spec["out_dir"], ray_address=ray_address,
                        weights=spec.get("weights"), rl_mode=spec.get("rl_mode", RL_MODES[0]),  # UNSPECIFIED
                        epochs=int(spec.get("epochs", DEFAULT_BASELINE_EPOCHS)), quick_table=quick_table,
                        allow_import=False)


def make_search_work(ray_address: str | None = None, quick_table: bool = False,
                     data_dir: str | None = None) -> WorkFn:
    """The work function for :class:`services.jobs.JobManager`: the search, its result as the
    dict ``result.json`` holds (:meth:`automl.records.SearchResult.to_dict`)."""

    def run_search_job(spec: dict[str, Any], on_event: OnEvent,
                       should_stop: Callable[[], bool]) -> dict[str, Any]:
        from automl.search.runner import run_search

        config = spec_to_config(spec, ray_address, quick_table)
        ensure_ray(ray_address, data_dir)
        try:
            return run_search(config, on_event=on_event, should_stop=should_stop).to_dict()
        except BaseException as exc:
            if is_transient(exc):  # drop the dead connection so the retry's ensure_ray reconnects
                import ray
                try:
                    ray.shutdown()
                except Exception:
                    log.debug("ray.shutdown after a lost connection", exc_info=True)
            raise

    return run_search_job




def validated(work: WorkFn, check: Callable[[dict[str, Any]], None]) -> WorkFn:
    """``work`` preceded by the spec checks that need the model or data (``check`` raises a
    SpecError naming the field): they run in the job's worker, never on an RPC thread, so a
    heavy check is bounded by the job concurrency and SubmitJob stays fast."""

    def checked(spec: dict[str, Any], on_event: OnEvent,
                should_stop: Callable[[], bool]) -> dict[str, Any]:
        check(spec)
        return work(spec, on_event, should_stop)

    return checked


def is_transient(exc: BaseException) -> bool:
    """A lost or restarting Ray (the job is requeued, not failed); a bug or bad input is not."""
    if isinstance(exc, ConnectionError):
        return True
    try:
        import ray.exceptions as rex
    except ImportError:
        return False
    return isinstance(exc, (rex.RaySystemError, rex.LocalRayletDiedError, rex.NodeDiedError,
                            rex.RpcError, rex.ActorUnavailableError))


def is_search_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, SearchCancelled)

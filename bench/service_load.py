"""Bounded load on loopback (issue 13): many submits and watchers at once, and nothing is lost.

Against a real ``hwcompress serve`` subprocess on 127.0.0.1 (embedded Ray, real search runner):
``--submits`` SubmitJob calls from 8 client threads (paced over the first third of the run),
``--watchers`` WatchJob streams held on those jobs for the whole run, and a probe thread timing
GetJob and Health/Check every 0.2 s. After ``--seconds`` everything stops by itself: watchers are
cancelled, the server is drained with SIGTERM and started again on the same data directory, and
every submitted job id must still be there in a sane state ("jobs lost" counts the ones that
are not). Then the leftover jobs are cancelled and the server stopped. Traffic goes only to
127.0.0.1 and is bounded in count (``--submits`` + ``--watchers``) and time (``--seconds``).

    .venv/bin/python -m bench.service_load [--submits 200 --watchers 100 --seconds 60]
        [--json bench/results/service_load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.client import Client
from services.proto.hwcompress.v1 import service_pb2 as pb
from services.testing import ServerProcess

SERVER_ARGS = ["--concurrency", "1", "--rpc-threads", "160", "--max-streams", "140",
               "--max-streams-per-client", "128", "--max-queued", "1000"]
"""Room for 100 watchers from one address (the defaults allow 16 per client, 48 in all)."""


FINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


def _spec(i: int) -> pb.JobSpec:
    return pb.JobSpec(model="lenet5", dataset="digits", strategy="uniform", trials=2, seed=i,
                      idempotency_key=f"load-{i}",
                      budgets=[pb.Budget(metric=pb.BUDGET_METRIC_SIZE_MB, value=0.5, relative=True)])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def _summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": _pct(values, 50) * 1e3, "p99_ms": _pct(values, 99) * 1e3,
            "max_ms": max(values) * 1e3 if values else float("nan"),
            "mean_ms": statistics.fmean(values) * 1e3 if values else float("nan")}


def run(submits: int, watchers: int, seconds: float, data_dir: Path) -> dict:
    srv = ServerProcess(data_dir, SERVER_ARGS).start(timeout=180)
    stop = threading.Event()
    submit_lat: list[float] = []
    get_lat: list[float] = []
    health_lat: list[float] = []
    errors: dict[str, int] = {}
    ids: list[str] = []
    events_seen = [0] * watchers
    watching = [0, 0]  # streams open now (a first event arrived, not ended), the most at once
    lock = threading.Lock()
    load_before = os.getloadavg()
    t_start = time.monotonic()
    deadline = t_start + seconds

    def note_error(where: str, exc: grpc.RpcError) -> None:
        with lock:
            key = f"{where}:{exc.code().name}"
            errors[key] = errors.get(key, 0) + 1

    def submitter(k: int) -> None:
        with Client(srv.target, timeout=30) as c:
            for i in range(k, submits, 8):
                due = t_start + (seconds / 3) * i / submits
                time.sleep(max(0.0, due - time.monotonic()))
                if stop.is_set():
                    return
                t0 = time.perf_counter()
                try:
                    job = c.submit(_spec(i))
                except grpc.RpcError as exc:
                    note_error("SubmitJob", exc)
                    continue
                with lock:
                    submit_lat.append(time.perf_counter() - t0)
                    ids.append(job.id)

    def watcher(w: int) -> None:
        while not stop.is_set() and len(ids) <= w % max(1, submits):
            time.sleep(0.05)
        if stop.is_set():
            return
        job_id = ids[w % len(ids)]
        with Client(srv.target) as c:
            while not stop.is_set():
                call = c.stub.WatchJob(pb.WatchJobRequest(job_id=job_id))
                canceller = threading.Thread(target=lambda: (stop.wait(), call.cancel()), daemon=True)
                canceller.start()
                counted = False
                try:
                    for _ in call:
                        events_seen[w] += 1
                        if not counted:
                            counted = True
                            with lock:
                                watching[0] += 1
                                watching[1] = max(watching[1], watching[0])
                    return  # the job ended: its stream is complete
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.CANCELLED:
                        note_error("WatchJob", exc)
                        time.sleep(0.5)
                finally:
                    if counted:
                        with lock:
                            watching[0] -= 1

    def prober() -> None:
        with Client(srv.target, timeout=10) as c, grpc.insecure_channel(srv.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while not stop.wait(0.2):
                if ids:
                    t0 = time.perf_counter()
                    try:
                        c.get(ids[-1])
                        get_lat.append(time.perf_counter() - t0)
                    except grpc.RpcError as exc:
                        note_error("GetJob", exc)
                t0 = time.perf_counter()
                try:
                    health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    health_lat.append(time.perf_counter() - t0)
                except grpc.RpcError as exc:
                    note_error("Health", exc)

    threads = [threading.Thread(target=submitter, args=(k,), daemon=True) for k in range(8)]
    threads += [threading.Thread(target=watcher, args=(w,), daemon=True) for w in range(watchers)]
    threads.append(threading.Thread(target=prober, daemon=True))
    for t in threads:
        t.start()
    try:
        time.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        stop.set()
    for t in threads:
        t.join(30)
    load_during = os.getloadavg()
    with Client(srv.target) as c:
        states_before = {j: pb.JobState.Name(c.get(j).state) for j in ids}
    drain_t0 = time.monotonic()
    rc = srv.terminate(timeout=120)
    drain_s = time.monotonic() - drain_t0
    srv.start(timeout=180)
    lost = []
    try:
        with Client(srv.target) as c:
            states_after = {}
            for j in ids:
                try:
                    states_after[j] = pb.JobState.Name(c.get(j).state)
                except grpc.RpcError:
                    lost.append(j)
            listed = set()
            token = ""
            while True:
                page = c.list(page_size=500, page_token=token)
                listed |= {j.id for j in page.jobs}
                token = page.next_page_token
                if not token:
                    break
            lost += [j for j in ids if j not in listed and j not in lost]
            with ThreadPoolExecutor(8) as pool:  # leave nothing running behind
                list(pool.map(lambda j: c.cancel(j, "bench over"), ids))
    finally:
        srv.terminate(timeout=120)
    count = lambda states: {s: list(states.values()).count(s) for s in sorted(set(states.values()))}  # noqa: E731
    return {
        "submits_requested": submits, "submits_ok": len(ids), "watchers": watchers,
        "seconds": seconds, "cpus": os.cpu_count(),
        "submit": _summary(submit_lat), "get_job": _summary(get_lat), "health": _summary(health_lat),
        "watch_events_received": sum(events_seen),
        "watchers_with_events": sum(1 for n in events_seen if n),
        "watch_streams_open_max": watching[1],
        "loadavg_before": load_before, "loadavg_at_stop": load_during,
        "errors": errors, "states_at_stop": count(states_before), "states_after_restart": count(states_after),
        "drain_exit_code": rc, "drain_s": drain_s, "jobs_lost": len(lost),
        "final_states_changed_by_restart": sum(1 for j, s in states_before.items()
                                               if s in FINAL and states_after.get(j) != s),
        "jobs_failed": list(states_after.values()).count("JOB_STATE_FAILED"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submits", type=int, default=200)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if not (0 < args.submits <= 1000 and 0 <= args.watchers <= 128 and 0 < args.seconds <= 600):
        ap.error("bounded load only: submits 1..1000, watchers 0..128, seconds up to 600")
    with tempfile.TemporaryDirectory(prefix="hwc-load-") as tmp:
        out = run(args.submits, args.watchers, args.seconds, Path(tmp) / "data")
    out["command"] = "python -m bench.service_load " + " ".join(sys.argv[1:] if argv is None else argv)
    print(json.dumps(out, indent=2))
    for name in ("submit", "get_job", "health"):
        s = out[name]
        print(f"{name:8} n={s['n']:4}  p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms  max {s['max_ms']:7.1f} ms")
    print(f"watch streams open at once: up to {out['watch_streams_open_max']} of {out['watchers']}; "
          f"load average {out['loadavg_before'][0]:.1f} before, {out['loadavg_at_stop'][0]:.1f} at stop")
    print(f"jobs lost: {out['jobs_lost']} of {out['submits_ok']} submitted; errors: {out['errors'] or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ok = (out["jobs_lost"] == 0 and out["jobs_failed"] == 0 and out["submits_ok"] == args.submits
          and out["final_states_changed_by_restart"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

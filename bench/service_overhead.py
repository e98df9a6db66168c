"""Service overhead on loopback (issue 6): what the gRPC service adds around a search.

Measured against a real ``hwcompress serve`` subprocess (embedded Ray, real search runner):

* submit-to-first-trial: SubmitJob returns -> the first trial event reaches a watcher. The first
  job pays Ray's start-up ("cold"); later ones show the service's own cost plus the search's
  setup (loading the cached baseline and latency table, building the Ray actors) ("warm").
* GetJob throughput: unary calls per second from 1 and 8 client threads (one channel each).
* WatchJob fan-out: 20 watchers on one running job; each event's delivery lag (receipt time minus
  the event's server timestamp) over all watchers, and whether every watcher got every event.

    .venv/bin/python -m bench.service_overhead [--json bench/results/service_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from services.client import Client
from services.proto.hwcompress.v1 import service_pb2 as pb
from services.testing import ServerProcess


def _spec(seed: int, trials: int = 4, strategy: str = "random") -> pb.JobSpec:
    return pb.JobSpec(model="lenet5", dataset="digits", strategy=strategy, trials=trials, seed=seed,
                      budgets=[pb.Budget(metric=pb.BUDGET_METRIC_SIZE_MB, value=0.5, relative=True)])


def submit_to_first_trial(client: Client, runs: int) -> list[dict[str, float]]:
    """Per run: the SubmitJob RPC, submit -> RUNNING (the service's queueing and dispatch), and
    submit -> first trial (adds the search's own set-up)."""
    out = []
    for i in range(runs):
        t0 = time.perf_counter()
        job = client.submit(_spec(100 + i))
        row = {"submit_rpc_ms": 1000 * (time.perf_counter() - t0)}
        for event in client.watch(job.id):
            kind = event.WhichOneof("kind")
            if kind == "state_change" and event.state_change.state == pb.JOB_STATE_RUNNING:
                row["to_running_ms"] = 1000 * (time.perf_counter() - t0)
            if kind == "trial":
                row["to_first_trial_s"] = time.perf_counter() - t0
                break
        out.append(row)
        for _ in client.watch(job.id):  # let it finish so the next run starts on an idle server
            pass
    return out


def getjob_throughput(target: str, job_id: str, threads: int, seconds: float) -> float:
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        with Client(target) as c:
            c.get(job_id)  # connect outside the timed loop
            while time.perf_counter() < stop:
                c.get(job_id)
                counts[k] += 1

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / seconds


def watch_fanout(target: str, client: Client, watchers: int, trials: int) -> dict:
    job = client.submit(_spec(999, trials=trials))
    lags: list[float] = []
    seqs: list[list[int]] = [[] for _ in range(watchers)]
    lock = threading.Lock()

    def watch(k: int) -> None:
        with Client(target) as c:
            for event in c.watch(job.id):
                now = time.time()
                with lock:
                    seqs[k].append(event.seq)
                    if event.WhichOneof("kind") == "trial":
                        lags.append(now - event.time.ToNanoseconds() / 1e9)

    ts = [threading.Thread(target=watch, args=(k,)) for k in range(watchers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)
    lags.sort()
    complete = all(s == seqs[0] and s == list(range(1, len(s) + 1)) for s in seqs)
    return {"watchers": watchers, "events_per_watcher": len(seqs[0]), "all_complete_in_order": complete,
            "trial_events_delivered": len(lags),
            "lag_ms_p50": 1000 * lags[len(lags) // 2] if lags else None,
            "lag_ms_p95": 1000 * lags[int(len(lags) * 0.95) - 1] if lags else None,
            "lag_ms_max": 1000 * lags[-1] if lags else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4, help="submit-to-first-trial repetitions")
    ap.add_argument("--seconds", type=float, default=5.0, help="GetJob measurement window")
    ap.add_argument("--watchers", type=int, default=20)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp) / "data") as srv:
        with Client(srv.target) as client:
            firsts = submit_to_first_trial(client, args.runs)
            job_id = client.list(page_size=1).jobs[0].id
            tput = {n: getjob_throughput(srv.target, job_id, n, args.seconds) for n in (1, 8)}
            fan = watch_fanout(srv.target, client, args.watchers, trials=8)
    warm = firsts[1:]
    res = {"submit_to_first_trial": {
               "cold_first_job": firsts[0],
               "warm_runs": warm,
               "warm_median_submit_rpc_ms": statistics.median(r["submit_rpc_ms"] for r in warm),
               "warm_median_to_running_ms": statistics.median(r["to_running_ms"] for r in warm),
               "warm_median_to_first_trial_s": statistics.median(r["to_first_trial_s"] for r in warm)},
           "getjob_per_s": {"1_thread": tput[1], "8_threads": tput[8]},
           "watch_fanout": fan}
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

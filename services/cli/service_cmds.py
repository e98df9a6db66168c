"""The service's commands: ``serve`` and the client commands ``submit``, ``watch``, ``list``,
``get``, ``cancel``, ``result``, ``profiles``, ``upload``; and ``demo-service`` (what ``make demo``
runs: a server with embedded Ray, one job over gRPC, watched, its result printed).

Every flag of ``serve`` also reads an environment variable (named in its help) so containers can
be configured without rewriting the command line. Client commands find the server with
``--server`` or $HWCOMPRESS_SERVER. Exit codes (services/cli/main.py): 0 ok / job succeeded,
1 job failed or cancelled or the server refused the call, 2 bad usage, 3 server unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import wraps
from typing import Any, Callable

from google.protobuf.json_format import MessageToDict

from automl.core import DEFAULT_BASELINE_EPOCHS, DEFAULT_STRATEGY, DEFAULT_TRIALS
from automl.records import SearchResult

from .common import (EXIT_FAILURE, EXIT_UNREACHABLE, add_json_flag, deprecated_alias, env_default,
                     env_flag, print_json, resolve_env_defaults)

DEFAULT_SERVER = "localhost:50051"
RL_MODES = {"prune": 1, "quantize": 2, "joint": 3}
"""The agents' --rl-mode names (agents/env.py MODES) -> hwcompress.v1.RlMode values."""


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(name, default)


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        name, sep, spec = v.partition("=")
        if not sep or not name or not spec:
            raise ValueError(f"{flag} {v!r}: expected NAME=VALUE")
        out[name] = spec
    return out


def _rpc_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print gRPC errors as 'CODE: message' instead of a traceback: exit 3 when the server
    cannot be reached (UNAVAILABLE), 1 when it answered with an error."""
    @wraps(func)
    def run(args: argparse.Namespace) -> int:
        import grpc
        try:
            return func(args)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                print(f"hwcompress {args.command}: cannot reach the server at {args.server} "
                      f"(UNAVAILABLE: {exc.details()})", file=sys.stderr)
                return EXIT_UNREACHABLE
            print(f"hwcompress {args.command}: {code.name}: {exc.details()}", file=sys.stderr)
            return EXIT_FAILURE
    return run


# -- serve ---------------------------------------------------------------------------------------
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC job service until SIGTERM",
                       description="Serve hwcompress.v1.CompressionService (with gRPC health and "
                                   "reflection) and Prometheus /metrics. SIGTERM drains: running "
                                   "jobs stop at a trial boundary and resume on the next start.")
    p.add_argument("--port", type=int, default=env_default("HWCOMPRESS_PORT", 50051, int, "--port"),
                   help="gRPC port; 0 picks a free one [$HWCOMPRESS_PORT, 50051]")
    p.add_argument("--host", default=_env("HWCOMPRESS_HOST", "127.0.0.1"),
                   help="gRPC bind address; another than loopback needs auth or --insecure "
                        "[$HWCOMPRESS_HOST, 127.0.0.1]")
    p.add_argument("--insecure", action="store_true",
                   default=env_flag("HWCOMPRESS_INSECURE"),
                   help="allow a non-loopback --host without auth (prints a warning) "
                        "[$HWCOMPRESS_INSECURE]")
    p.add_argument("--metrics-port", type=int,
                   default=env_default("HWCOMPRESS_METRICS_PORT", 9464, int, "--metrics-port"),
                   help="Prometheus /metrics port; -1 disables it [$HWCOMPRESS_METRICS_PORT, 9464]")
    p.add_argument("--metrics-host", default=_env("HWCOMPRESS_METRICS_HOST", "127.0.0.1"),
                   help="/metrics bind address [$HWCOMPRESS_METRICS_HOST, 127.0.0.1]")
    p.add_argument("--data-dir", default=_env("HWCOMPRESS_DATA_DIR", "hwcompress-data"),
                   help="jobs database and artifacts [$HWCOMPRESS_DATA_DIR, ./hwcompress-data]")
    p.add_argument("--ray-address", default=_env("RAY_ADDRESS"),
                   help="Ray cluster to run searches on; unset: embedded local Ray [$RAY_ADDRESS]")
    p.add_argument("--concurrency", type=int,
                   default=env_default("HWCOMPRESS_CONCURRENCY", 1, int, "--concurrency"),
                   help="jobs running at once; the rest queue [$HWCOMPRESS_CONCURRENCY, 1]")
    p.add_argument("--max-queued", type=int,
                   default=env_default("HWCOMPRESS_MAX_QUEUED", 1000, int, "--max-queued"),
                   help="queued jobs before SubmitJob answers RESOURCE_EXHAUSTED "
                        "[$HWCOMPRESS_MAX_QUEUED, 1000]")
    p.add_argument("--auth-token-file", default=_env("HWCOMPRESS_AUTH_TOKEN_FILE"),
                   help="require 'authorization: Bearer <token>' with the token in this file "
                        "[$HWCOMPRESS_AUTH_TOKEN_FILE; or the token itself in $HWCOMPRESS_AUTH_TOKEN]")
    p.add_argument("--tls-cert", default=_env("HWCOMPRESS_TLS_CERT"), help="PEM certificate [$HWCOMPRESS_TLS_CERT]")
    p.add_argument("--tls-key", default=_env("HWCOMPRESS_TLS_KEY"), help="PEM private key [$HWCOMPRESS_TLS_KEY]")
    p.add_argument("--max-upload-mb", type=float,
                   default=env_default("HWCOMPRESS_MAX_UPLOAD_MB", 100.0, float, "--max-upload-mb"),
                   help="UploadModel size limit [$HWCOMPRESS_MAX_UPLOAD_MB, 100]")
    p.add_argument("--rpc-threads", type=int,
                   default=env_default("HWCOMPRESS_RPC_THREADS", 64, int, "--rpc-threads"),
                   help="gRPC handler threads [$HWCOMPRESS_RPC_THREADS, 64]")
    p.add_argument("--max-streams", type=int,
                   default=env_default("HWCOMPRESS_MAX_STREAMS", 48, int, "--max-streams"),
                   help="open streams (WatchJob, GetResult, UploadModel) server-wide; at most "
                        "rpc-threads - 8, so unary calls and health always get a thread "
                        "[$HWCOMPRESS_MAX_STREAMS, 48]")
    p.add_argument("--max-streams-per-client", type=int,
                   default=env_default("HWCOMPRESS_MAX_STREAMS_PER_CLIENT", 16, int,
                                       "--max-streams-per-client"),
                   help="open streams per client address [$HWCOMPRESS_MAX_STREAMS_PER_CLIENT, 16]")
    p.add_argument("--data", action="append", metavar="NAME=SPEC",
                   help="register a dataset clients may name, e.g. mnist=mnist:/data/mnist.npz "
                        "(repeatable; 'digits' is built in)")
    deprecated_alias(p, "--dataset", "--data", "data", action="append")
    p.add_argument("--table", action="append", metavar="ID=PATH",
                   help="register a latency table clients may name (repeatable)")
    deprecated_alias(p, "--latency-table", "--table", "table", action="append")
    p.add_argument("--quick-tables", action="store_true",
                   default=env_flag("HWCOMPRESS_QUICK_TABLES"),
                   help="build missing latency tables with the quick grid [$HWCOMPRESS_QUICK_TABLES]")
    p.add_argument("--drain-timeout", type=float,
                   default=env_default("HWCOMPRESS_DRAIN_TIMEOUT", 60.0, float, "--drain-timeout"),
                   help="seconds SIGTERM waits for running jobs to reach a trial boundary [60]")
    p.set_defaults(func=cmd_serve)


def server_config(args: argparse.Namespace) -> Any:
    from services.client import TOKEN_ENV, read_token
    from services.server import ServerConfig

    resolve_env_defaults(args)
    token = read_token(args.auth_token_file) if args.auth_token_file else os.environ.get(TOKEN_ENV)
    return ServerConfig(
        data_dir=args.data_dir, port=args.port, host=args.host,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        metrics_host=args.metrics_host, insecure=args.insecure, rpc_threads=args.rpc_threads,
        max_streams=args.max_streams, max_streams_per_client=args.max_streams_per_client,
        ray_address=args.ray_address or None,
        concurrency=args.concurrency, max_queued=args.max_queued, auth_token=token or None,
        tls_cert=args.tls_cert, tls_key=args.tls_key,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        datasets=_pairs(args.data, "--data"), tables=_pairs(args.table, "--table"),
        quick_tables=args.quick_tables, drain_jobs_s=args.drain_timeout)


def cmd_serve(args: argparse.Namespace) -> int:
    from services.server import serve_forever
    return serve_forever(server_config(args))


# -- client commands --------------------------------------------------------------------------------
def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=_env("HWCOMPRESS_SERVER", DEFAULT_SERVER),
                   help=f"host:port [$HWCOMPRESS_SERVER, {DEFAULT_SERVER}]")
    p.add_argument("--token-file", help="bearer token file [$HWCOMPRESS_AUTH_TOKEN_FILE, "
                                        "or the token in $HWCOMPRESS_AUTH_TOKEN]")
    p.add_argument("--tls-ca", default=_env("HWCOMPRESS_TLS_CA"),
                   help="PEM CA bundle: connect with TLS [$HWCOMPRESS_TLS_CA]")


def _client(args: argparse.Namespace):
    from services.client import Client, read_token
    return Client(args.server, read_token(args.token_file), args.tls_ca)


def _job_dict(job: Any) -> dict[str, Any]:
    return MessageToDict(job, preserving_proto_field_name=True)


def parse_budget(text: str):
    """``latency_ms=0.5x`` -> Budget message, parsed by ``BudgetTerm.parse`` as everywhere else
    (a malformed budget stops here, naming its metric; the server applies its own limits)."""
    from automl.core import BudgetError
    from services.convert import parse_budget_text

    try:
        return parse_budget_text(text)
    except BudgetError as exc:
        raise BudgetError(f"--budget {text!r}: {exc.reason}", field=exc.field) from None


def _add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="submit a compression job; prints its id",
                       description="Submit a job from flags, or from a JobSpec file (--spec, YAML "
                                   "or JSON in hwcompress.v1's JSON form; budgets may also be "
                                   "written 'latency_ms=0.5x'); flags given beside --spec "
                                   "override its fields.")
    _add_client_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model name (see `hwcompress profiles --info`)")
    src.add_argument("--upload-id", help="an id printed by `hwcompress upload`")
    src.add_argument("--spec", metavar="FILE", help="a JobSpec as YAML or JSON")
    p.add_argument("--data", default=None, help="dataset name registered on the server (default: digits)")
    p.add_argument("--budget", action="append", default=None, metavar="METRIC=VALUE[x]",
                   help="latency_ms, energy_mj, size_mb or macs; 'x' = fraction of the "
                        "uncompressed model (repeatable, at least one)")
    p.add_argument("--strategy", default=None, help=f"search strategy [{DEFAULT_STRATEGY}]")
    p.add_argument("--trials", type=int, default=None,
                   help=f"trials (episodes for RL agents) [{DEFAULT_TRIALS}]")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--hardware", default=None, help="hardware profile (default: the server's)")
    p.add_argument("--table", default=None, help="latency table id registered on the server")
    p.add_argument("--finetune-epochs", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"baseline training epochs (default {DEFAULT_BASELINE_EPOCHS})")
    p.add_argument("--rl-mode", default=None, choices=list(RL_MODES),
                   help="RL agents only: what the agent decides (default: prune)")
    p.add_argument("--idempotency-key", default=None)
    p.add_argument("--watch", action="store_true", help="follow the job with a progress bar")
    add_json_flag(p, "the submitted job")
    p.set_defaults(func=cmd_submit)


SUBMIT_DEFAULTS = {"strategy": DEFAULT_STRATEGY, "trials": DEFAULT_TRIALS}
MAX_SPEC_BYTES = 1024 * 1024
"""A --spec file larger than this is refused before YAML parses it (the server bounds every
field anyway; this keeps a wrong path, say a model file, from being read whole)."""


def load_spec(path: str):
    """A JobSpec from a YAML or JSON file (protobuf's JSON mapping: snake_case or camelCase
    names, enum names or numbers); a budget may also be a string such as ``latency_ms=0.5x``."""
    import yaml
    from google.protobuf.json_format import ParseDict, ParseError

    from automl.core import BudgetError
    from services.convert import parse_budget_text
    from services.proto.hwcompress.v1 import service_pb2 as pb

    with open(path, "rb") as f:  # FileNotFoundError: exit 2 naming the file
        raw = f.read(MAX_SPEC_BYTES + 1)
    if len(raw) > MAX_SPEC_BYTES:
        raise ValueError(f"--spec {path}: larger than {MAX_SPEC_BYTES // 1024} KiB; a JobSpec is a "
                         "few hundred bytes")
    text = raw.decode("utf-8", errors="replace")
    try:
        doc = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise ValueError(f"--spec {path}: not YAML or JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"--spec {path}: expected a mapping of JobSpec fields")
    budgets = []
    for i, b in enumerate(doc.pop("budgets", []) or []):
        try:
            budgets.append(parse_budget_text(b) if isinstance(b, str) else b)
        except BudgetError as exc:
            raise BudgetError(f"--spec {path}: budgets[{i}]: {exc.reason}", field=exc.field) from None
    try:
        spec = ParseDict(doc, pb.JobSpec())
        for b in budgets:
            spec.budgets.append(b if isinstance(b, pb.Budget) else ParseDict(b, pb.Budget()))
    except ParseError as exc:
        raise ValueError(f"--spec {path}: {' '.join(str(exc).split())}") from None
    return spec


def build_spec(args: argparse.Namespace):
    """The JobSpec of ``submit``: the --spec file's, then every flag given on top."""
    from services.proto.hwcompress.v1 import service_pb2 as pb

    spec = load_spec(args.spec) if args.spec else pb.JobSpec(**SUBMIT_DEFAULTS)
    if args.model:
        spec.model = args.model
    elif args.upload_id:
        spec.uploaded_model_id = args.upload_id
    simple = {"data": "dataset", "hardware": "hardware_profile", "table": "latency_table",
              "strategy": "strategy", "trials": "trials", "seed": "seed",
              "idempotency_key": "idempotency_key", "epochs": "baseline_epochs",
              "finetune_epochs": "finetune_epochs"}
    for flag, field in simple.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(spec, field, value)
    if args.rl_mode is not None:
        spec.rl_mode = RL_MODES[args.rl_mode]
    if args.budget is not None:
        del spec.budgets[:]
        spec.budgets.extend(parse_budget(b) for b in args.budget)
    return spec


@_rpc_errors
def cmd_submit(args: argparse.Namespace) -> int:
    spec = build_spec(args)
    with _client(args) as client:
        job = client.submit(spec)
        print(json.dumps(_job_dict(job)) if args.json else job.id, flush=True)
        if not args.watch:
            return 0
        return follow_json(client, job.id) if args.json else follow(client, job.id)


def follow_json(client: Any, job_id: str, reconnect_s: float = 300.0) -> int:
    """Watch ``job_id`` printing each event as one JSON line on stdout; 0 if it succeeds."""
    from services.proto.hwcompress.v1 import service_pb2 as pb

    final = client.get(job_id).state
    for event in client.watch(job_id, reconnect_s=reconnect_s):
        print(json.dumps(MessageToDict(event, preserving_proto_field_name=True)), flush=True)
        if event.WhichOneof("kind") == "state_change":
            final = event.state_change.state
    return 0 if final == pb.JOB_STATE_SUCCEEDED else EXIT_FAILURE


def follow(client: Any, job_id: str, out=sys.stderr, reconnect_s: float = 300.0) -> int:
    """Watch ``job_id`` with a progress bar on ``out``; 0 if it succeeds, 1 otherwise."""
    from tqdm import tqdm

    from automl.records import LogEvent, TrialEvent
    from services.convert import event_from_pb
    from services.proto.hwcompress.v1 import service_pb2 as pb

    job = client.get(job_id)
    bar = tqdm(total=job.spec.trials or None, desc=job_id, unit="trial", file=out,
               dynamic_ncols=True, leave=True)
    final = job.state
    reason = job.reason
    try:
        for event in client.watch(job_id, reconnect_s=reconnect_s):
            got = event_from_pb(event)
            if isinstance(got, TrialEvent):
                if got.total and bar.total != got.total:
                    bar.total = got.total
                bar.n = min(got.index + 1, bar.total or got.index + 1)
                best = f"{got.best_accuracy:.4f}" if got.best_accuracy is not None else "-"
                bar.set_postfix({"best": best}, refresh=True)
            elif isinstance(got, pb.StateChange):
                final, reason = got.state, got.reason
                bar.write(f"{pb.JobState.Name(final).removeprefix('JOB_STATE_')}: {reason}", file=out)
            elif isinstance(got, LogEvent):
                bar.write(got.message, file=out)
            elif isinstance(got, pb.ResultSummary):
                m = got.metrics
                bar.write("result: " + ", ".join(f"{k}={m[k]:.4g}" for k in RESULT_HEADLINE if k in m),
                          file=out)
    finally:
        bar.close()
    return 0 if final == pb.JOB_STATE_SUCCEEDED else 1


RESULT_HEADLINE = ("accuracy_before_finetune", "accuracy_after_finetune", "latency_ms_predicted",
                   "latency_ms_measured", "latency_ms_budget", "size_mb", "evaluations", "wall_s")
"""The :class:`automl.records.SearchResult` fields ``watch`` prints when a job succeeds."""


def _add_job_cmd(sub: argparse._SubParsersAction, name: str, help_: str,
                 func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_)
    _add_client_args(p)
    p.add_argument("job_id")
    add_json_flag(p, {"watch": "each event as one JSON line", "result": "result.json",
                      "get": "the job (it always does)"}.get(name, "the job"))
    p.set_defaults(func=func)
    return p


@_rpc_errors
def cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return follow_json(client, args.job_id) if args.json else follow(client, args.job_id)


@_rpc_errors
def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as client:  # always JSON (--json accepted for one grammar)
        print(json.dumps(_job_dict(client.get(args.job_id)), indent=2))
    return 0


@_rpc_errors
def cmd_cancel(args: argparse.Namespace) -> int:
    from services.proto.hwcompress.v1 import service_pb2 as pb
    with _client(args) as client:
        job = client.cancel(args.job_id, args.reason)
    if args.json:
        print_json(_job_dict(job))
    else:
        print(f"{job.id} {pb.JobState.Name(job.state).removeprefix('JOB_STATE_')} {job.reason}")
    return 0


@_rpc_errors
def cmd_result(args: argparse.Namespace) -> int:
    with _client(args) as client:
        summary = client.download_result(args.job_id, args.out, args.artifact)
    names = ["result.json", *[a.name for a in summary.artifacts if a.name != "result.json"
                              and (not args.artifact or a.name in args.artifact)]]
    if args.json:
        print_json(json.loads(summary.result_json))
    else:
        print(f"wrote {', '.join(names)} to {args.out}")
    return 0


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list jobs, newest first")
    _add_client_args(p)
    p.add_argument("--state", action="append", default=[],
                   choices=["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"])
    p.add_argument("--limit", type=int, default=50, help="jobs to show (pages through the API)")
    add_json_flag(p, "the jobs")
    p.set_defaults(func=cmd_list)


@_rpc_errors
def cmd_list(args: argparse.Namespace) -> int:
    from services.proto.hwcompress.v1 import service_pb2 as pb

    states = [pb.JobState.Value(f"JOB_STATE_{s}") for s in args.state]
    jobs: list[Any] = []
    token = ""
    with _client(args) as client:
        while len(jobs) < args.limit:
            resp = client.list(states, min(100, args.limit - len(jobs)), token)
            jobs += list(resp.jobs)
            token = resp.next_page_token
            if not token:
                break
    if args.json:
        print(json.dumps([_job_dict(j) for j in jobs], indent=2))
        return 0
    for j in jobs:
        model = j.spec.model or j.spec.uploaded_model_id
        best = f"{j.progress.best_accuracy:.4f}" if j.progress.HasField("best_accuracy") else "-"
        print(f"{j.id}  {pb.JobState.Name(j.state).removeprefix('JOB_STATE_'):9}  {model:12} "
              f"{j.spec.strategy:12} {j.progress.trials_done:>4}/{j.progress.trials_total:<4} "
              f"best={best}  {j.created_at.ToDatetime().isoformat(timespec='seconds')}Z")
    return 0


def _add_profiles(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profiles", help="hardware profiles (and with --info, what the server accepts)")
    _add_client_args(p)
    p.add_argument("--info", action="store_true", help="also models, datasets, strategies, limits")
    add_json_flag(p, "the profiles (and with --info the server's info)")
    p.set_defaults(func=cmd_profiles)


@_rpc_errors
def cmd_profiles(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.json:
            out: dict[str, Any] = MessageToDict(client.profiles(), preserving_proto_field_name=True)
            if args.info:
                out["info"] = MessageToDict(client.info(), preserving_proto_field_name=True)
            print_json(out)
            return 0
        for prof in client.profiles().profiles:
            print(f"{prof.name:14} {'(default) ' if prof.is_default else ''}{prof.kind:9} "
                  f"{prof.runtime:14} step={prof.channel_step:<3} {','.join(prof.precisions[:6])}"
                  f"{'...' if len(prof.precisions) > 6 else ''}  {prof.hardware}"
                  + (f"  tables: {','.join(prof.latency_tables)}" if prof.latency_tables else ""))
        if args.info:
            print(json.dumps(MessageToDict(client.info(), preserving_proto_field_name=True), indent=2))
    return 0


def _add_upload(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upload", help="upload weights (safetensors or a state dict); prints the id")
    _add_client_args(p)
    p.add_argument("--model", required=True, help="the architecture (a model name)")
    p.add_argument("--data", default="digits", help="dataset the weights were trained for")
    p.add_argument("file")
    add_json_flag(p, "the uploaded model's record")
    p.set_defaults(func=cmd_upload)


@_rpc_errors
def cmd_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        up = client.upload(args.file, args.model, args.data)
    if args.json:
        print_json(MessageToDict(up, preserving_proto_field_name=True))
    else:
        print(up.id)
    return 0


DEMO_MODEL, DEMO_DATA, DEMO_BUDGET = "vgg", "digits@32", "latency_ms=0.35x"
"""Where compression pays: the narrow VGG at 32x32 measures ~1 ms on one core and its smallest
reachable graph (keep 0.1, int8) is far below 0.35x, so the budget is met with room on a loaded
machine. (ResNet-20 on 16x16 digits sat on its floor: per-call overhead was 69% of it.)"""
DEMO_STRATEGY, DEMO_TRIALS = "optuna-tpe", 16
"""The demos' search (``demo`` and ``demo-service``), not the default of ``search``/``submit``."""


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-service", help="start a local server (embedded Ray), run one job over "
                                            "gRPC, watch it, print the result beside the peers'")
    p.add_argument("--model", default=DEMO_MODEL)
    p.add_argument("--data", default=DEMO_DATA)
    p.add_argument("--budget", action="append", default=None, help=f"default: {DEMO_BUDGET}")
    p.add_argument("--strategy", default=DEMO_STRATEGY)
    p.add_argument("--trials", type=int, default=DEMO_TRIALS)
    p.add_argument("--no-peers", action="store_true",
                   help="skip the side-by-side with Torch-Pruning and ORT int8 at the same budget")
    p.add_argument("--data-dir", default="out/demo-service")
    p.add_argument("--out", default="out/demo-service/result")
    add_json_flag(p, "the result and the peers' answers (progress and tables go to stderr)")
    p.set_defaults(func=cmd_demo_service)


def cmd_demo_service(args: argparse.Namespace) -> int:
    from services.client import Client
    from services.proto.hwcompress.v1 import service_pb2 as pb
    from services.server import ServerConfig, Service

    budgets = args.budget or [DEMO_BUDGET]
    say = sys.stderr if args.json else sys.stdout   # with --json, stdout holds the JSON alone
    service = Service(ServerConfig(data_dir=args.data_dir, port=0, host="127.0.0.1",
                                   metrics_port=0, metrics_host="127.0.0.1")).start()
    print(f"server on 127.0.0.1:{service.port} (metrics: http://127.0.0.1:{service.metrics_port}/metrics)", file=say)
    try:
        with Client(f"127.0.0.1:{service.port}") as client:
            spec = pb.JobSpec(model=args.model, dataset=args.data, strategy=args.strategy,
                              trials=args.trials, budgets=[parse_budget(b) for b in budgets])
            job = client.submit(spec)
            print(f"submitted {job.id}: {args.model} on {args.data}, {args.strategy} x{args.trials}, "
                  f"budgets {budgets}", file=say)
            code = follow(client, job.id, out=say)
            if code != 0:
                print(f"job {job.id} ended {pb.JobState.Name(client.get(job.id).state)}: "
                      f"{client.get(job.id).reason}", file=say)
                return code
            summary = client.download_result(job.id, args.out)
            result = SearchResult.from_dict(json.loads(summary.result_json))
            print(json.dumps({k: getattr(result, k) for k in DEMO_SHOWN}, indent=2), file=say)
            print(f"wrote {args.out}/result.json and the artifacts "
                  f"({', '.join(a.name for a in summary.artifacts)})", file=say)
    finally:
        service.stop()
    fraction = relative_latency_fraction(budgets)
    peers: list[dict[str, Any]] = []
    if not args.no_peers and fraction is not None:
        peers = print_peers(args.model, args.data, fraction, result,
                            os.path.join(args.out, "compressed.onnx"), file=say)
    if args.json:
        print_json({"job_id": job.id, "result": result.to_dict(), "peers": peers})
    return 0


DEMO_SHOWN = ("model", "dataset", "strategy", "accuracy_original", "accuracy_before_finetune",
              "accuracy_after_finetune", "accuracy_deployed", "latency_ms_predicted",
              "latency_ms_measured", "latency_ms_budget", "size_mb", "evaluations", "wall_s")
"""The :class:`automl.records.SearchResult` fields the demos print."""


def relative_latency_fraction(budgets: list[str]) -> float | None:
    """The fraction of a relative latency budget (``latency_ms=0.35x`` -> 0.35), if one is set."""
    from automl.core import Budget

    return next((t.value for t in Budget.parse(budgets).terms
                 if t.metric == "latency_ms" and t.relative), None)


def print_peers(model: str, data: str, fraction: float, result: SearchResult, onnx_path: str,
                file=None) -> list[dict[str, Any]]:
    """Our answer beside what a user would pick instead (Torch-Pruning global pruning tuned to
    the same measured latency, the same followed by ORT int8, ORT int8 alone), each recovered by
    the same distilled fine-tune, all timed side by side with the unpruned graph here. Printed
    to ``file`` (stdout by default); returned as rows for ``--json``."""
    from dataclasses import asdict
    from pathlib import Path

    from automl.peers import format_side_by_side, side_by_side
    from automl.workflow import load_trained

    file = file or sys.stdout
    print(f"\nthe same budget ({fraction:g}x of the measured fp32 latency) by the peers, each "
          f"fine-tuned as ours ({result.finetune_epochs:g} epochs, distilled)...", flush=True, file=file)
    loaded = load_trained(model, data, seed=result.seed, progress=False)
    rows = side_by_side(loaded, Path(onnx_path).read_bytes(), fraction,
                        float(result.finetune_epochs), seed=result.seed)
    print(format_side_by_side(rows, fraction, result.accuracy_original), file=file)
    return [asdict(r) for r in rows]


def register(sub: argparse._SubParsersAction) -> None:
    _add_serve(sub)
    _add_submit(sub)
    _add_job_cmd(sub, "watch", "follow a job's progress until it ends", cmd_watch)
    _add_list(sub)
    _add_job_cmd(sub, "get", "print a job as JSON", cmd_get)
    p = _add_job_cmd(sub, "cancel", "cancel a queued or running job", cmd_cancel)
    p.add_argument("--reason", default="")
    p = _add_job_cmd(sub, "result", "download a finished job's result.json and artifacts", cmd_result)
    p.add_argument("--out", required=True, help="directory to write into")
    p.add_argument("--artifact", action="append", default=None, help="only these artifacts (repeatable)")
    _add_profiles(sub)
    _add_upload(sub)
    _add_demo(sub)

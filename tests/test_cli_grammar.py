"""One CLI grammar (issue 16 item 3): ``--version``; ``--json`` on every command that prints a
result; one flag name per concept (old spellings hidden, still accepted); documented exit codes
(usage 2, failure 1, unreachable 3); one-line errors for bad environment variables; ``submit
--spec`` with a YAML or JSON JobSpec. Run as a user does (the console script's module in a
subprocess) where the exit code and stderr are what is tested."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.main import build_parser, main
from services.client import Client
from services.proto.hwcompress.v1 import service_pb2 as pb
from services.testing import free_port
from services.version import VERSION

from .test_service_api import _service, instant_work_for_tests

ROOT = Path(__file__).resolve().parent.parent
NO_RESULT = {"serve"}  # a server; every other command (the demos too) prints its result with --json


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("HWCOMPRESS_")}
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**full, **(env or {})}, timeout=120)


def _leaf_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_leaf_parsers(sub, f"{prefix}{name} "))
    return out or {prefix.strip(): parser}


def test_version():
    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"hwcompress {VERSION}"
    assert VERSION != "unknown"


def test_every_result_command_has_json_and_one_name_per_concept():
    leaves = _leaf_parsers(build_parser())
    assert {"compress", "search", "submit", "list", "get", "profile", "lut validate"} <= set(leaves)
    for name, p in leaves.items():
        flags = {s for a in p._actions for s in a.option_strings if a.help != argparse.SUPPRESS}
        if name not in NO_RESULT:
            assert "--json" in flags, name
        assert not flags & {"--device", "--dataset", "--latency-table"}, (name, flags)


def test_old_spellings_are_hidden_aliases(capsys):
    args = build_parser().parse_args(["profile", "--model", "lenet5", "--out", "t.json",
                                      "--device", "bitfusion-sim", "--dataset", "digits@32"])
    assert (args.hardware, args.data) == ("bitfusion-sim", "digits@32")
    args = build_parser().parse_args(["serve", "--dataset", "a=digits", "--data", "b=digits@32",
                                      "--latency-table", "t=x.json"])
    assert args.data == ["a=digits", "b=digits@32"] and args.table == ["t=x.json"]
    assert "--device is deprecated; use --hardware" in capsys.readouterr().err


@pytest.mark.parametrize("var,value,command", [
    ("HWCOMPRESS_PORT", "abc", ["serve"]),
    ("HWCOMPRESS_MAX_UPLOAD_MB", "lots", ["serve"]),
    ("HWCOMPRESS_DRAIN_TIMEOUT", "1m", ["serve"]),
])
def test_bad_environment_variable_is_one_line_naming_it(var, value, command):
    proc = _cli(*command, env={var: value})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"${var}={value!r}" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_variable_only_stops_the_command_that_reads_it():
    # HWCOMPRESS_PORT is serve's; a client command does not read it (and here finds no server)
    proc = _cli("list", "--server", f"127.0.0.1:{free_port()}", env={"HWCOMPRESS_PORT": "abc"})
    assert proc.returncode == 3, proc.stderr
    assert "cannot reach the server" in proc.stderr and "Traceback" not in proc.stderr


def test_exit_codes_usage_failure_unreachable(tmp_path):
    assert _cli("submit", "--model", "lenet5", "--trials", "many").returncode == 2  # usage
    down = f"127.0.0.1:{free_port()}"
    for cmd in (["list"], ["get", "job-0000000000000000"], ["submit", "--model", "lenet5"]):
        proc = _cli(*cmd, "--server", down)
        assert proc.returncode == 3, (cmd, proc.stderr)
    svc = _service(tmp_path, instant_work_for_tests)
    try:
        target = f"127.0.0.1:{svc.port}"
        proc = _cli("submit", "--model", "lenet5", "--trials", "0", "--budget", "size_mb=0.5x",
                    "--server", target)
        assert proc.returncode == 1 and "INVALID_ARGUMENT: spec.trials" in proc.stderr, proc.stderr
        proc = _cli("get", "job-0123456789abcdef", "--server", target)
        assert proc.returncode == 1 and "NOT_FOUND" in proc.stderr, proc.stderr
    finally:
        svc.stop()


def test_submit_spec_yaml_and_json_with_flag_overrides_and_json_output(tmp_path, capsys):
    (tmp_path / "job.yaml").write_text(
        "model: lenet5\ndataset: digits\nstrategy: random\ntrials: 4\nseed: 3\n"
        "budgets: [\"latency_ms=0.5x\", {metric: BUDGET_METRIC_SIZE_MB, value: 0.05}]\n"
        "rlMode: RL_MODE_JOINT\n")
    (tmp_path / "job.json").write_text(json.dumps(
        {"model": "lenet5", "strategy": "uniform", "trials": 2,
         "budgets": [{"metric": "BUDGET_METRIC_MACS", "value": 0.5, "relative": True}]}))
    svc = _service(tmp_path, instant_work_for_tests)
    try:
        target = f"127.0.0.1:{svc.port}"
        assert main(["submit", "--spec", str(tmp_path / "job.yaml"), "--trials", "3",
                     "--server", target, "--json"]) == 0
        submitted = json.loads(capsys.readouterr().out)
        assert main(["submit", "--spec", str(tmp_path / "job.json"), "--server", target]) == 0
        json_id = capsys.readouterr().out.strip()
        with Client(target) as c:
            spec = c.get(submitted["id"]).spec
            assert (spec.model, spec.strategy, spec.trials, spec.seed, spec.rl_mode) == \
                ("lenet5", "random", 3, 3, pb.RL_MODE_JOINT)
            assert [(b.metric, b.value, b.relative) for b in spec.budgets] == \
                [(pb.BUDGET_METRIC_LATENCY_MS, 0.5, True), (pb.BUDGET_METRIC_SIZE_MB, 0.05, False)]
            spec = c.get(json_id).spec
            assert (spec.strategy, spec.trials, spec.budgets[0].metric) == ("uniform", 2, pb.BUDGET_METRIC_MACS)
        # --json on the client commands: parseable documents
        for argv in (["list", "--json"], ["get", json_id, "--json"], ["profiles", "--json", "--info"],
                     ["cancel", json_id, "--json"]):
            assert main([*argv, "--server", target]) == 0, argv
            assert json.loads(capsys.readouterr().out), argv
        assert main(["watch", json_id, "--json", "--server", target]) in (0, 1)
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert events and all("seq" in e for e in events)
    finally:
        svc.stop()
    (tmp_path / "bad.yaml").write_text("model: lenet5\nbogus: 1\n")
    proc = _cli("submit", "--spec", str(tmp_path / "bad.yaml"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "bogus" in proc.stderr


def test_a_spec_file_past_its_cap_is_refused_before_parsing(tmp_path):
    from services.cli.service_cmds import MAX_SPEC_BYTES, load_spec

    big = tmp_path / "model.bin"
    big.write_bytes(b"a: 1\n" * (MAX_SPEC_BYTES // 5 + 1))
    with pytest.raises(ValueError, match="larger than 1024 KiB"):
        load_spec(str(big))

"""README.md runs (issue 16 item 4): every command of its ``sh`` blocks and every ``python`` block
is executed here, the long ones with small settings (fewer trials and epochs, quick tables) and
marked ``slow`` (``make test-slow`` runs them); every link points inside the repository.

Each command must match one rule in ``RULES`` below, so a command added to the README without a
test fails ``test_every_readme_command_has_a_test``."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"
BLOCK_RE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK_RE.findall(README) if kind == lang]


def commands() -> list[str]:
    """Every command line of the sh blocks (continuations joined, comments dropped)."""
    out = []
    for body in blocks("sh"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line:
                out.append(" ".join(line.split()))
    return out


SMALL_SEARCH = ["--trials", "2", "--epochs", "1", "--quick-table", "--finetune-epochs", "0.1",
                "--recovery-steps", "20", "--local"]
# (regex on the command, test that runs it); the tests below say how each is run
RULES = [
    (r"^make demo$", "test_make_demo_is_demo_service / test_demo_service_small"),
    (r"^make test$", "test_make_test_runs_pytest"),
    (r"^hwcompress --version$", "test_fast_commands"),
    (r"^hwcompress policy template ", "test_fast_commands"),
    (r"^hwcompress compress --model lenet5 ", "test_lenet5_mnist_compress"),
    (r"^hwcompress compress --model resnet20 ", "test_slow_commands"),
    (r"^hwcompress search ", "test_slow_commands"),
    (r"^hwcompress (serve|submit|list) ", "test_service_block"),
    (r"^hwcompress list --json$", "test_service_block"),
]


def _argv(cmd: str) -> tuple[list[str], str | None]:
    """The command's argv (the mnist path made absolute) and its stdout redirection, if any."""
    cmd = cmd.replace("../shared/data/mnist.npz", str(MNIST))
    redirect = None
    if " > " in cmd:
        cmd, redirect = (part.strip() for part in cmd.split(" > "))
    return shlex.split(cmd.rstrip("&").strip()), redirect


def _run(cmd: str, cwd: Path, extra: list[str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    argv, redirect = _argv(cmd)
    assert argv[0] == "hwcompress", cmd
    argv = [sys.executable, "-m", "services.cli.main", *argv[1:], *(extra or [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRPC_VERBOSITY": "ERROR"}
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd}\n{proc.stderr[-3000:]}"
    if redirect:
        (cwd / redirect).write_text(proc.stdout)
    return proc


def _matching(pattern: str) -> list[str]:
    return [c for c in commands() if re.search(pattern, c)]


def test_every_readme_command_has_a_test():
    untested = [c for c in commands() if not any(re.search(rx, c) for rx, _ in RULES)]
    assert not untested, untested


def test_readme_starts_with_make_demo_and_make_test():
    first = BLOCK_RE.search(README)
    assert README.startswith("# hwcompress\n\n```sh\n") and first is not None
    assert [c.split("#")[0].strip() for c in first.group(2).splitlines()] == ["make demo", "make test"]


def test_links_stay_inside_the_repository():
    links = re.findall(r"\]\(([^)]+)\)", README)
    assert links
    for target in links:
        assert "://" not in target and not target.startswith("/"), target
        assert (ROOT / target.split("#")[0]).exists(), target
    assert "http" not in README


def test_python_version_is_stated_and_matches_the_makefile():
    assert "PY ?= python3.11" in (ROOT / "Makefile").read_text()
    assert "Python 3.11" in README and '">=3.11,<3.12"' in (ROOT / "pyproject.toml").read_text()


def _make_n(target: str) -> str:
    return subprocess.run(["make", "--no-print-directory", "-n", target], cwd=ROOT, capture_output=True, text=True,
                          timeout=60).stdout


def test_make_demo_is_demo_service():
    assert "hwcompress demo-service" in _make_n("demo").splitlines()[-1]


def test_make_test_runs_pytest():
    # not run here (it would run this very suite again): its recipe is the default pytest run
    assert "-m pytest -q" in _make_n("test")


def test_fast_commands(tmp_path):
    for cmd in _matching(r"^hwcompress (--version$|policy template )"):
        if "mnist" in cmd and not MNIST.is_file():
            continue
        _run(cmd, tmp_path)
    assert (tmp_path / "policy.json").stat().st_size > 0


def test_lenet5_mnist_compress(tmp_path):
    """LeNet-5 at 28×28 (its pooling used to fail ONNX export there), one epoch of MNIST."""
    if not MNIST.is_file():
        pytest.skip(f"no MNIST at {MNIST}")
    for cmd in _matching(r"^hwcompress (policy template|compress) --model lenet5 "):
        _run(cmd, tmp_path, ["--epochs", "1"] if " compress " in f" {cmd} " else None)
    assert (tmp_path / "out" / "l5" / "compressed.onnx").stat().st_size > 0


def test_python_api_apply_example(tmp_path):
    code = blocks("python")[0]
    assert "compress_with_policy" in code
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "->" in proc.stdout and (tmp_path / "out" / "api" / "compressed.onnx").is_file()


@pytest.mark.slow
def test_python_api_search_example(tmp_path):
    code = blocks("python")[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1800, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'layers'" in proc.stdout, proc.stdout   # the printed policy


@pytest.mark.slow
def test_slow_commands(tmp_path):
    """The resnet20 compress and searches, with one baseline epoch, quick tables, two trials."""
    _run("hwcompress policy template --model resnet20 > policy.json", tmp_path)
    for cmd in _matching(r"^hwcompress compress --model resnet20 "):
        _run(cmd, tmp_path, ["--epochs", "1"], timeout=1800)
    for cmd in _matching(r"^hwcompress search "):
        cmd = re.sub(r"--trials \d+ ?", "", cmd)
        _run(cmd, tmp_path, SMALL_SEARCH, timeout=3600)


@pytest.mark.slow
def test_demo_service_small(tmp_path):
    """What `make demo` runs, with two trials and without the peers' side-by-side."""
    _run("hwcompress demo-service", tmp_path, ["--trials", "2", "--no-peers", "--data-dir",
                                                str(tmp_path / "d"), "--out", str(tmp_path / "r")],
         timeout=3600)


@pytest.mark.slow
def test_service_block(tmp_path):
    """The 'As a service' block as written, on free ports, with the README's job.yaml."""
    from services.testing import free_port

    (tmp_path / "job.yaml").write_text(blocks("yaml")[0])
    port, mport = free_port(), free_port()
    serve, *clients = _matching(r"^hwcompress (serve|submit|list) |^hwcompress list --json$")
    argv, _ = _argv(serve)
    argv = [a.replace("50051", str(port)).replace("9464", str(mport)) for a in argv]
    server = subprocess.Popen([sys.executable, "-m", "services.cli.main", *argv[1:]], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from services.testing import ServerProcess
        probe = ServerProcess(tmp_path / "unused", port=port, metrics_port=mport)
        probe.proc = server
        probe.wait_healthy(120)
        for cmd in clients:
            _run(cmd, tmp_path, ["--server", f"127.0.0.1:{port}"], timeout=1800)
    finally:
        server.terminate()
        server.wait(120)

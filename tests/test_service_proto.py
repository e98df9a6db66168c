"""The committed stubs are exactly what the .proto generates, and the API's shape is the one
the docs promise (so a change to the contract is always a visible, deliberate diff)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from services.proto import generate
from services.proto.hwcompress.v1 import service_pb2 as pb


def test_committed_stubs_match_the_proto():
    assert generate.main(["--check"]) == 0, "run: python -m services.proto.generate"


def test_service_shape():
    svc = pb.DESCRIPTOR.services_by_name["CompressionService"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in svc.methods}
    assert methods == {
        "SubmitJob": (False, False), "GetJob": (False, False), "ListJobs": (False, False),
        "CancelJob": (False, False), "WatchJob": (False, True), "GetResult": (False, True),
        "UploadModel": (True, False), "ListHardwareProfiles": (False, False),
        "GetServerInfo": (False, False)}
    assert svc.full_name == "hwcompress.v1.CompressionService"
    assert pb.DESCRIPTOR.name == "hwcompress/v1/service.proto"


def test_every_rpc_has_its_own_request_and_response_message():
    """buf STANDARD's RPC_REQUEST_STANDARD_NAME / RPC_RESPONSE_STANDARD_NAME /
    RPC_REQUEST_RESPONSE_UNIQUE, checked on the descriptor (buf itself runs in `make test`)."""
    svc = pb.DESCRIPTOR.services_by_name["CompressionService"]
    used: list[str] = []
    for m in svc.methods:
        assert m.input_type.name == f"{m.name}Request", m.name
        assert m.output_type.name == f"{m.name}Response", m.name
        used += [m.input_type.full_name, m.output_type.full_name]
    assert len(used) == len(set(used)), "a message is reused by two RPCs"
    assert [v.name for v in pb.RlMode.DESCRIPTOR.values] == [
        "RL_MODE_UNSPECIFIED", "RL_MODE_PRUNE", "RL_MODE_QUANTIZE", "RL_MODE_JOINT"]


BUF = Path(__file__).resolve().parent.parent / ".venv" / "buf" / "node_modules" / ".bin" / "buf"


@pytest.mark.skipif(not (BUF.is_file() or shutil.which("buf")),
                    reason="buf not installed (`make lint-proto` installs it from npm)")
def test_buf_standard_lint_passes():
    buf = str(BUF) if BUF.is_file() else shutil.which("buf")
    proc = subprocess.run([buf, "lint"], cwd=Path(generate.ROOT), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""Zip bombs against the upload path: a 1 MB deflated torch zip that unpacks to 1 GiB is refused
with a named-field error before ``torch.load`` sees it, and a real ``hwcompress serve`` process
stays under 1 GB peak RSS while refusing it; a member whose declared size lies is refused too."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import grpc
import pytest

from services.client import Client
from services.testing import ServerProcess

from .test_service_api import _service, assert_invalid, instant_work_for_tests

GIB = 1 << 30


def make_bomb(path: Path, unpacked: int = GIB) -> Path:
    """A torch.save-shaped zip whose one tensor record is ``unpacked`` zero bytes, deflated."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with zf.open("archive/data/0", "w", force_zip64=True) as f:
            block = bytes(1 << 24)
            for _ in range(unpacked // len(block)):
                f.write(block)
    return path


def make_liar(path: Path, unpacked: int = 50 << 20, declared: int = 1000) -> Path:
    """A zip whose member declares ``declared`` bytes but inflates to ``unpacked``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data/0", bytes(unpacked))
    data = bytearray(path.read_bytes())
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, declared)       # local header: uncompressed size
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, declared)     # central directory: the same
    path.write_bytes(bytes(data))
    return path


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_1mb_zip_bomb_is_refused_and_the_server_stays_under_1gb(tmp_path):
    bomb = make_bomb(tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 2 << 20
    srv = ServerProcess(tmp_path / "data").start(timeout=120)
    try:
        before = _peak_rss_bytes(srv.proc.pid)
        with Client(srv.target) as c:
            with pytest.raises(grpc.RpcError) as err:
                c.upload(bomb, "lenet5", "digits")
        assert_invalid(err.value, "chunk")
        assert "unpacked" in err.value.details(), err.value.details()
        assert str(tmp_path) not in err.value.details()
        peak = _peak_rss_bytes(srv.proc.pid)
        print(f"zip bomb ({bomb.stat().st_size} B -> 1 GiB): server peak RSS {peak / 2**20:.0f} MiB "
              f"(before the upload {before / 2**20:.0f} MiB)")
        assert peak < 10**9, peak
    finally:
        assert srv.terminate() == 0, srv.log()


def test_a_member_that_lies_about_its_size_is_refused(tmp_path):
    svc = _service(tmp_path, instant_work_for_tests)
    try:
        with Client(f"127.0.0.1:{svc.port}") as c:
            with pytest.raises(grpc.RpcError) as err:
                c.upload(make_liar(tmp_path / "liar.pt"), "lenet5", "digits")
            assert_invalid(err.value, "chunk")
            # an honest archive over this architecture's few-times-its-weights cap, too
            with pytest.raises(grpc.RpcError) as err:
                c.upload(make_bomb(tmp_path / "small-bomb.pt", 64 << 20), "lenet5", "digits")
            assert_invalid(err.value, "chunk")
            assert "declares" in err.value.details()
    finally:
        svc.stop()

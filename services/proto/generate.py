"""Regenerate the committed Python stubs from ``hwcompress/v1/*.proto``.

The stubs are committed (so installing the project never needs grpcio-tools) and this script is
the only way they change: ``python -m services.proto.generate`` rewrites them, ``--check`` exits 1
when the committed files differ from what the .proto files generate (a test runs it).

protoc writes absolute imports (``from hwcompress.v1 import service_pb2``) that only work with
``services/proto`` on ``sys.path``; they are rewritten to relative imports so the stubs live in
the ``services.proto.hwcompress.v1`` package. The descriptor's file name stays
``hwcompress/v1/service.proto``, which is what reflection clients see.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = ROOT / "hwcompress" / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _generate(out: Path) -> dict[str, str]:
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE_DIR.glob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    files: dict[str, str] = {}
    for path in sorted((out / "hwcompress" / "v1").iterdir()):
        if path.name.endswith(SUFFIXES):
            text = re.sub(r"^from hwcompress\.v1 import ", "from . import ", path.read_text(),
                          flags=re.M)
            files[path.name] = text
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = _generate(Path(tmp))
    stale = [name for name, text in files.items()
             if not (PACKAGE_DIR / name).is_file() or (PACKAGE_DIR / name).read_text() != text]
    if args.check:
        for name in stale:
            print(f"stale: {PACKAGE_DIR / name}", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        (PACKAGE_DIR / name).write_text(files[name])
        print(f"wrote {PACKAGE_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

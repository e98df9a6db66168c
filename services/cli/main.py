"""``hwcompress``: the single command-line entry point.

Each area keeps its subcommands beside its code and exposes ``register(subparsers)``; this module
only assembles them, so adding a command never means editing someone else's module.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from latency_models import cli as latency_cli

from . import compress_cmd, search_cmd, service_cmds

Registrar = Callable[[argparse._SubParsersAction], None]


def _registrars() -> list[Registrar]:
    return [compress_cmd.register, search_cmd.register, latency_cli.register, service_cmds.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwcompress",
        description="Compress a trained PyTorch model for a target device under latency, energy "
                    "and size budgets.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hwcompress {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

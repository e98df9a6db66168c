"""``hwcompress``: the single command-line entry point.

Each area keeps its subcommands beside its code and exposes ``register(subparsers)``; this module
only assembles them, so adding a command never means editing someone else's module.

One grammar for every command: ``--hardware`` names a hardware profile, ``--data`` a dataset,
``--out`` where results go, ``--json`` prints the command's result as JSON on stdout (progress
and messages go to stderr). Exit codes (also in README.md):

====  ======================================================================================
0     success (for ``submit --watch`` / ``watch``: the job SUCCEEDED)
1     failure: the job failed or was cancelled, or the server refused the call (the gRPC status
      and message are printed)
2     usage: a bad flag, value, file or environment variable (one line names it)
3     the server could not be reached (gRPC UNAVAILABLE)
====  ======================================================================================
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from . import compress_cmd, lut_cmds, search_cmd, service_cmds
from .common import EXIT_USAGE, EnvError, resolve_env_defaults

Registrar = Callable[[argparse._SubParsersAction], None]


def _registrars() -> list[Registrar]:
    return [compress_cmd.register, search_cmd.register, lut_cmds.register, service_cmds.register]


def build_parser() -> argparse.ArgumentParser:
    from services.version import VERSION

    parser = argparse.ArgumentParser(
        prog="hwcompress",
        description="Compress a trained PyTorch model for a target device under latency, energy "
                    "and size budgets.",
        epilog="exit codes: 0 ok, 1 failure (job failed, RPC refused), 2 usage (bad flag, file "
               "or environment variable), 3 server unreachable")
    parser.add_argument("--version", action="version", version=f"hwcompress {VERSION}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resolve_env_defaults(args)
    except EnvError as exc:
        print(f"hwcompress {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hwcompress {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

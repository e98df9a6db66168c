"""What every command shares: exit codes, defaults read from environment variables (checked
only by the command that uses them, with a one-line error naming the variable), ``--json``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from automl.core import HwcompressError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class EnvError(HwcompressError, ValueError):
    """An environment variable holds a value its flag cannot take."""


@dataclass(frozen=True)
class EnvDefault:
    """A flag's default taken from ``$name`` (or ``fallback`` when unset), converted with ``kind``
    after parsing, so a bad variable only stops the command that reads it."""
    name: str
    fallback: Any
    kind: Callable[[str], Any] = str
    flag: str = ""

    def resolve(self) -> Any:
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            return self.fallback
        try:
            return self.kind(raw)
        except (TypeError, ValueError):
            what = {int: "an integer", float: "a number"}.get(self.kind, f"a valid {self.flag or 'value'}")
            raise EnvError(f"${self.name}={raw!r} is not {what}"
                           + (f" (it sets {self.flag})" if self.flag else "")) from None

    def __str__(self) -> str:  # shown by argparse's %(default)s
        return f"${self.name}"


def env_default(name: str, fallback: Any, kind: Callable[[str], Any] = str, flag: str = "") -> EnvDefault:
    return EnvDefault(name, fallback, kind, flag)


def env_flag(name: str) -> bool:
    """A boolean variable: unset, '' or '0' is false, anything else true."""
    return os.environ.get(name, "") not in ("", "0")


def resolve_env_defaults(args: argparse.Namespace) -> None:
    for key, value in vars(args).items():
        if isinstance(value, EnvDefault):
            setattr(args, key, value.resolve())


def add_json_flag(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def deprecated_alias(p: argparse.ArgumentParser, old: str, new: str, dest: str, **kw: Any) -> None:
    """``old`` still works, hidden from --help, and says once that ``new`` replaces it."""
    append = kw.pop("action", None) == "append"

    class Warn(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"hwcompress: {old} is deprecated; use {new}", file=sys.stderr)
            if append:
                values = [*(getattr(namespace, self.dest, None) or []), values]
            setattr(namespace, self.dest, values)
    p.add_argument(old, dest=dest, action=Warn, help=argparse.SUPPRESS, **kw)

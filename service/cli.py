"""The `tuwen` command.

Subcommands live in small modules that each expose ``register(subparsers)``. The service's own are
listed here; the training package contributes its torch-based commands (export, build-engines) through
the ``tuwen.commands`` entry-point group, so this module never imports training code directly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

SERVICE_COMMANDS = (
    "service.commands.embed",
    "service.commands.serve",
    "service.commands.ingest",
)

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Registrar]:
    found: list[Registrar] = []
    for name in SERVICE_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command module not written yet must not break the others
            if exc.name != name:
                raise
            continue
        found.append(module.register)
    found.extend(ep.load() for ep in entry_points(group="tuwen.commands"))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuwen", description="Chinese cross-modal search.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"tuwen {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code


class CommandError(Exception):
    """An error a user can act on: printed without a traceback, exit status non-zero."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


if __name__ == "__main__":
    sys.exit(main())

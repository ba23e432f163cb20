"""The `tuwen` command.

Subcommands live in small modules that each expose ``register(subparsers)``. The service's own, all
torch-free, are listed here; the training package contributes its torch-based one (export) through the
``tuwen.commands`` entry-point group, so this module never imports training code directly, and `tuwen`
works where training is not installed (the runtime images; see service/commands/plugins.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from service.commands.errors import CommandError
from service.commands.plugins import installed_entry_points

SERVICE_COMMANDS = (
    "service.commands.embed",
    "service.commands.serve",
    "service.commands.ingest",
    "service.commands.index",
    "service.commands.build_engines",
)

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Registrar]:
    # No leniency: a command module or an installed package's registrar that fails to import is a bug,
    # and it surfaces here rather than as a command that silently went missing.
    found: list[Registrar] = [importlib.import_module(name).register for name in SERVICE_COMMANDS]
    found.extend(ep.load() for ep in installed_entry_points("tuwen.commands"))
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


if __name__ == "__main__":
    sys.exit(main())

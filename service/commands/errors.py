"""The error type every `tuwen` subcommand raises for a mistake its user can fix.

It lives apart from service/cli.py because cli.py imports the command modules: a command importing it
from there would make each command depend on the module that loads it.
"""

from __future__ import annotations


class CommandError(Exception):
    """An error a user can act on: printed without a traceback, exit status non-zero."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

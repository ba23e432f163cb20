"""Subcommands of `tuwen` (see service/cli.py); each module exposes register(subparsers)."""

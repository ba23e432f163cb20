"""`tuwen serve`: run the search service (one process; settings from TUWEN_* variables and flags)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from service.commands.errors import CommandError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve", help="serve the search API and web page", description="Flags override TUWEN_* variables."
    )
    p.add_argument("--bundle", type=Path, help="model bundle directory (TUWEN_BUNDLE)")
    p.add_argument("--data-dir", type=Path, help="data directory (TUWEN_DATA_DIR)")
    p.add_argument("--milvus-uri", help="Milvus URI (TUWEN_MILVUS_URI)")
    p.add_argument("--host", help="listen address (TUWEN_HOST)")
    p.add_argument("--port", type=int, help="listen port (TUWEN_PORT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from service.app import create_app
    from service.config import Settings

    overrides = {
        name: value
        for name in ("bundle", "data_dir", "milvus_uri", "host", "port")
        if (value := getattr(args, name)) is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise CommandError(f"invalid settings:\n{exc}") from None
    if not (settings.bundle / "manifest.json").is_file():
        raise CommandError(
            f"no model bundle at {settings.bundle}: run `make demo-model` or `tuwen export ... --out DIR` "
            "and point TUWEN_BUNDLE at it"
        )
    # pymilvus logs a full traceback for every failed call while Milvus is down; the API already logs one
    # line per outage ("Milvus unavailable: ...") and counts tuwen_milvus_errors_total, so keep only its worst.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    # One worker: the batchers and an embedded Milvus belong to one process.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
    return 0

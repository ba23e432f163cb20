"""Test helpers for the API: a tiny bundle once per session and the app served by a real uvicorn server."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image

from service.app import create_app
from service.config import Settings


@functools.cache
def tiny_bundle() -> Path:
    """One random tiny-vit bundle (real ONNX export) per test process, shared by the API tests (read-only)."""
    from tests.bundles import make_tiny_bundle

    root = Path(tempfile.mkdtemp(prefix="tuwen-api-bundle-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return make_tiny_bundle(root / "bundle")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(settings: Settings, ready_timeout_s: float = 120) -> Iterator[str]:
    """Run ``create_app(settings)`` under uvicorn on a free loopback port; yields the base URL."""
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the test server exited while starting")
            if time.monotonic() > deadline:
                raise TimeoutError("the test server did not start")
            time.sleep(0.05)
        _apps[url] = app
        yield url
    finally:
        _apps.pop(url, None)
        server.should_exit = True
        thread.join(timeout=60)


_apps: dict[str, FastAPI] = {}


def app_for(url: str) -> FastAPI:
    """The app behind a URL that ``serve`` yielded (the server runs in this process), to reach its state."""
    return _apps[url]


def image_bytes(
    color: tuple[int, int, int], size: int = 64, fmt: str = "PNG", shape: str = "circle"
) -> bytes:
    from PIL import ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    box = (size // 8, size // 8, size - size // 8, size - size // 8)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def client(url: str, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def settings_for(bundle: Path, data_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "bundle": bundle,
        "data_dir": data_dir,
        "milvus_uri": str(data_dir / "milvus.db"),  # Milvus Lite: fast to open; the outage test uses a server
        "batch_wait_ms": 5,
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]

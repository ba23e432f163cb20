"""A real Milvus 2.3.5 server for tests, in a temporary data directory on free loopback ports.

Use ``milvus_server(tmp_path)`` as a context manager, or keep one per module with a module-scoped
fixture; ``server.stop()`` / ``server.start()`` simulate an outage (same data directory, same port, so
clients keep their URI). Starting takes ~6–10 s: mark tests that use it ``slow``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from service.store.local_server import LocalMilvusServer


@contextlib.contextmanager
def milvus_server(data_dir: Path) -> Iterator[LocalMilvusServer]:
    """A started server whose ``uri`` is ``http://127.0.0.1:<port>``; stopped on exit."""
    # A short stop: past it the server is killed, which is also the harsher outage to recover from.
    server = LocalMilvusServer(data_dir, stop_timeout_s=2.0)
    server.start()
    # Restarts reuse the port the first start picked, so a client's URI stays valid across an outage.
    server.requested_port = server.port
    try:
        yield server
    finally:
        server.stop()

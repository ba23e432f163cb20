"""A real Milvus 2.3.5 server for tests, in a temporary data directory on free loopback ports.

Use ``milvus_server(tmp_path)`` as a context manager, or keep one per module with a module-scoped
fixture; ``server.stop()`` / ``server.start()`` simulate an outage (same data directory, same ports, so
clients keep their URI). Starting takes ~6–10 s: mark tests that use it ``slow``.

Its ports come from a block of its own per xdist worker, below the kernel's ephemeral range and away from
the defaults' neighbourhoods: while an outage test has it stopped, nothing else takes them — not the
embedded servers other tests run (they look upwards from Milvus's defaults), not the kernel for a
connection or a ``bind(0)`` (uvicorn, gloo), not another worker's server.

``milvus_server(tmp_path, s3_endpoint=...)`` keeps the server's data in an S3 bucket instead of its
local storage, as Milvus Standalone does with MinIO in the Compose stack and the Helm chart: the setup in
which bulk import reads ``s3://`` files.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service.store.local_server import PORT_DEFAULTS, LocalMilvusServer, port_free
from tests.s3_server import CREDENTIALS


class _S3BackedServer(LocalMilvusServer):
    def __init__(self, data_dir: Path, s3_endpoint: str, bucket: str, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.s3 = urlsplit(s3_endpoint)
        self.bucket = bucket

    def _edit_config(self, milvus_yaml: str) -> str:
        replacements = {
            "storageType: local #": "storageType: minio #",
            "  address: localhost # Address of MinIO/S3": f"  address: {self.s3.hostname}",
            "  port: 9000 # Port of MinIO/S3": f"  port: {self.s3.port}",
            "  accessKeyID: minioadmin #": f"  accessKeyID: {CREDENTIALS['AWS_ACCESS_KEY_ID']} #",
            "  secretAccessKey: minioadmin #": f"  secretAccessKey: {CREDENTIALS['AWS_SECRET_ACCESS_KEY']} #",
            "  bucketName: a-bucket #": f"  bucketName: {self.bucket} #",
        }
        for old, new in replacements.items():
            if old not in milvus_yaml:  # a changed template must fail here, not run on local storage
                raise AssertionError(f"the Milvus config template has no {old!r}")
            milvus_yaml = milvus_yaml.replace(old, new, 1)
        return milvus_yaml


_ports_handed_out = itertools.count()
_BLOCK_START, _BLOCK_SIZE = 24000, 1000  # 8 workers fit below 32768, where the ephemeral range begins


def _own_ports(n: int) -> list[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    block = _BLOCK_START + _BLOCK_SIZE * (int(worker) % 8 if worker.isdigit() else 0)
    ports: list[int] = []
    while len(ports) < n:  # a port held by something else (another run of the suite) is skipped
        port = block + next(_ports_handed_out) % _BLOCK_SIZE
        if port_free(port):
            ports.append(port)
    return ports


@contextlib.contextmanager
def milvus_server(
    data_dir: Path, s3_endpoint: str | None = None, bucket: str = "a-bucket"
) -> Iterator[LocalMilvusServer]:
    """A started server whose ``uri`` is ``http://127.0.0.1:<port>``; stopped on exit. With
    ``s3_endpoint``, its data lives in ``bucket`` there (which must exist)."""
    ports = dict(zip(PORT_DEFAULTS, _own_ports(len(PORT_DEFAULTS)), strict=True))
    # A short stop: past it the server is killed, which is also the harsher outage to recover from.
    server = (
        _S3BackedServer(data_dir, s3_endpoint, bucket, ports=ports, stop_timeout_s=2.0)
        if s3_endpoint
        else LocalMilvusServer(data_dir, ports=ports, stop_timeout_s=2.0)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()

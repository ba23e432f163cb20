"""A real Milvus 2.3.5 server for tests, in a temporary data directory on free loopback ports.

Use ``milvus_server(tmp_path)`` as a context manager, or keep one per module with a module-scoped
fixture; ``server.stop()`` / ``server.start()`` simulate an outage (same data directory, same ports, so
clients keep their URI). Starting takes ~6–10 s: mark tests that use it ``slow``.

Its ports are random ones from the kernel's ephemeral range, not the defaults' neighbourhood where the
embedded servers of other tests (other xdist workers) look for free ports: one of those would otherwise
take a port of this server while an outage test has it stopped.

``milvus_server(tmp_path, s3_endpoint=...)`` keeps the server's data in an S3 bucket instead of its
local storage, as Milvus Standalone does with MinIO in the Compose stack and the Helm chart: the setup in
which bulk import reads ``s3://`` files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service.store.local_server import PORT_DEFAULTS, LocalMilvusServer
from tests.s3_server import CREDENTIALS
from tests.service.api_server import free_port


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


@contextlib.contextmanager
def milvus_server(
    data_dir: Path, s3_endpoint: str | None = None, bucket: str = "a-bucket"
) -> Iterator[LocalMilvusServer]:
    """A started server whose ``uri`` is ``http://127.0.0.1:<port>``; stopped on exit. With
    ``s3_endpoint``, its data lives in ``bucket`` there (which must exist)."""
    distinct: set[int] = set()
    while len(distinct) < len(PORT_DEFAULTS):
        distinct.add(free_port())
    ports = dict(zip(PORT_DEFAULTS, distinct, strict=True))
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

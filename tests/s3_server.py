"""A real S3-protocol server for tests: moto's, in a thread, on a free loopback port.

No MinIO server binary can be installed here (not on PyPI, npm or Debian), so moto stands in for the
MinIO of the Compose stack and the Helm chart: boto3 (thumbnails, import uploads) and Milvus's own Go
client (its data and import files, ``tests/milvus_server.py``) both speak to it over real HTTP.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from unittest import mock

from tests.service.api_server import free_port

# moto accepts any credentials; these are MinIO's defaults, which the Milvus server config also uses
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "minioadmin",
    "AWS_SECRET_ACCESS_KEY": "minioadmin",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def s3_server(*buckets: str) -> Iterator[str]:
    """Yields the endpoint URL of a started server holding ``buckets``; the AWS credentials are in the
    environment while it runs."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with mock.patch.dict(os.environ, CREDENTIALS):
            client = boto3.client("s3", endpoint_url=endpoint)
            for bucket in buckets:
                client.create_bucket(Bucket=bucket)
            yield endpoint
    finally:
        server.stop()


def object_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    import boto3

    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2")
    return [
        o["Key"] for page in pages.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])
    ]

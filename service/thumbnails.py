"""Thumbnails of ingested images, so search results can be shown: on local disk (default) or in an
S3-compatible bucket (MinIO, AWS S3; ``TUWEN_THUMBNAIL_S3_URI``), so that replicas and `tuwen load`
share them.

Objects are named by a hash of (tenant, id): ids are user input and must never become paths. Local writes
go to a temporary file and are renamed into place, so a reader never sees half a thumbnail; an S3 PUT is
atomic by itself.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

if TYPE_CHECKING:
    from service.config import Settings

MEDIA_TYPE = "image/jpeg"


def render_thumbnail(image: Image.Image, size: int) -> bytes:
    """A JPEG of ``image`` shrunk to fit ``size``×``size`` (CPU work: keep it off the event loop)."""
    if image.mode == "RGB" and max(image.size) <= size:
        thumb = image  # already fits: encode it as it is rather than copy it for thumbnail()'s in-place work
    else:
        thumb = image.convert("RGB")
        thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=85)
    return out.getvalue()


def object_key(tenant: str, item_id: str) -> str:
    digest = hashlib.sha256(f"{tenant}\0{item_id}".encode()).hexdigest()
    return f"{digest[:2]}/{digest}.jpg"


class Backend(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def delete(self, key: str) -> None: ...


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, data: bytes) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class S3Backend:
    """``s3://bucket/prefix`` through boto3 (``pip install tuwen[s3]``). Credentials come the standard AWS
    way (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or an instance role), never from Settings."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket:
            raise ValueError(f"thumbnail S3 URI must look like s3://bucket[/prefix], got {uri!r}")
        try:
            import boto3
        except ImportError:
            raise ValueError(
                "thumbnails in S3 need boto3: pip install 'tuwen[s3]' (or unset TUWEN_THUMBNAIL_S3_URI)"
            ) from None
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url or None)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=MEDIA_TYPE)

    def get(self, key: str) -> bytes | None:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self._client.exceptions.NoSuchKey:
            return None
        body: bytes = response["Body"].read()
        return body

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))


class ThumbnailStore:
    def __init__(self, root: Path, size: int, backend: Backend | None = None) -> None:
        """``backend`` None = files under ``root``."""
        self.root = root
        self.size = size
        self.backend: Backend = backend or LocalBackend(root)

    def render(self, image: Image.Image) -> bytes:
        return render_thumbnail(image, self.size)

    def path(self, tenant: str, item_id: str) -> Path:
        """Where the local backend keeps a thumbnail (meaningless for S3)."""
        return self.root / object_key(tenant, item_id)

    def put(self, tenant: str, item_id: str, data: bytes) -> None:
        self.backend.put(object_key(tenant, item_id), data)

    def get(self, tenant: str, item_id: str) -> bytes | None:
        return self.backend.get(object_key(tenant, item_id))

    def delete(self, tenant: str, item_id: str) -> None:
        self.backend.delete(object_key(tenant, item_id))


def thumbnail_store(settings: Settings) -> ThumbnailStore:
    """The store the settings ask for: an S3 bucket when TUWEN_THUMBNAIL_S3_URI is set, else a directory."""
    backend = (
        S3Backend(settings.thumbnail_s3_uri, settings.s3_endpoint_url) if settings.thumbnail_s3_uri else None
    )
    return ThumbnailStore(settings.resolved_thumbnail_dir, settings.thumbnail_size, backend)

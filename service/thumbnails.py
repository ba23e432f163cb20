"""Thumbnails of ingested images, on local disk, so search results can be shown.

Files are named by a hash of (tenant, id): ids are user input and must never become paths. Writes go to
a temporary file and are renamed into place, so a reader never sees half a thumbnail.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from PIL import Image

MEDIA_TYPE = "image/jpeg"


class ThumbnailStore:
    def __init__(self, root: Path, size: int) -> None:
        self.root = root
        self.size = size

    def render(self, image: Image.Image) -> bytes:
        """A JPEG of ``image`` shrunk to fit ``size``×``size`` (CPU work: call it off the event loop)."""
        thumb = image.convert("RGB")
        thumb.thumbnail((self.size, self.size), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        thumb.save(out, format="JPEG", quality=85)
        return out.getvalue()

    def path(self, tenant: str, item_id: str) -> Path:
        digest = hashlib.sha256(f"{tenant}\0{item_id}".encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.jpg"

    def put(self, tenant: str, item_id: str, data: bytes) -> None:
        target = self.path(tenant, item_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, tenant: str, item_id: str) -> bytes | None:
        try:
            return self.path(tenant, item_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, tenant: str, item_id: str) -> None:
        self.path(tenant, item_id).unlink(missing_ok=True)

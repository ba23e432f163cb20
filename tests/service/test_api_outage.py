"""Against a real Milvus server process: Milvus down → 503 + not ready, recovery without a restart of the
app, and items that survive a restart of the app (and of Milvus)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.milvus_server import milvus_server
from tests.service.api_server import client, image_bytes, serve, settings_for, tiny_bundle

pytestmark = pytest.mark.slow


def test_milvus_outage_gives_503_then_recovers_and_items_survive_restarts(tmp_path: Path) -> None:
    bundle = tiny_bundle()
    with milvus_server(tmp_path / "milvus") as server:
        settings = settings_for(bundle, tmp_path / "data", milvus_uri=server.uri)
        with serve(settings) as base, client(base) as http:
            r = http.post(
                "/items",
                data={"id": "keep", "metadata": json.dumps({"k": 1})},
                files={"image": ("k.png", image_bytes((20, 200, 20)))},
            )
            assert r.status_code == 200, r.text
            assert (
                http.post("/items", json={"items": [{"id": "t-keep", "text": "绿色的草地"}]}).status_code
                == 200
            )

            server.stop()
            down = http.post("/search", json={"text": "绿色", "top_k": 1})
            assert down.status_code == 503 and down.json()["code"] == "store_unavailable"
            assert int(down.headers["retry-after"]) > 0
            assert http.get("/readyz").status_code == 503
            assert http.get("/healthz").status_code == 200  # alive, just not ready
            assert http.post("/embed", json={"texts": ["不需要数据库"]}).status_code == 200

            server.start()  # same data directory and ports (it retries a start that fails)
            deadline = time.monotonic() + 180  # a bound against a hang, not a timing
            while (r := http.post("/search", json={"text": "绿色", "top_k": 1})).status_code != 200:
                assert time.monotonic() < deadline, r.text
                time.sleep(0.5)
            assert http.get("/readyz").status_code == 200
            assert http.get("/items/image/keep").json()["metadata"] == {"k": 1}  # nothing lost in the outage

        with serve(settings) as base, client(base) as http:  # a fresh app on the same Milvus and data dir
            hits = http.post(
                "/search", data={"top_k": "1"}, files={"image": ("q.png", image_bytes((20, 200, 20)))}
            ).json()["results"]
            assert hits[0]["id"] == "keep" and http.get(hits[0]["thumbnail_url"]).status_code == 200
            assert http.get("/items/text/t-keep").json()["text"] == "绿色的草地"

"""50 concurrent clients mixing embed, search and ingest over real HTTP: every answer right, batches formed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.api_server import image_bytes, serve, settings_for, tiny_bundle

pytestmark = pytest.mark.slow

CLIENTS = 50


def test_fifty_concurrent_clients_get_correct_answers_and_share_batches(tmp_path: Path) -> None:
    bundle = tiny_bundle()
    texts = [f"第{i}张图片：红色的圆形和蓝色的方块" for i in range(CLIENTS)]
    with serve(settings_for(bundle, tmp_path / "data", batch_wait_ms=20)) as base:
        with httpx.Client(base_url=base, timeout=60) as http:
            expected = np.array(http.post("/embed", json={"texts": texts[:10]}).json()["embeddings"])

        async def one(i: int, http: httpx.AsyncClient) -> None:
            kind = i % 3
            if kind == 0:  # embed: the row equals the one computed alone
                r = await http.post("/embed", json={"texts": [texts[i % 10]]})
                assert r.status_code == 200, r.text
                assert float(np.array(r.json()["embeddings"][0]) @ expected[i % 10]) > 0.999
            elif kind == 1:  # ingest a text, then find it first by its own text
                r = await http.post("/items", json={"items": [{"id": f"t{i}", "text": texts[i]}]})
                assert r.status_code == 200, r.text
                r = await http.post("/search", json={"text": texts[i], "target": "text", "top_k": 1})
                assert r.json()["results"][0]["id"] == f"t{i}"
            else:  # ingest an image and read it back
                rgb = (i * 5 % 256, 255 - i * 5 % 256, i * 17 % 256)
                r = await http.post(
                    "/items", data={"id": f"i{i}"}, files={"image": ("x.png", image_bytes(rgb))}
                )
                assert r.status_code == 200, r.text
                assert (await http.get(f"/items/image/i{i}")).status_code == 200

        async def main() -> None:
            limits = httpx.Limits(max_connections=CLIENTS)
            async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
                await asyncio.gather(*(one(i, http) for i in range(CLIENTS)))

        asyncio.run(main())
        metrics = httpx.get(base + "/metrics").text
    for tower in ("text", "image"):
        count = float(re.search(rf'tuwen_batch_size_count{{tower="{tower}"}} (\S+)', metrics).group(1))
        total = float(re.search(rf'tuwen_batch_size_sum{{tower="{tower}"}} (\S+)', metrics).group(1))
        print(f"{tower}: {total:.0f} inputs in {count:.0f} batches, mean batch {total / count:.2f}")
    text_count = float(re.search(r'tuwen_batch_size_count{tower="text"} (\S+)', metrics).group(1))
    text_sum = float(re.search(r'tuwen_batch_size_sum{tower="text"} (\S+)', metrics).group(1))
    assert text_sum > text_count  # some batch held more than one input

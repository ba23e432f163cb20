"""Concurrency over real HTTP: 50 clients mixing embed, search and ingest get right answers and share
batches; concurrent searches of two tenants share Milvus calls yet equal their lone answers."""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.api_server import client, image_bytes, serve, settings_for, tiny_bundle

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


def test_concurrent_searches_of_two_tenants_equal_their_lone_answers_and_never_leak(tmp_path: Path) -> None:
    """Concurrent /search calls share Milvus calls by (target, top_k, filter, tenant): each answer must be
    the one the same search gets alone, and a tenant must only ever see its own items."""
    from service.bundle import Bundle
    from service.store import Item, VectorStore

    bundle = tiny_bundle()
    keys = {"tenant-a": "key-a", "tenant-b": "key-b"}
    settings = settings_for(bundle, tmp_path / "data", api_keys=",".join(f"{k}:{t}" for t, k in keys.items()))
    # The random tiny model maps every text to nearly one vector (scores tie to 1e-7, below the noise of
    # batched inference), so the items get random vectors, stored before the app opens the Milvus Lite file.
    manifest = Bundle.load(bundle)
    store = VectorStore(settings.resolved_milvus_uri, model=manifest.model_name, dim=manifest.embed_dim)
    rng = np.random.default_rng(7)
    for tenant in keys:
        vectors = rng.standard_normal((12, manifest.embed_dim))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert(
            "text",
            [
                Item(  # the same ids in both tenants: only the text tells whose an item is
                    id=f"item-{i}",
                    vector=vector.tolist(),
                    tenant=tenant,
                    text=f"{tenant}的第{i}件",
                    metadata={"color": "red" if i % 2 else "blue"},
                )
                for i, vector in enumerate(vectors)
            ],
        )
    store.close()
    red = [{"field": "color", "op": "eq", "value": "red"}]
    texts = ("红色的圆形", "蓝色的方块", "一只猫", "草地上的小狗", "夜晚的城市", "海边的日落")
    queries = [
        {"text": text, "target": "text", "top_k": 5, **({"filter": flt} if flt else {})}
        for text in texts
        for flt in (None, red)
    ]

    def answer(response: httpx.Response) -> list[tuple[str, float, str]]:
        assert response.status_code == 200, response.text
        assert "milvus-search;dur=" in response.headers["server-timing"]
        return [(h["id"], h["score"], h["text"]) for h in response.json()["results"]]

    with serve(settings) as base:
        alone: dict[tuple[str, int], list[tuple[str, float, str]]] = {}
        for tenant, key in keys.items():
            with client(base, key) as http:
                for q, query in enumerate(queries):
                    alone[tenant, q] = answer(http.post("/search", json=query))

        def milvus_searches() -> float:
            metrics = httpx.get(base + "/metrics").text
            return float(re.search(r'tuwen_milvus_seconds_count{op="search"} (\S+)', metrics).group(1))

        before = milvus_searches()
        jobs = [(tenant, q) for _ in range(3) for tenant in keys for q in range(len(queries))]

        async def main() -> list[list[tuple[str, float, str]]]:
            limits = httpx.Limits(max_connections=len(jobs))
            async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
                replies = await asyncio.gather(
                    *(
                        http.post("/search", json=queries[q], headers={"Authorization": f"Bearer {keys[t]}"})
                        for t, q in jobs
                    )
                )
            return [answer(r) for r in replies]

        together = asyncio.run(main())
        calls = milvus_searches() - before
    for (tenant, _), expected in alone.items():
        assert len(expected) == 5 and all(text.startswith(f"{tenant}的") for _, _, text in expected)
        scores = [score for _, score, _ in expected]
        assert min(a - b for a, b in itertools.pairwise(scores)) > 1e-4  # the order is not a float tie
    for (tenant, q), hits in zip(jobs, together, strict=True):
        expected = alone[tenant, q]
        assert [(i, text) for i, _, text in hits] == [(i, text) for i, _, text in expected], (tenant, q)
        assert [s for _, s, _ in hits] == pytest.approx([s for _, s, _ in expected], abs=1e-5)
        if "filter" in queries[q]:
            assert all(int(i.split("-")[1]) % 2 for i, _, _ in hits)  # red items only
    print(f"{len(jobs)} concurrent searches in {calls:.0f} Milvus calls")
    # The text tower answers a batch's requests in one pass, so their searches reach the coalescer
    # together: fewer Milvus calls than searches unless coalescing is broken.
    assert calls < len(jobs)

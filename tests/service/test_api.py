"""The API end to end: real ONNX Runtime on a tiny exported bundle, real Milvus Lite, real uvicorn HTTP.

Only what needs those real parts is here: embeddings of the real towers, search on real vectors, filter
values against Milvus' expression parser, a restart. HTTP behaviour (validation, error codes, limits,
tenants, auth, metrics) is tested in-process on fakes in test_api_fast.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.api_server import client, image_bytes, serve, settings_for, tiny_bundle

pytestmark = pytest.mark.slow

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


@pytest.fixture(scope="module")
def bundle() -> Path:
    return tiny_bundle()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def url(bundle: Path, data_dir: Path) -> Iterator[str]:
    with serve(
        settings_for(
            bundle,
            data_dir,
            max_texts=8,
            max_text_chars=64,
            max_top_k=20,
            max_image_pixels=1_000_000,
            max_upload_bytes=2 * 1024 * 1024,
        )
    ) as base:
        yield base


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with client(url) as c:
        yield c


def add_image(http: httpx.Client, item_id: str, data: bytes, metadata: dict | None = None) -> httpx.Response:
    return http.post(
        "/items",
        data={"id": item_id, "metadata": json.dumps(metadata or {})},
        files={"image": ("x.png", data)},
    )


def test_embed_texts_and_images_are_normalised_and_batched_equal_single(http: httpx.Client) -> None:
    texts = ["红色的圆形", "蓝色的方块", "一只猫"]
    batch = http.post("/embed", json={"texts": texts})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    vectors = np.array(body["embeddings"])
    assert vectors.shape == (3, body["dim"]) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    single = np.array(http.post("/embed", json={"texts": [texts[1]]}).json()["embeddings"][0])
    assert float(single @ vectors[1]) > 0.999
    assert "inference;dur=" in batch.headers["server-timing"]
    images = http.post(
        "/embed",
        files=[("images", ("a.png", image_bytes(RED))), ("images", ("b.jpg", image_bytes(BLUE, fmt="JPEG")))],
    )
    assert images.status_code == 200, images.text
    assert np.array(images.json()["embeddings"]).shape == (2, body["dim"])


def test_ingest_then_search_finds_the_item_first_for_its_own_text_and_image(http: httpx.Client) -> None:
    captions = {
        "c-red": "红色的圆形",
        "c-blue": "蓝色的正方形",
        "c-green": "草地上的绿色小狗",
        "c-cat": "一只睡觉的猫",
    }
    r = http.post(
        "/items",
        json={
            "items": [{"id": k, "text": v, "metadata": {"n": i}} for i, (k, v) in enumerate(captions.items())]
        },
    )
    assert r.status_code == 200, r.text
    for item_id, text in captions.items():
        hits = http.post("/search", json={"text": text, "target": "text", "top_k": 3}).json()["results"]
        assert hits[0]["id"] == item_id and hits[0]["text"] == text
    images = {
        "i-red": image_bytes(RED),
        "i-blue": image_bytes(BLUE, shape="square"),
        "i-green": image_bytes(GREEN, size=96),
    }
    for item_id, data in images.items():
        assert add_image(http, item_id, data, {"color": item_id[2:]}).status_code == 200
    for item_id, data in images.items():
        r = http.post("/search", data={"target": "image", "top_k": "3"}, files={"image": ("q.png", data)})
        assert r.status_code == 200, r.text
        top = r.json()["results"][0]
        assert top["id"] == item_id and top["metadata"] == {"color": item_id[2:]}
        thumb = http.get(top["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    # image → text and text+image queries answer with the right shapes
    r = http.post(
        "/search", data={"target": "text", "top_k": "2"}, files={"image": ("q.png", images["i-red"])}
    )
    assert r.status_code == 200 and len(r.json()["results"]) == 2 and r.json()["results"][0]["text"]
    r = http.post(
        "/search",
        data={"text": "红色", "text_weight": "0.3", "top_k": "3"},
        files={"image": ("q.png", images["i-red"])},
    )
    assert r.status_code == 200 and r.json()["results"][0]["id"] == "i-red"
    # a structured filter narrows the results
    r = http.post(
        "/search",
        json={"text": "圆形", "top_k": 5, "filter": [{"field": "color", "op": "eq", "value": "blue"}]},
    )
    assert [h["id"] for h in r.json()["results"]] == ["i-blue"]


def test_an_injection_attempt_in_a_filter_value_is_only_data(http: httpx.Client) -> None:
    assert (
        http.post(
            "/items", json={"items": [{"id": "inj", "text": "注入测试", "metadata": {"color": "red"}}]}
        ).status_code
        == 200
    )
    evil = 'red" or tenant != "nobody" or color == "'
    r = http.post(
        "/search",
        json={
            "text": "注入测试",
            "target": "text",
            "filter": [{"field": "color", "op": "eq", "value": evil}],
        },
    )
    assert r.status_code == 200 and r.json()["results"] == []
    ok = http.post(
        "/search",
        json={
            "text": "注入测试",
            "target": "text",
            "filter": [{"field": "color", "op": "eq", "value": "red"}],
        },
    )
    assert [h["id"] for h in ok.json()["results"]] == ["inj"]


def test_items_survive_a_restart_of_the_app_on_milvus_lite(bundle: Path, tmp_path: Path) -> None:
    settings = settings_for(bundle, tmp_path)
    with serve(settings) as base, client(base) as http:
        assert add_image(http, "keep", image_bytes(GREEN), {"k": 1}).status_code == 200
        assert http.post("/items", json={"items": [{"id": "t-keep", "text": "绿色"}]}).status_code == 200
    with serve(settings) as base, client(base) as http:
        hits = http.post("/search", data={"top_k": "1"}, files={"image": ("q.png", image_bytes(GREEN))})
        assert hits.json()["results"][0]["id"] == "keep"
        assert http.get("/items/text/t-keep").json()["text"] == "绿色"

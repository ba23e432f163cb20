"""The API end to end: real ONNX Runtime on a tiny exported bundle, real Milvus Lite, real uvicorn HTTP."""

from __future__ import annotations

import base64
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


def test_health_ready_docs_and_page(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert "/search" in http.get("/openapi.json").json()["paths"]
    assert http.get("/docs").status_code == 200
    page = http.get("/")
    assert page.status_code == 200 and "图文" in page.text
    assert http.get("/static/app.js").status_code == 200


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


def test_upsert_replaces_and_delete_removes(http: httpx.Client) -> None:
    assert add_image(http, "u-1", image_bytes(RED), {"v": 1}).status_code == 200
    assert add_image(http, "u-1", image_bytes(BLUE, shape="square"), {"v": 2}).status_code == 200
    item = http.get("/items/image/u-1").json()
    assert item["metadata"] == {"v": 2}
    hits = http.post(
        "/search", data={"top_k": "20"}, files={"image": ("q.png", image_bytes(BLUE, shape="square"))}
    ).json()["results"]
    assert [h["id"] for h in hits].count("u-1") == 1 and hits[0]["score"] > 0.999
    assert http.delete("/items/image/u-1").json()["deleted"] is True
    assert http.get("/items/image/u-1").status_code == 404
    assert http.get("/items/image/u-1/thumbnail").status_code == 404
    assert http.delete("/items/image/u-1").json()["code"] == "not_found"


def test_openai_compatible_embeddings(http: httpx.Client) -> None:
    r = http.post("/v1/embeddings", json={"input": ["红色的圆形", "猫"], "model": None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"]["prompt_tokens"] > 0
    b64 = http.post("/v1/embeddings", json={"input": "猫", "encoding_format": "base64"}).json()["data"][0][
        "embedding"
    ]
    decoded = np.frombuffer(base64.b64decode(b64), dtype="<f4")
    assert np.allclose(decoded, body["data"][1]["embedding"], atol=1e-6)


BOMB_SIDE = 4000  # 16 MP of one colour in a few kB of PNG; the server allows 1 MP


def _bomb() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (BOMB_SIDE, BOMB_SIDE)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("post", "/embed", {"files": [("images", ("e.png", b""))]}, 400, "image_empty"),
        (
            "post",
            "/embed",
            {"files": [("images", ("t.png", image_bytes(RED)[:60]))]},
            400,
            "image_unreadable",
        ),
        (
            "post",
            "/embed",
            {"files": [("images", ("n.png", b"not an image at all"))]},
            400,
            "image_unreadable",
        ),
        ("post", "/embed", {"files": [("images", ("b.png", _bomb()))]}, 413, "image_too_many_pixels"),
        (
            "post",
            "/embed",
            {"content": b"texts=1", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "post",
            "/embed",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "invalid_request",
        ),
        ("post", "/embed", {"json": {"texts": ["长" * 65]}}, 413, "text_too_long"),
        ("post", "/embed", {"json": {"texts": ["a"] * 9}}, 413, "too_many_texts"),
        ("post", "/embed", {"json": {"texts": []}}, 422, "invalid_request"),
        (
            "post",
            "/embed",
            {"content": b"x" * (3 * 1024 * 1024), "headers": {"content-type": "application/json"}},
            413,
            "body_too_large",
        ),
        ("post", "/search", {"json": {"text": "猫", "top_k": 0}}, 422, "invalid_request"),
        ("post", "/search", {"json": {"text": "猫", "top_k": 21}}, 422, "invalid_top_k"),
        ("post", "/search", {"json": {"text": "猫", "top_k": "many"}}, 422, "invalid_request"),
        ("post", "/search", {"json": {}}, 422, "invalid_request"),
        (
            "post",
            "/search",
            {"json": {"text": "猫", "filter": [{"field": "color", "op": "like", "value": "x"}]}},
            422,
            "invalid_filter",
        ),
        (
            "post",
            "/search",
            {"json": {"text": "猫", "filter": [{"field": "color) or (1==1", "op": "eq", "value": "x"}]}},
            422,
            "invalid_filter",
        ),
        (
            "post",
            "/search",
            {"data": {"text": "猫", "filter": "{broken"}, "files": {"image": ("q.png", image_bytes(RED))}},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/items",
            {"data": {"id": "x"}, "files": {"image": ("x.gif", b"GIF89a")}},
            400,
            "image_unreadable",
        ),
        (
            "post",
            "/items",
            {"data": {"id": "", "metadata": "{}"}, "files": {"image": ("x.png", image_bytes(RED))}},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/items",
            {
                "data": {"id": "m", "metadata": json.dumps({"k": "v" * 5000})},
                "files": {"image": ("x.png", image_bytes(RED))},
            },
            413,
            "metadata_too_large",
        ),
        (
            "post",
            "/items",
            {"json": {"items": [{"id": "a", "text": "x", "extra": 1}]}},
            422,
            "invalid_request",
        ),
        ("get", "/items/video/1", {}, 422, "invalid_request"),
        ("post", "/v1/embeddings", {"json": {"input": [1, 2, 3]}}, 422, "invalid_request"),
    ],
)
def test_bad_input_gets_its_4xx_and_the_service_keeps_answering(
    http: httpx.Client, method: str, path: str, kwargs: dict, status: int, code: str
) -> None:
    r = getattr(http, method)(path, **kwargs)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert r.json()["message"]
    assert http.post("/embed", json={"texts": ["还活着"]}).status_code == 200


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


def test_metrics_expose_the_agreed_names(http: httpx.Client) -> None:
    http.post("/embed", json={"texts": ["指标"]})
    text = http.get("/metrics").text
    for name in (
        "tuwen_requests_total",
        "tuwen_request_seconds",
        "tuwen_batch_size",
        "tuwen_queue_seconds",
        "tuwen_inference_seconds",
        "tuwen_queue_depth",
        "tuwen_milvus_seconds",
        "tuwen_ready 1.0",
    ):
        assert name in text, name
    assert 'route="/embed"' in text


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(http: httpx.Client) -> None:
    sent = 0

    def chunks():  # no Content-Length: the server must count while it reads
        nonlocal sent
        for _ in range(64):
            sent += 64 * 1024
            yield b"x" * (64 * 1024)

    r = http.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    assert http.get("/healthz").status_code == 200


def test_items_survive_a_restart_of_the_app_on_milvus_lite(bundle: Path, tmp_path: Path) -> None:
    settings = settings_for(bundle, tmp_path)
    with serve(settings) as base, client(base) as http:
        assert add_image(http, "keep", image_bytes(GREEN), {"k": 1}).status_code == 200
        assert http.post("/items", json={"items": [{"id": "t-keep", "text": "绿色"}]}).status_code == 200
    with serve(settings) as base, client(base) as http:
        hits = http.post("/search", data={"top_k": "1"}, files={"image": ("q.png", image_bytes(GREEN))})
        assert hits.json()["results"][0]["id"] == "keep"
        assert http.get("/items/text/t-keep").json()["text"] == "绿色"

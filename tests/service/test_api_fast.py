"""HTTP behaviour in-process on fakes (tests/service/fake_app.py): validation, error codes, limits,
tenants, auth, metrics and the shapes of every answer — in seconds, without ONNX, Milvus or uvicorn.

The fake towers give each distinct text or image its own fixed direction, so a search with an item's own
text or image finds it first at score 1. What needs the real parts (embedding parity, Milvus, a restart,
filter injection against Milvus' expression parser) is in test_api.py and test_api_outage.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from service.api.state import Services
from service.engines.fake import text_vector
from service.preprocessing.text import ChineseTokenizer
from service.store import StoreUnavailable
from tests.service.api_server import image_bytes
from tests.service.fake_app import DIM, MODEL, fake_client, fake_settings

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # The limits of test_api.py's server, so the same requests cross the same limits.
    settings = fake_settings(
        tmp_path_factory.mktemp("data"),
        max_texts=8,
        max_text_chars=64,
        max_top_k=20,
        max_image_pixels=1_000_000,
        max_upload_bytes=2 * 1024 * 1024,
    )
    with fake_client(settings) as client:
        yield client


def services_of(http: TestClient) -> Services:
    return http.app.state.services  # type: ignore[attr-defined]


def add_image(http: TestClient, item_id: str, data: bytes, metadata: dict | None = None) -> httpx.Response:
    return http.post(
        "/items",
        data={"id": item_id, "metadata": json.dumps(metadata or {})},
        files={"image": ("x.png", data)},
    )


def test_health_ready_docs_and_page(http: TestClient) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["model"] == MODEL and ready.json()["backend"] == "fake"
    assert ready.json()["family"] == "chinese-clip"
    assert "/search" in http.get("/openapi.json").json()["paths"]
    assert http.get("/docs").status_code == 200
    page = http.get("/")
    assert page.status_code == 200 and "图文" in page.text
    assert http.get("/static/app.js").status_code == 200


def test_embed_answers_unit_vectors_of_the_model_for_texts_and_images(http: TestClient) -> None:
    texts = ["红色的圆形", "蓝色的方块", "一只猫"]
    batch = http.post("/embed", json={"texts": texts})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert (body["model"], body["family"], body["dim"]) == (MODEL, "chinese-clip", DIM)
    vectors = np.array(body["embeddings"])
    assert vectors.shape == (3, DIM) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # the request went through the real tokenizer to the fake tower, which hashes the ids
    ids = ChineseTokenizer.from_vocab().encode(texts[1])[0]
    assert np.allclose(vectors[1], text_vector(ids, DIM), atol=1e-6)
    single = np.array(http.post("/embed", json={"texts": [texts[1]]}).json()["embeddings"][0])
    assert float(single @ vectors[1]) > 0.999
    assert "inference;dur=" in batch.headers["server-timing"]
    assert "queue;dur=" in batch.headers["server-timing"]
    images = http.post(
        "/embed",
        files=[("images", ("a.png", image_bytes(RED))), ("images", ("b.jpg", image_bytes(BLUE, fmt="JPEG")))],
    )
    assert images.status_code == 200, images.text
    assert np.array(images.json()["embeddings"]).shape == (2, DIM)


def test_ingest_then_search_finds_each_item_first_with_its_own_text_or_image(http: TestClient) -> None:
    captions = {"c-red": "红色的圆形", "c-blue": "蓝色的正方形", "c-cat": "一只睡觉的猫"}
    r = http.post(
        "/items",
        json={
            "items": [{"id": k, "text": v, "metadata": {"n": i}} for i, (k, v) in enumerate(captions.items())]
        },
    )
    assert r.status_code == 200 and r.json() == {"kind": "text", "ids": list(captions)}, r.text
    for n, (item_id, text) in enumerate(captions.items()):
        r = http.post("/search", json={"text": text, "target": "text", "top_k": 3})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == MODEL and r.json()["target"] == "text"
        top = r.json()["results"][0]
        assert (top["id"], top["text"], top["metadata"]) == (item_id, text, {"n": n})
        assert top["score"] == pytest.approx(1.0, abs=1e-4) and top["thumbnail_url"] is None
    images = {"i-red": image_bytes(RED), "i-blue": image_bytes(BLUE, shape="square")}
    for item_id, data in images.items():
        r = add_image(http, item_id, data, {"color": item_id[2:]})
        assert r.status_code == 200 and r.json() == {"kind": "image", "ids": [item_id]}, r.text
    for item_id, data in images.items():
        r = http.post("/search", data={"target": "image", "top_k": "3"}, files={"image": ("q.png", data)})
        assert r.status_code == 200, r.text
        top = r.json()["results"][0]
        assert top["id"] == item_id and top["metadata"] == {"color": item_id[2:]} and top["text"] is None
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
    # a structured filter narrows the results, in JSON and in a multipart form
    flt = [{"field": "color", "op": "eq", "value": "blue"}]
    r = http.post("/search", json={"text": "圆形", "top_k": 5, "filter": flt})
    assert [h["id"] for h in r.json()["results"]] == ["i-blue"]
    r = http.post("/search", data={"filter": json.dumps(flt)}, files={"image": ("q.png", images["i-red"])})
    assert [h["id"] for h in r.json()["results"]] == ["i-blue"]
    r = http.post(
        "/search", json={"text": "猫", "target": "text", "filter": [{"field": "n", "op": "gte", "value": 1}]}
    )
    assert {h["id"] for h in r.json()["results"]} == {"c-blue", "c-cat"}


def test_upsert_replaces_and_delete_removes(http: TestClient) -> None:
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


def test_a_text_item_reads_back_with_its_text_and_time(http: TestClient) -> None:
    assert (
        http.post(
            "/items", json={"items": [{"id": "t-read", "text": "绿色", "metadata": {"k": 1}}]}
        ).status_code
        == 200
    )
    item = http.get("/items/text/t-read").json()
    assert (item["kind"], item["id"], item["text"], item["metadata"]) == ("text", "t-read", "绿色", {"k": 1})
    assert item["created_at"] > 0 and item["thumbnail_url"] is None
    r = http.post("/items", json={"items": [{"id": "d", "text": "一"}, {"id": "d", "text": "二"}]})
    assert (r.status_code, r.json()["code"]) == (422, "duplicate_id")


def test_openai_compatible_embeddings(http: TestClient) -> None:
    r = http.post("/v1/embeddings", json={"input": ["红色的圆形", "猫"], "model": None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    assert body["model"] == MODEL and body["usage"]["prompt_tokens"] > 0
    b64 = http.post("/v1/embeddings", json={"input": "猫", "encoding_format": "base64"}).json()["data"][0][
        "embedding"
    ]
    decoded = np.frombuffer(base64.b64decode(b64), dtype="<f4")
    assert np.allclose(decoded, body["data"][1]["embedding"], atol=1e-6)
    wrong = http.post("/v1/embeddings", json={"input": "猫", "model": "another"})
    assert (wrong.status_code, wrong.json()["code"]) == (404, "model_not_found")
    wrong = http.post("/v1/embeddings", json={"input": "猫", "dimensions": DIM + 1})
    assert (wrong.status_code, wrong.json()["code"]) == (422, "invalid_request")


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
    http: TestClient, method: str, path: str, kwargs: dict, status: int, code: str
) -> None:
    r = getattr(http, method)(path, **kwargs)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert r.json()["message"]
    assert http.post("/embed", json={"texts": ["还活着"]}).status_code == 200


def test_metrics_expose_the_agreed_names(http: TestClient) -> None:
    http.post("/embed", json={"texts": ["指标"]})
    http.post("/search", json={"text": "指标", "top_k": 1})  # a store call, whatever ran before
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


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(http: TestClient) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count while it reads
        nonlocal sent
        for _ in range(64):
            sent += 64 * 1024
            yield b"x" * (64 * 1024)

    r = http.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    assert http.get("/healthz").status_code == 200


def test_an_unreachable_store_answers_503_with_retry_after_and_unready(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = services_of(http).store.index

    def down(*_: object, **__: object) -> None:
        raise StoreUnavailable("Milvus is down (simulated)")

    for method in ("search", "get", "upsert", "delete"):
        monkeypatch.setattr(store, method, down)
    monkeypatch.setattr(store, "ping", lambda: False)
    for r in (
        http.post("/search", json={"text": "绿色", "top_k": 1}),
        http.get("/items/text/anything"),
        http.post("/items", json={"items": [{"id": "x", "text": "写不进去"}]}),
        http.delete("/items/text/anything"),
    ):
        assert (r.status_code, r.json()["code"]) == (503, "store_unavailable"), r.text
        assert int(r.headers["retry-after"]) > 0
    ready = http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["store"] is False and ready.json()["engines"] is True
    assert http.get("/healthz").status_code == 200  # alive, just not ready
    assert http.post("/embed", json={"texts": ["不需要数据库"]}).status_code == 200
    monkeypatch.undo()
    assert http.get("/readyz").status_code == 200


def test_a_tenant_never_sees_another_tenants_items_and_bad_keys_get_401(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path / "data", api_keys="key-a:tenant-a,key-b:tenant-b")
    with fake_client(settings) as http:
        for key in (None, "wrong"):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            r = http.post("/search", json={"text": "猫"}, headers=headers)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert http.get("/healthz").status_code == 200
        a, b = {"Authorization": "Bearer key-a"}, {"X-API-Key": "key-b"}
        assert (
            http.post("/items", json={"items": [{"id": "same", "text": "甲的猫"}]}, headers=a).status_code
            == 200
        )
        assert (
            http.post("/items", json={"items": [{"id": "same", "text": "乙的狗"}]}, headers=b).status_code
            == 200
        )
        assert http.get("/items/text/same", headers=a).json()["text"] == "甲的猫"
        assert http.get("/items/text/same", headers=b).json()["text"] == "乙的狗"
        hits = http.post("/search", json={"text": "甲的猫", "target": "text", "top_k": 10}, headers=b).json()[
            "results"
        ]
        assert [h["text"] for h in hits] == ["乙的狗"]
        assert http.delete("/items/text/same", headers=a).status_code == 200
        assert http.get("/items/text/same", headers=b).status_code == 200
        assert http.get("/items/text/same", headers=a).status_code == 404

"""The security and reliability findings of a hostile-client review, each against a real server (real
uvicorn HTTP, a real tiny ONNX bundle, Milvus Lite): injection through ids, ids with '/', metadata Milvus
cannot store, genuine faults that must not drop the connection, and store calls that must not hang."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest

from service.cli import main
from tests.service.api_server import client, image_bytes, serve, settings_for, tiny_bundle

pytestmark = pytest.mark.slow

INJECTION = "a'] or pk like 'bob%' or pk in ['"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    data = tmp_path_factory.mktemp("data")
    settings = settings_for(tiny_bundle(), data, api_keys="ka:alice,kb:bob", milvus_timeout_s=2)
    with serve(settings) as base:
        yield base, settings


@pytest.fixture
def alice(served: tuple[str, object]) -> Iterator[httpx.Client]:
    with client(served[0], "ka") as c:
        yield c


@pytest.fixture
def bob(served: tuple[str, object]) -> Iterator[httpx.Client]:
    with client(served[0], "kb") as c:
        yield c


def add_text(http: httpx.Client, item_id: str, text: str = "一段文字", **metadata: object) -> httpx.Response:
    return http.post("/items", json={"items": [{"id": item_id, "text": text, "metadata": metadata}]})


def add_image(http: httpx.Client, item_id: str, metadata: object = None) -> httpx.Response:
    return http.post(
        "/items",
        data={"id": item_id, "metadata": json.dumps(metadata or {})},
        files={"image": ("x.png", image_bytes((200, 30, 30)))},
    )


def test_an_injected_id_cannot_read_or_delete_another_tenants_items(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    assert add_text(bob, "secret", "bob 的秘密").status_code == 200
    for path in (f"/items/text/{quote(INJECTION, safe='')}", f"/items/text?id={quote(INJECTION, safe='')}"):
        assert alice.delete(path).status_code == 404, path
        got = alice.get(path)
        assert got.status_code == 404 and got.json()["code"] == "not_found", path
    assert bob.get("/items/text/secret").json()["text"] == "bob 的秘密"
    # The same id stored by alice is hers alone, and addressable.
    assert add_text(alice, INJECTION).status_code == 200
    assert alice.get("/items/text", params={"id": INJECTION}).json()["id"] == INJECTION
    assert bob.get("/items/text", params={"id": INJECTION}).status_code == 404
    assert alice.delete("/items/text", params={"id": INJECTION}).json()["deleted"] is True
    assert bob.get("/items/text/secret").status_code == 200


@pytest.mark.parametrize("item_id", ["a\\", "\\", "é\\u0041😀", "%2F", "50%", "[x]", '"', "'"])
def test_ids_with_backslashes_quotes_and_percents_are_4xx_or_found_never_500(
    alice: httpx.Client, item_id: str
) -> None:
    for method in ("get", "delete"):
        r = getattr(alice, method)(f"/items/text/{quote(item_id, safe='')}")
        assert r.status_code == 404 and r.json()["code"] == "not_found", (method, item_id, r.text)
    assert add_text(alice, item_id).status_code == 200
    assert alice.get("/items/text", params={"id": item_id}).json()["id"] == item_id
    assert alice.delete(f"/items/text/{quote(item_id, safe='')}").json()["deleted"] is True


def test_ids_with_slashes_are_addressable_everywhere(alice: httpx.Client) -> None:
    item_id = "2024/trip/cat.jpg"
    assert add_image(alice, item_id, {"where": "trip"}).status_code == 200
    # The path form, raw or with %2F (which servers decode before routing), and the query form.
    for path in ("/items/image/2024/trip/cat.jpg", "/items/image/2024%2Ftrip%2Fcat.jpg"):
        assert alice.get(path).json()["metadata"] == {"where": "trip"}, path
    item = alice.get("/items/image", params={"id": item_id}).json()
    thumb = alice.get(item["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    hits = alice.post(
        "/search", data={"top_k": "5"}, files={"image": ("q.png", image_bytes((200, 30, 30)))}
    ).json()["results"]
    hit = next(h for h in hits if h["id"] == item_id)
    assert alice.get(hit["thumbnail_url"]).status_code == 200
    # Dot segments are normalised away by clients in a path; the query form keeps them.
    dotted = "albums/../2024/./x"
    assert add_text(alice, dotted).status_code == 200
    assert alice.get("/items/text", params={"id": dotted}).json()["id"] == dotted
    assert alice.delete("/items/text", params={"id": dotted}).json()["deleted"] is True
    assert alice.delete("/items/image/2024/trip/cat.jpg").json()["deleted"] is True
    assert alice.get(item["thumbnail_url"]).status_code == 404
    # The old one-segment thumbnail URL still works.
    assert add_image(alice, "plain-id").status_code == 200
    assert alice.get("/items/image/plain-id/thumbnail").status_code == 200


@pytest.mark.parametrize(
    ("metadata_json", "what"),
    [
        ('{"n": 10000000000000000000000000000000000000000}', "an integer outside 64 bits"),
        ('{"n": -9223372036854775809}', "one below int64"),
        ('{"n": NaN}', "NaN"),
        ('{"n": Infinity}', "Infinity"),
        ('{"n": 1e999}', "a float that overflows"),
        ("{" + '"a": {' * 12 + "}" * 12 + "}", "too deep"),
    ],
)
def test_metadata_milvus_cannot_store_is_refused_at_the_edge(
    alice: httpx.Client, metadata_json: str, what: str
) -> None:
    body = '{"items": [{"id": "meta-x", "text": "文字", "metadata": ' + metadata_json + "}]}"
    r = alice.post("/items", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_metadata", (what, r.text)
    form = alice.post(
        "/items",
        data={"id": "meta-y", "metadata": metadata_json},
        files={"image": ("x.png", image_bytes((1, 2, 3)))},
    )
    assert form.status_code == 422 and form.json()["code"] == "invalid_metadata", (what, form.text)
    assert alice.get("/items/text/meta-x").status_code == 404
    assert alice.get("/items/image/meta-y").status_code == 404
    # The edge of what fits is stored and read back exactly.
    edge = {"big": 2**63 - 1, "small": -(2**63), "deep": {"a": {"b": {"c": [1, 2.5, None, True]}}}}
    assert add_text(alice, "meta-ok", **edge).status_code == 200
    assert alice.get("/items/text/meta-ok").json()["metadata"] == edge


def test_bad_ids_in_forms_and_bodies_are_invalid_id(alice: httpx.Client) -> None:
    for bad in ("", "   ", "x" * 257, "tab\there", "中" * 86):
        r = alice.post("/items", json={"items": [{"id": bad, "text": "t"}]})
        assert r.status_code == 422, (bad, r.text)
        form = alice.post("/items", data={"id": bad}, files={"image": ("x.png", image_bytes((1, 2, 3)))})
        assert form.status_code == 422, (bad, form.text)
    assert (
        alice.post("/items", json={"items": [{"id": "tab\there", "text": "t"}]}).json()["code"]
        == "invalid_id"
    )
    assert alice.get("/items/text?id=").status_code == 422


def test_a_genuine_fault_answers_json_500_and_keeps_the_connection(served: tuple[str, object]) -> None:
    base, _ = served
    app_services = _services(base)
    store = app_services.store.index
    original = store.get

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug, not bad input")

    store.get = broken
    try:
        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        headers = {"Authorization": "Bearer ka"}
        conn.request("GET", "/items/text/anything", headers=headers)
        first = conn.getresponse()
        body = json.loads(first.read())
        assert first.status == 500 and body["code"] == "internal_error", body
        assert (first.getheader("connection") or "").lower() != "close"
        sock = conn.sock
        conn.request("GET", "/healthz")
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read()) == {"status": "ok"}
        assert conn.sock is sock  # the same connection answered: it was not dropped
        conn.close()
    finally:
        store.get = original


def test_a_store_call_that_hangs_answers_503_with_retry_after(
    alice: httpx.Client, served: tuple[str, object]
) -> None:
    base, _ = served
    store = _services(base).store.index
    original = store.upsert
    release = threading.Event()

    def stuck(*args: object, **kwargs: object) -> int:
        release.wait(60)  # a Milvus that does not answer (restarting); the deadline is 2 s here
        return original(*args, **kwargs)

    store.upsert = stuck
    try:
        r = alice.post("/items", json={"items": [{"id": "stuck", "text": "t"}]}, timeout=30)
        assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text
        assert int(r.headers["retry-after"]) >= 1
        assert "TUWEN_MILVUS_TIMEOUT_S" in r.json()["message"] or r.json()["message"]
    finally:
        release.set()
        store.upsert = original
    assert alice.get("/healthz").status_code == 200


def test_ingest_of_a_nested_folder_makes_every_item_addressable(
    tmp_path: Path, served: tuple[str, object]
) -> None:
    base, _ = served
    folder = tmp_path / "photos"
    paths = ["2024/trip/cat.jpg", "2024/trip/dog.png", "top.png", "a b/c%d/e'f.png"]
    for i, rel in enumerate(paths):
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(
            image_bytes((40 * i, 90, 200 - 40 * i), fmt="JPEG" if rel.endswith("jpg") else "PNG")
        )
    args = ["ingest", str(folder), "--url", base, "--api-key", "kb", "--no-progress"]
    args += ["--log", str(tmp_path / "log"), "--report", str(tmp_path / "report.jsonl")]
    assert main(args) == 0
    with client(base, "kb") as bob:
        for rel in paths:
            item = bob.get("/items/image/" + quote(rel))
            assert item.status_code == 200 and item.json()["id"] == rel, rel
            assert bob.get(item.json()["thumbnail_url"]).status_code == 200, rel
        assert bob.delete("/items/image", params={"id": "2024/trip/dog.png"}).json()["deleted"] is True


def _services(base: str):  # type: ignore[no-untyped-def]
    """The running app's services (the test server runs in this process)."""
    from tests.service.api_server import app_for

    return app_for(base).state.services

"""`tuwen index` / `tuwen load` end to end: a real local Ray (2 CPUs), a real exported tiny bundle on ONNX
Runtime, real Milvus (Lite), a real app over HTTP, a real S3 server (moto's, for thumbnails).

Every source kind is indexed and its vectors compared with what the running service's /embed returns
for the same files; loaded shards are searchable with their thumbnails in S3; broken inputs end up in the
report with their reason while the rest loads. (Resuming a killed run, and bulk import into the 2.3.5
server: test_index_load.py.)
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from tests.s3_server import s3_server
from tests.service.api_server import client, serve, settings_for, tiny_bundle
from tests.service.corpora import (
    index,
    make_cnclip,
    make_folder,
    make_lmdb,
    make_manifest,
    make_webdataset,
    picture,
    shard_rows,
)

pytest.importorskip("ray", reason="tuwen index needs the `index` extra (Ray Data)")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray", "clean_env")]


def test_every_source_kind_gives_the_services_embeddings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The actors' towers take their calls in the service's batches: small ones here, so that every
    # actor call is cut into several tower calls (and a remainder) and must still give /embed's vectors.
    monkeypatch.setenv("TUWEN_MAX_BATCH_IMAGE", "3")
    monkeypatch.setenv("TUWEN_MAX_BATCH_TEXT", "5")
    cases: list[tuple[str, Path, list[str], dict[str, bytes], dict[str, str]]] = []
    folder = tmp_path / "folder"
    images, captions = make_folder(folder, 40)
    (tmp_path / "captions.jsonl").write_text(
        "\n".join(json.dumps({"id": k, "text": t}, ensure_ascii=False) for k, t in captions.items())
    )
    # Embedding actors that decode their own batches: one per CPU (two) by default.
    extra = ["--captions", str(tmp_path / "captions.jsonl"), "--decode-in", "actors"]
    cases.append(("folder", folder, extra, images, captions))
    cn = tmp_path / "cnclip"
    # Decode tasks feeding the actors (the default); two actors reserving CPUs: they share one and leave
    # one to the tasks (reserving a CPU each used to leave none, and Ray Data waited forever).
    extra = ["--split", "valid", "--actors", "2", "--actor-cpus", "1"]
    cases.append(("cnclip", cn, extra, *make_cnclip(cn, 24)))
    cases.append(("lmdb", cn, ["--split", "test"], make_lmdb(cn, 12), {}))
    wds = tmp_path / "wds"
    cases.append(("webdataset", wds, [], *make_webdataset(wds, 24)))
    for fmt in ("jsonl", "parquet"):
        manifest = tmp_path / fmt
        images, captions = make_manifest(manifest, 16, fmt)
        cases.append((fmt, manifest / f"manifest.{fmt}", [], images, captions))

    outputs = {}
    for name, source, extra, images, captions in cases:
        out = tmp_path / f"out-{name}"
        assert index(source, out, "--shard-size", "16", *extra) == 0, name
        rows = shard_rows(out)
        expected = {("image", k) for k in images} | {("text", k) for k in captions}
        assert set(rows) == expected, name
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["read"], summary["embedded"], summary["failed"]) == (len(expected), len(expected), 0)
        outputs[name] = (rows, images, captions)

    # the service in its default batches (the variables above would reach it too)
    app = settings_for(tiny_bundle(), tmp_path / "app", max_batch_image=16, max_batch_text=64)
    with serve(app) as url, client(url) as http:
        for name, (rows, images, captions) in outputs.items():
            ids = list(images)
            for start in range(0, len(ids), 16):
                chunk = ids[start : start + 16]
                answer = http.post("/embed", files=[("images", (f"{i}.bin", images[i])) for i in chunk])
                assert answer.status_code == 200, answer.text
                got = np.array([rows[("image", i)]["vector"] for i in chunk])
                np.testing.assert_allclose(got, answer.json()["embeddings"], atol=1e-5, err_msg=name)
            texts = list(captions)
            for start in range(0, len(texts), 32):
                chunk = texts[start : start + 32]
                answer = http.post("/embed", json={"texts": [captions[t] for t in chunk]})
                got = np.array([rows[("text", t)]["vector"] for t in chunk])
                np.testing.assert_allclose(got, answer.json()["embeddings"], atol=1e-5, err_msg=name)
        # the thumbnail is the one POST /items stores for the same file (a large JPEG: reduced decode)
        rows, images, _ = outputs["folder"]
        item = next(k for k in images if k.endswith(".jpg"))
        assert (
            http.post("/items", data={"id": item}, files={"image": ("x.jpg", images[item])}).status_code
            == 200
        )
        assert http.get("/thumbnails", params={"id": item}).content == rows[("image", item)]["thumbnail"]
    wds_rows = outputs["webdataset"][0]
    some = next(iter(outputs["webdataset"][1]))
    assert json.loads(wds_rows[("image", some)]["metadata"]) == {"source": "wds", "n": int(some[5:])}
    assert json.loads(wds_rows[("text", some)]["metadata"])["image_id"] == some


def test_loaded_shards_are_searchable_with_thumbnails_in_s3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "wds"
    images, captions = make_webdataset(source, 30)
    out = tmp_path / "out"
    assert index(source, out, "--shard-size", "20") == 0
    rows = shard_rows(out)

    with s3_server("thumbs-index") as endpoint:
        env = {
            "TUWEN_MILVUS_URI": str(tmp_path / "data" / "milvus.db"),
            "TUWEN_DATA_DIR": str(tmp_path / "data"),
            "TUWEN_THUMBNAIL_S3_URI": "s3://thumbs-index/tuwen",
            "TUWEN_S3_ENDPOINT_URL": endpoint,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert main(["load", str(out), "--no-progress"]) == 0
        assert json.loads((out / "summary.json").read_text())["loaded"] == len(rows)
        assert not (tmp_path / "data" / "thumbnails").exists()  # they went to the bucket
        from service.config import Settings
        from service.indexing.load import open_store

        plan = json.loads((out / "plan.json").read_text())
        store = open_store(Settings(), plan["model"], plan["dim"])
        try:  # the exact vectors of the shards, as stored
            for key in list(images)[:10]:
                stored = store.get("image", key)
                assert stored is not None
                np.testing.assert_array_equal(
                    np.float32(stored.vector), np.float32(rows[("image", key)]["vector"])
                )
        finally:
            store.close()
        settings = settings_for(
            tiny_bundle(),
            tmp_path / "data",
            thumbnail_s3_uri="s3://thumbs-index/tuwen",
            s3_endpoint_url=endpoint,
        )
        with serve(settings) as url, client(url) as http:
            for key in list(images)[:10]:
                # the image finds itself, the caption finds itself (and names its image)
                hits = http.post(
                    "/search", files={"image": ("q.jpg", images[key])}, data={"top_k": "1"}
                ).json()
                assert hits["results"][0]["id"] == key
                hits = http.post("/search", json={"text": captions[key], "target": "text", "top_k": 1}).json()
                assert hits["results"][0]["id"] == key
                assert hits["results"][0]["metadata"]["image_id"] == key
                assert (
                    http.get("/thumbnails", params={"id": key}).content == rows[("image", key)]["thumbnail"]
                )
            gone = next(iter(images))  # deleting an item deletes its thumbnail from the bucket
            assert http.delete("/items/image", params={"id": gone}).status_code == 200
            assert http.get("/thumbnails", params={"id": gone}).status_code == 404


def huge_png() -> bytes:
    """A valid PNG header claiming 50000×50000 pixels (the pixel check refuses it before any decoding)."""
    data = bytearray(picture(0))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = (50_000).to_bytes(4, "big") * 2
    data[ihdr + 17 : ihdr + 21] = zlib.crc32(bytes(data[ihdr : ihdr + 17])).to_bytes(4, "big")
    return bytes(data)


def test_bad_inputs_are_reported_and_the_rest_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "mixed"
    good = {f"ok/{i}.png": picture(i) for i in range(20)}
    jpeg = picture(99, (200, 200), "JPEG")
    bad = {
        "broken.jpg": jpeg[: len(jpeg) // 2],
        "empty.png": b"",
        "huge.png": huge_png(),
        "text-as-image.jpg": "不是图片".encode(),
        "readme.txt": b"notes",
        "too-big.png": picture(5, (400, 400)) + b"\0" * 300_001,  # over TUWEN_MAX_UPLOAD_BYTES below
    }
    for rel, data in {**good, **bad}.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    captions = tmp_path / "captions.jsonl"
    lines = [
        {"id": "fine", "text": "一只猫"},
        {"id": "long", "text": "长" * 600},
        {"id": "meta", "text": "猫", "metadata": {"big": 2**70}},
        {"id": "fine", "text": "重复的编号"},
    ]
    captions.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    monkeypatch.setenv("TUWEN_MAX_UPLOAD_BYTES", str(300_000))
    monkeypatch.setenv("TUWEN_MILVUS_URI", str(tmp_path / "milvus.db"))
    monkeypatch.setenv("TUWEN_DATA_DIR", str(tmp_path / "data"))

    assert index(source, tmp_path / "out", "--captions", str(captions), "--load") == 1  # some items failed
    report = [json.loads(line) for line in (tmp_path / "out" / "report.jsonl").read_text().splitlines()]
    reasons = {(r["kind"], r["id"]): r["code"] for r in report}
    assert reasons == {
        ("image", "broken.jpg"): "image_unreadable",
        ("image", "empty.png"): "image_empty",
        ("image", "huge.png"): "image_too_many_pixels",
        ("image", "text-as-image.jpg"): "image_unreadable",
        ("image", "readme.txt"): "not_an_image",
        ("image", "too-big.png"): "image_too_large",
        ("text", "long"): "text_too_long",
        ("text", "meta"): "invalid_metadata",
        ("text", "fine"): "duplicate_id",
    }
    assert all(r["message"] and r["source"] for r in report)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary | {"read": 30, "embedded": 21, "failed": 9, "loaded": 21} == summary
    rows = shard_rows(tmp_path / "out")
    assert set(rows) == {("image", k) for k in good} | {("text", "fine")}
    assert (
        rows[("text", "fine")]["text"] == "一只猫"
    )  # the first of a duplicated id wins, the second is reported


def test_model_info_sizes_what_an_actor_loads() -> None:
    """``tower_bytes`` sizes the default number of decoding actors: both towers' graphs."""
    from service.config import Settings
    from service.indexing.model import model_info

    bundle = tiny_bundle()
    info = model_info(Settings(bundle=bundle))
    graphs = sorted(p.name for p in bundle.glob("*.onnx"))
    assert graphs == ["image.onnx", "text.onnx"]  # fp32 only: the largest precision of each
    assert info.tower_bytes == sum((bundle / g).stat().st_size for g in graphs) > 0
    assert (info.dim, info.image_size) == (64, 64)

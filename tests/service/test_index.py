"""`tuwen index` / `tuwen load` end to end: a real local Ray (2 CPUs), a real exported tiny bundle on ONNX
Runtime, real Milvus (Lite; the 2.3.5 server, embedded and on S3 storage), a real app over HTTP, a real
S3 server (moto's: thumbnails, and the server's data and import files for the bulk import from s3://).

Every source kind is indexed and its vectors compared with what the running service's /embed returns
for the same files; a run killed mid-way is resumed and loads each source id exactly once; broken inputs
end up in the report with their reason while the rest loads.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from service.cli import main
from tests.s3_server import object_keys, s3_server
from tests.service.api_server import client, serve, settings_for, tiny_bundle

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="tuwen index needs the `index` extra (Ray Data)")

ROOT = Path(__file__).resolve().parents[2]
RAY = ["--num-cpus", "2", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("TUWEN_")]:
        monkeypatch.delenv(name)


def picture(i: int, size: tuple[int, int] = (96, 80), fmt: str = "PNG") -> bytes:
    """A distinct little picture per i (colour, shape and position vary), PNG or JPEG."""
    rng = np.random.default_rng(i)
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2))
        box = (x, y, x + size[0] // 3, y + size[1] // 3)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(
            box, fill=tuple(int(c) for c in rng.integers(0, 255, 3))
        )
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def image_for(i: int) -> bytes:
    # every fourth a large JPEG: the service decodes those at a reduced DCT scale, so must the indexer
    return picture(i, (640, 480), "JPEG") if i % 4 == 0 else picture(i)


def index(source: Path, out: Path, *extra: str) -> int:
    return main(["index", str(source), "--bundle", str(tiny_bundle()), "--out", str(out), *RAY, *extra])


def shard_rows(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    rows = [r for p in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist()]
    keyed = {(r["kind"], r["id"]): r for r in rows}
    assert len(keyed) == len(rows), "an item was written twice"
    return keyed


# -- sources --------------------------------------------------------------------------------------------


def make_folder(root: Path, n: int) -> tuple[dict[str, bytes], dict[str, str]]:
    images = {
        f"{'nested/deeper/' if i % 3 == 0 else ''}img{i:03d}.{'jpg' if i % 4 == 0 else 'png'}": image_for(i)
        for i in range(n)
    }
    for rel, data in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    captions = {f"cap{i}": f"第{i}张图：红色的圆形和方块" for i in range(10)}
    return images, captions


def make_cnclip(root: Path, n: int) -> tuple[dict[str, bytes], dict[str, str]]:
    root.mkdir(parents=True)
    images = {str(1000 + i): image_for(100 + i) for i in range(n)}
    (root / "valid_imgs.tsv").write_text(
        "".join(f"{k}\t{base64.urlsafe_b64encode(v).decode()}\n" for k, v in images.items())
    )
    texts = {str(i): f"一张图片{i}" for i in range(n // 2)}
    lines = [
        json.dumps({"text_id": int(k), "text": t, "image_ids": [1000 + int(k)]}, ensure_ascii=False)
        for k, t in texts.items()
    ]
    (root / "valid_texts.jsonl").write_text("\n".join(lines) + "\n")
    return images, texts


def make_lmdb(root: Path, n: int) -> dict[str, bytes]:
    import lmdb

    images = {str(2000 + i): image_for(200 + i) for i in range(n)}
    (root / "lmdb" / "test").mkdir(parents=True)
    with (
        lmdb.open(str(root / "lmdb" / "test" / "imgs"), map_size=1 << 26) as env,
        env.begin(write=True) as txn,
    ):
        for key, data in images.items():
            txn.put(key.encode(), base64.urlsafe_b64encode(data))
        txn.put(b"num_images", str(n).encode())
    return images


def make_webdataset(root: Path, n: int) -> tuple[dict[str, bytes], dict[str, str]]:
    root.mkdir(parents=True)
    images, captions = {}, {}
    for shard in range(2):
        with tarfile.open(root / f"{shard:05d}.tar", "w") as tar:
            for j in range(n // 2):
                key = f"{shard:05d}{j:04d}"
                images[key] = image_for(300 + len(images))
                captions[key] = f"样本{key}的说明"
                members = {
                    f"{key}.jpg": images[key],
                    f"{key}.json": json.dumps({"source": "wds", "n": j}).encode(),
                    f"{key}.txt": captions[key].encode(),
                }
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return images, captions


def make_manifest(root: Path, n: int, fmt: str) -> tuple[dict[str, bytes], dict[str, str]]:
    (root / "files").mkdir(parents=True)
    images, captions, rows = {}, {}, []
    for i in range(n):
        item = f"m/{i}"
        images[item] = image_for(400 + i)
        (root / "files" / f"{i}.png").write_bytes(images[item])
        captions[item] = f"清单{i}"
        rows.append({"id": item, "image": f"files/{i}.png", "caption": captions[item], "metadata": {"i": i}})
    if fmt == "parquet":
        import pyarrow as pa

        for r in rows:
            r["metadata"] = json.dumps(r["metadata"])
        pq.write_table(pa.Table.from_pylist(rows), root / "manifest.parquet")
    else:
        (root / "manifest.jsonl").write_text(
            "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
        )
    return images, captions


# -- tests ----------------------------------------------------------------------------------------------


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
    # Two embedding actors on a 2-CPU local Ray, sharing the cores with decoding (the default).
    extra = ["--captions", str(tmp_path / "captions.jsonl"), "--actors", "2"]
    cases.append(("folder", folder, extra, images, captions))
    cn = tmp_path / "cnclip"
    # Two actors reserving CPUs: they share one and leave one to decoding (reserving a CPU each used to
    # leave none, and Ray Data waited forever).
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


def test_killed_mid_run_resumes_without_losing_or_duplicating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "photos"
    images, _ = make_folder(source, 160)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "index",
        str(source),
        "--bundle",
        str(tiny_bundle()),
        "--out",
        str(out),
        "--shard-size",
        "10",
        *RAY,
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 180  # Ray starts slowly on a busy machine
        while not (out / "_done.json").exists() or len(json.loads((out / "_done.json").read_text())) < 3:
            assert process.poll() is None, "the indexer exited before it could be killed"
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the indexer and the local Ray it started
        process.wait()
    done = len(json.loads((out / "_done.json").read_text()))
    assert 3 <= done < 16, f"killed too late to test a resume ({done} of 16 shards done)"

    # The embedded local server (the default store): the partial index goes in by Milvus import tasks
    # (empty collections), the rest by upserts after the resumed run; the import's ids are not loaded twice.
    monkeypatch.delenv("TUWEN_MILVUS_URI", raising=False)
    monkeypatch.setenv("TUWEN_DATA_DIR", str(tmp_path / "data"))
    dim = json.loads((out / "plan.json").read_text())["dim"]
    rows_per_task = done * 10 // 2 + 1  # two import tasks (each costs seconds of server time)
    monkeypatch.setattr("service.indexing.load.IMPORT_FILE_BYTES", rows_per_task * (4 * dim + 256))
    monkeypatch.setattr("service.indexing.load.IMPORT_MIN_ROWS", 1)  # auto imports even these few
    assert main(["load", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["load_method"], summary["loaded"]) == ("import", done * 10)
    assert len(list((out / "_import").rglob("*.parquet"))) == 2
    assert index(source, out, "--shard-size", "10", "--load") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_shards"] == done and summary["read"] == summary["loaded"] == len(images)
    assert summary["load_method"] == "upsert"
    assert {"decode", "embed", "write", "index_wall", "load"} <= set(summary["seconds"])
    assert all(summary["seconds"][k] > 0 for k in ("decode", "embed", "index_wall", "load"))  # accounted

    from pymilvus import MilvusClient

    from service.store.local_server import LocalMilvusServer

    server = LocalMilvusServer(tmp_path / "data" / "milvus").start()
    milvus = MilvusClient(server.uri)
    try:
        (name,) = [n for n in milvus.list_collections() if n.endswith("_image")]
        milvus.load_collection(name)
        pks = [
            r["pk"]
            for r in milvus.query(
                name, filter='pk != ""', output_fields=["pk"], limit=10_000, consistency_level="Strong"
            )
        ]
    finally:
        milvus.close()
        server.stop()
    assert sorted(pks) == sorted(f"default/{k}" for k in images)  # each source id, exactly once
    assert len(shard_rows(out)) == len(images)


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


def test_bulk_import_from_s3_then_upserts_on_the_real_milvus_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Compose/Helm set-up: a Milvus server keeping its data in an S3 bucket (moto's server standing
    in for MinIO), the import files uploaded next to it and read by Milvus's own S3 client."""
    from pymilvus import MilvusClient

    from tests.milvus_server import milvus_server

    source = tmp_path / "cn"
    images, texts = make_cnclip(source, 20)
    out = tmp_path / "out"
    assert index(source, out, "--split", "valid", "--shard-size", "8") == 0
    rows = shard_rows(out)
    expected = {"image": sorted(f"acme/{k}" for k in images), "text": sorted(f"acme/{k}" for k in texts)}

    def stored(uri: str) -> dict[str, list[str]]:
        milvus = MilvusClient(uri)
        try:
            found = {}
            for name in milvus.list_collections():
                got = milvus.query(
                    name,
                    filter='tenant == "acme"',
                    output_fields=["pk", "vector"],
                    limit=1000,
                    consistency_level="Strong",
                )
                kind = name.rsplit("_", 1)[1]
                for r in got:  # the exact vectors of the shards
                    assert (
                        np.float32(r["vector"]).tolist() == rows[(kind, r["pk"].split("/", 1)[1])]["vector"]
                    )
                found[kind] = sorted(r["pk"] for r in got)
            return found
        finally:
            milvus.close()

    with (
        s3_server("milvus-bucket") as endpoint,
        milvus_server(tmp_path / "milvus", endpoint, "milvus-bucket") as server,
    ):
        monkeypatch.setenv("TUWEN_MILVUS_URI", server.uri)
        monkeypatch.setenv("TUWEN_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("TUWEN_S3_ENDPOINT_URL", endpoint)
        # Milvus import tasks, reading the rewritten shards from its own bucket
        load = ["load", str(out), "--tenant", "acme", "--no-progress"]
        to_s3 = ["--method", "import", "--import-to", "s3://milvus-bucket/tuwen-import"]
        assert main([*load, *to_s3]) == 0
        files = object_keys(endpoint, "milvus-bucket", "tuwen-import/")
        # named by kind and run, never by the tenant (user input: a tenant may be "..")
        assert files and {f.split("/")[1] for f in files} == {"image", "text"}
        assert all(f.endswith(".parquet") for f in files)
        assert object_keys(endpoint, "milvus-bucket", "files/insert_log/")  # Milvus's data is there too
        assert json.loads((out / "summary.json").read_text())["loaded"] == len(rows)
        assert stored(server.uri) == expected
        assert main([*load, *to_s3]) == 2  # would duplicate: refused
        assert "would duplicate ids" in capsys.readouterr().err
        assert main(load) == 0  # auto: the collections are not empty, and the import recorded its shards
        assert f"loaded {len(rows)} by upsert" in capsys.readouterr().out
        for _ in range(2):  # upserts over imported rows, twice: still each id once
            next(out.glob("_loaded-*.json")).unlink()
            assert main(load) == 0
        assert stored(server.uri) == expected

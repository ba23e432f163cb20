"""`tuwen index` without Ray: source plans (ids, locators, the service's rules), the resumable output
directory, and the S3 thumbnail store against a real S3-compatible server (moto's, in a thread)."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.commands.errors import CommandError
from service.config import Settings
from service.indexing.shards import OutputDir
from service.indexing.sources import Row, plan, read_bytes
from service.thumbnails import S3Backend, ThumbnailStore, thumbnail_store
from tests.s3_server import object_keys, s3_server
from tests.service.api_server import image_bytes


def settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]


def errors(rows: list[Row]) -> dict[str, str]:
    return {row.id: row.error.split(":")[0] for row in rows if row.error}


def test_a_folder_plan_keeps_relative_ids_and_reports_what_it_skips(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.png").write_bytes(image_bytes((1, 2, 3)))
    (tmp_path / "top.JPG").write_bytes(b"whatever")
    (tmp_path / "notes.md").write_text("hi")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.png").write_bytes(b"")
    rows = plan(tmp_path, "auto", None, None, settings())
    assert [(r.kind, r.id) for r in rows] == [
        ("image", "a/b/x.png"),
        ("image", "notes.md"),
        ("image", "top.JPG"),
    ]
    assert errors(rows) == {"notes.md": "not_an_image"}
    assert read_bytes(rows[0].ref) == (tmp_path / "a" / "b" / "x.png").read_bytes()


def test_a_cn_clip_split_reads_each_image_by_offset_and_its_texts(tmp_path: Path) -> None:
    images = {"7": image_bytes((7, 7, 7)), "12": image_bytes((12, 0, 0))}
    lines = [f"{k}\t{base64.urlsafe_b64encode(v).decode().rstrip('=')}" for k, v in images.items()]
    (tmp_path / "valid_imgs.tsv").write_text("\n".join([lines[0], "", "broken-line", lines[1]]) + "\n")
    texts = [
        {"text_id": 1, "text": "猫", "image_ids": [7]},
        {"text_id": 2, "text": "长" * 513, "image_ids": []},
    ]
    (tmp_path / "valid_texts.jsonl").write_text("\n".join(json.dumps(t, ensure_ascii=False) for t in texts))
    rows = plan(tmp_path, "auto", "valid", None, settings())
    by_id = {(r.kind, r.id): r for r in rows}
    assert read_bytes(by_id[("image", "7")].ref) == images["7"]
    assert read_bytes(by_id[("image", "12")].ref) == images["12"]
    assert json.loads(by_id[("text", "1")].metadata) == {"image_ids": [7]}
    assert errors(rows) == {"line-3": "invalid_record", "2": "text_too_long"}
    with pytest.raises(CommandError, match="--split"):
        plan(tmp_path, "cnclip", None, None, settings())


def test_a_webdataset_sample_is_an_image_and_a_caption_with_one_id(tmp_path: Path) -> None:
    shard = tmp_path / "000.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in {
            "dir/k1.jpg": image_bytes((1, 1, 1), fmt="JPEG"),
            "dir/k1.json": json.dumps({"caption": "一只狗", "w": 64}).encode(),
            "dir/k2.png": image_bytes((2, 2, 2)),
            "dir/k2.txt": "两只猫".encode(),
            "dir/k3.txt": "只有文字".encode(),
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = plan(shard, "auto", None, None, settings())
    assert [(r.kind, r.id) for r in rows] == [
        ("image", "dir/k1"),
        ("text", "dir/k1"),
        ("image", "dir/k2"),
        ("text", "dir/k2"),
        ("text", "dir/k3"),
    ]
    assert rows[1].text == "一只狗" and json.loads(rows[1].metadata) == {"w": 64, "image_id": "dir/k1"}
    assert json.loads(rows[0].metadata) == {"w": 64}
    assert rows[3].text == "两只猫"
    assert read_bytes(rows[2].ref) == image_bytes((2, 2, 2))


def test_a_manifest_checks_ids_metadata_and_duplicates_as_the_api_does(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(image_bytes((5, 5, 5)))
    records = [
        {"id": "a", "image": "x.png", "caption": "图", "metadata": {"k": 1}},
        {"id": "a", "image": "x.png"},
        {"id": "", "image": "x.png"},
        {"id": "big", "image": "x.png", "metadata": {"v": "x" * 5000}},
        {"id": "nan", "text": "t", "metadata": {"v": float("nan")}},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in records))
    rows = plan(manifest, "auto", None, None, settings())
    assert [(r.kind, r.id, r.error.split(":")[0]) for r in rows] == [
        ("image", "a", ""),
        ("image", "a", "duplicate_id"),
        ("image", "", "invalid_id"),
        ("image", "big", "metadata_too_large"),
        ("text", "a", ""),
        ("text", "nan", "invalid_metadata"),
    ]


def test_the_output_refuses_to_mix_two_plans(tmp_path: Path) -> None:
    rows = [Row("image", str(i), "s") for i in range(5)]
    out = OutputDir(tmp_path / "out")
    assert out.start(rows, 2, {"source": "a", "model": "m", "dim": 4}) == {}
    assert out.plan()["shards"] == 3
    assert out.start(rows, 2, {"source": "a", "model": "m", "dim": 4}) == {}  # the same plan resumes
    with pytest.raises(CommandError, match=r"different plan.*shard_size"):
        out.start(rows, 3, {"source": "a", "model": "m", "dim": 4})
    with pytest.raises(CommandError, match="plan_sha256"):
        out.start([*rows[:4], Row("image", "other", "s")], 2, {"source": "a", "model": "m", "dim": 4})


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server("thumbs-unit") as endpoint:
        yield endpoint


def test_thumbnails_in_an_s3_bucket(s3_endpoint: str) -> None:
    store = thumbnail_store(
        settings(thumbnail_s3_uri="s3://thumbs-unit/pre/fix", s3_endpoint_url=s3_endpoint)
    )
    assert isinstance(store.backend, S3Backend)
    assert store.get("t", "a/b") is None
    store.put("t", "a/b", b"jpeg")
    store.put("u", "a/b", b"other tenant")
    assert (store.get("t", "a/b"), store.get("u", "a/b")) == (b"jpeg", b"other tenant")
    keys = object_keys(s3_endpoint, "thumbs-unit")
    assert all(k.startswith("pre/fix/") and k.endswith(".jpg") and "a/b" not in k for k in keys)
    store.delete("t", "a/b")
    assert store.get("t", "a/b") is None and store.get("u", "a/b") == b"other tenant"


def test_thumbnails_default_to_the_local_directory_and_bad_uris_fail_at_start(tmp_path: Path) -> None:
    store = thumbnail_store(settings(data_dir=tmp_path))
    assert type(store) is ThumbnailStore and not isinstance(store.backend, S3Backend)
    store.put("t", "x", b"1")
    assert store.path("t", "x").read_bytes() == b"1"
    for bad in ("thumbs/prefix", "s3://", "s3:///x"):
        with pytest.raises(ValueError, match="TUWEN_THUMBNAIL_S3_URI"):
            settings(thumbnail_s3_uri=bad)


@pytest.mark.parametrize(
    ("mode", "size", "expected"),
    [
        ("RGB", (40, 30), (40, 30)),
        ("RGBA", (40, 30), (40, 30)),
        ("RGB", (300, 150), (64, 32)),
        ("L", (20, 90), (14, 64)),
    ],
)
def test_thumbnails_shrink_to_fit_and_leave_the_image_alone(
    mode: str, size: tuple[int, int], expected: tuple[int, int]
) -> None:
    from PIL import Image

    from service.thumbnails import render_thumbnail

    image = Image.new(mode, size, 200)
    before = image.tobytes()
    thumb = Image.open(io.BytesIO(render_thumbnail(image, 64)))
    assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", expected)
    assert (image.mode, image.size, image.tobytes()) == (mode, size, before)

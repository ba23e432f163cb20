"""Corpora for the `tuwen index` tests (every source kind, written to disk) and the helpers that run the
indexer on them: a local Ray of 2 CPUs and the tests' tiny bundle."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from service.cli import main
from tests.service.api_server import tiny_bundle

RAY = ["--num-cpus", "2", "--no-progress"]


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

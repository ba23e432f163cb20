"""Dataset readers: Chinese-CLIP TSV/JSONL, the LMDB built from them, plain JSONL; bad records reported."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from training.data.build_lmdb import main as build_lmdb
from training.data.cnclip import LmdbPairs, TsvImages, TsvPairs, read_texts
from training.data.jsonl import JsonlPairs
from training.data.records import DataError
from training.data.sampler import ShardedBatchSampler


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = {1001: png((255, 0, 0)), 1002: png((0, 255, 0)), 1003: png((0, 0, 255))}
TEXTS = [
    {"text_id": 1, "text": "红色的方块", "image_ids": [1001]},
    {"text_id": 2, "text": "绿色或蓝色", "image_ids": [1002, 1003]},
]


def write_cnclip(root: Path, split: str = "train", images=IMAGES, texts=TEXTS, raw_lines=()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{split}_imgs.tsv", "w", encoding="utf-8") as f:
        for image_id, data in images.items():
            f.write(f"{image_id}\t{base64.b64encode(data).decode()}\n")
        for line in raw_lines:
            f.write(line + "\n")
    with open(root / f"{split}_texts.jsonl", "w", encoding="utf-8") as f:
        for record in texts:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return root


EXPECTED_PAIRS = [("红色的方块", IMAGES[1001]), ("绿色或蓝色", IMAGES[1002]), ("绿色或蓝色", IMAGES[1003])]


def test_tsv_round_trip(tmp_path):
    pairs = TsvPairs(write_cnclip(tmp_path), "train")
    assert [pairs.pair(i)[:2] for i in range(len(pairs))] == EXPECTED_PAIRS
    images = TsvImages(tmp_path / "train_imgs.tsv")
    assert list(images.ids) == [1001, 1002, 1003]
    assert images.bytes_of(1002) == (IMAGES[1002], f"{tmp_path / 'train_imgs.tsv'}:2")
    _, records = read_texts(tmp_path / "train_texts.jsonl")
    assert [(r.text_id, r.image_ids) for r in records] == [(1, [1001]), (2, [1002, 1003])]


def test_lmdb_round_trip_and_the_official_layout(tmp_path):
    write_cnclip(tmp_path)
    build_lmdb(["--data-dir", str(tmp_path), "--splits", "train"])
    pairs = LmdbPairs(tmp_path / "lmdb" / "train")
    assert [pairs.pair(i)[:2] for i in range(len(pairs))] == EXPECTED_PAIRS
    pairs.close()
    import lmdb

    with lmdb.open(str(tmp_path / "lmdb/train/imgs"), readonly=True, lock=False) as env, env.begin() as txn:
        assert txn.get(b"num_images") == b"3"
        assert base64.b64decode(txn.get(b"1003")) == IMAGES[1003]


def test_plain_jsonl_round_trip(tmp_path):
    (tmp_path / "img").mkdir()
    for image_id, data in IMAGES.items():
        (tmp_path / "img" / f"{image_id}.png").write_bytes(data)
    rows = [{"image": f"img/{i}.png", "text": f"图片{i}"} for i in IMAGES]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    pairs = JsonlPairs(tmp_path / "train.jsonl")
    assert [pairs.pair(i)[:2] for i in range(len(pairs))] == [(f"图片{i}", d) for i, d in IMAGES.items()]
    (tmp_path / "img" / "1002.png").unlink()
    with pytest.raises(DataError, match=r"train\.jsonl:2: cannot read image"):
        pairs.pair(1)


def test_a_missing_image_id_is_reported_with_its_line(tmp_path, caplog):
    texts = [*TEXTS, {"text_id": 3, "text": "不存在", "image_ids": [999]}]
    write_cnclip(tmp_path, texts=texts)
    with pytest.raises(DataError, match=r"train_texts\.jsonl:3: text 3 refers to image id 999"):
        TsvPairs(tmp_path, "train", on_error="fail")
    with caplog.at_level(logging.WARNING):
        pairs = TsvPairs(tmp_path, "train", on_error="skip")
    assert len(pairs) == 3
    assert "train_texts.jsonl:3" in caplog.text and "999" in caplog.text


def test_broken_base64_is_reported_with_its_line(tmp_path):
    write_cnclip(tmp_path, raw_lines=["1004\tnot*base64!"])
    images = TsvImages(tmp_path / "train_imgs.tsv")
    with pytest.raises(DataError, match=r"train_imgs\.tsv:4: the image is not valid base64"):
        images.bytes_of(1004)


def test_the_sampler_shards_one_global_batch_across_ranks():
    whole = list(ShardedBatchSampler(20, 6, seed=3))
    shards = [list(ShardedBatchSampler(20, 3, rank=r, world_size=2, seed=3)) for r in range(2)]
    assert len(whole) == 3
    for b, batch in enumerate(whole):
        assert shards[0][b] + shards[1][b] == batch
    assert list(ShardedBatchSampler(20, 6, seed=3, start_batch=1)) == whole[1:]
    assert list(ShardedBatchSampler(20, 6, seed=3, epoch=1)) != whole


def test_training_batches_from_lmdb_through_worker_processes(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from service.preprocessing.image import ImageSpec
    from service.preprocessing.text import ChineseTokenizer
    from training.data.dataset import Collator, ImageTextDataset, open_pairs

    write_cnclip(tmp_path)
    build_lmdb(["--data-dir", str(tmp_path), "--splits", "train"])
    dataset = ImageTextDataset(open_pairs("cnclip-lmdb", tmp_path, "train", "fail"), ImageSpec(size=16))
    loader = DataLoader(
        dataset, batch_size=3, num_workers=2, collate_fn=Collator(ChineseTokenizer.from_vocab())
    )
    ((pixels, ids),) = list(loader)
    assert pixels.shape == (3, 3, 16, 16) and pixels.dtype == torch.float32
    assert ids.shape == (3, 52) and ids[0, 0] == 101
    assert pixels[0, 0].mean() > pixels[0, 2].mean()  # the red image is red


def test_a_broken_image_is_skipped_with_a_warning_or_fails(tmp_path, caplog):
    from service.preprocessing.image import ImageSpec
    from training.data.dataset import ImageTextDataset, open_pairs

    images = {**IMAGES, 1002: b"not an image at all"}
    write_cnclip(tmp_path, images=images)
    failing = ImageTextDataset(
        open_pairs("cnclip-tsv", tmp_path, "train", "fail"), ImageSpec(size=16), "fail"
    )
    with pytest.raises(DataError, match=r"train_imgs\.tsv:2"):
        failing[1]
    skipping = ImageTextDataset(
        open_pairs("cnclip-tsv", tmp_path, "train", "skip"), ImageSpec(size=16), "skip"
    )
    with caplog.at_level(logging.WARNING):
        pixels, text = skipping[1]  # replaced by the next readable pair, so batches keep their size
    assert text == "绿色或蓝色" and pixels[2].mean() > pixels[0].mean()  # 1003 is blue
    assert "train_imgs.tsv:2" in caplog.text

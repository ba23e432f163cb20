"""The synthetic Chinese image–caption dataset: deterministic, in the Chinese-CLIP format, captions true to the scene."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.cnclip import TsvPairs
from training.data.synthetic import COLORS, POSITIONS, SPLITS, main, write_synthetic_dataset


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (
            f"-> {p.readlink()}" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
        )
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_images(path: Path) -> dict[int, Image.Image]:
    images = {}
    for line in path.read_text(encoding="ascii").splitlines():
        image_id, payload = line.split("\t")
        images[int(image_id)] = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
    return images


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(out, n_train=300, n_valid=60, n_test=60, seed=3)
    return out


def test_same_seed_gives_byte_identical_files(dataset: Path, tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "again", n_train=300, n_valid=60, n_test=60, seed=3)
    write_synthetic_dataset(tmp_path / "other", n_train=300, n_valid=60, n_test=60, seed=4)
    first = tree_digest(dataset)
    assert len(first) == 3 * 5
    assert tree_digest(tmp_path / "again") == first
    assert tree_digest(tmp_path / "other")["train_imgs.tsv"] != first["train_imgs.tsv"]


def test_layout_ids_and_counts(dataset: Path) -> None:
    seen_images: set[int] = set()
    seen_texts: set[int] = set()
    for split, n in zip(SPLITS, (300, 60, 60), strict=True):
        images = read_images(dataset / f"{split}_imgs.tsv")
        texts = read_jsonl(dataset / f"{split}_texts.jsonl")
        english = read_jsonl(dataset / "en" / f"{split}_texts.jsonl")
        assert len(images) == n and len(texts) == 2 * n and len(english) == n
        assert all(image.format == "PNG" and image.size == (64, 64) for image in images.values())
        assert (dataset / "en" / f"{split}_imgs.tsv").resolve() == (dataset / f"{split}_imgs.tsv").resolve()
        for record in texts + english:
            assert set(record) == {"text_id", "text", "image_ids"} and record["image_ids"]
            assert set(record["image_ids"]) <= set(images)
        assert not seen_images & set(images) and not seen_texts & {t["text_id"] for t in texts}
        seen_images |= set(images)
        seen_texts |= {t["text_id"] for t in texts}
        if split == "train":  # one image per caption in train; every matching image in valid/test
            assert all(len(t["image_ids"]) == 1 for t in texts)
    assert any(len(t["image_ids"]) > 1 for t in read_jsonl(dataset / "test_texts.jsonl"))


def test_captions_describe_the_scene(dataset: Path) -> None:
    scenes = {s["image_id"]: s for s in read_jsonl(dataset / "train_scenes.jsonl")}
    texts = read_jsonl(dataset / "train_texts.jsonl")
    phrasings = set()
    for record in texts:
        scene = scenes[record["image_ids"][0]]
        for word in (scene["shape"], scene["color"], scene["count"], scene["size"], scene["position"]):
            assert word in record["text"], (record, scene)
        phrasings.add(record["text"].replace(scene["shape"], "S").replace(scene["color"], "C"))
    for record in read_jsonl(dataset / "en" / "train_texts.jsonl"):
        scene = scenes[record["image_ids"][0]]
        assert (
            COLORS[scene["color"]][0] in record["text"] and POSITIONS[scene["position"]][1] in record["text"]
        )
    assert len({t["text"] for t in texts}) > 100 and len(phrasings) > 20


def test_pixels_show_the_colour_where_the_caption_says(dataset: Path) -> None:
    images = read_images(dataset / "valid_imgs.tsv")
    for scene in read_jsonl(dataset / "valid_scenes.jsonl"):
        pixels = np.asarray(images[scene["image_id"]].convert("RGB")).astype(int)
        target = np.array(COLORS[scene["color"]][1])
        ys, xs = np.nonzero(np.abs(pixels - target).max(axis=2) <= 20)  # pixels of the shapes' colour
        assert len(xs) > 10, scene
        (fx, fy), _ = POSITIONS[scene["position"]]
        assert abs(xs.mean() / 64 - fx) < 0.1 and abs(ys.mean() / 64 - fy) < 0.1, scene


def test_readable_by_the_training_reader(dataset: Path) -> None:
    pairs = TsvPairs(dataset, "train")
    assert len(pairs) == 600
    text, image, _ = pairs.pair(0)
    assert text and Image.open(io.BytesIO(image)).size == (64, 64)
    assert len(TsvPairs(dataset / "en", "test")) > 60  # captions list every matching test image


def test_command_line(tmp_path: Path, capsys) -> None:
    main(["--out", str(tmp_path), "--train", "5", "--valid", "1", "--test", "1", "--image-size", "32"])
    assert "train: 5 images" in capsys.readouterr().out
    assert read_images(tmp_path / "test_imgs.tsv")[6].size == (32, 32)
    with pytest.raises(ValueError, match="image_size"):
        write_synthetic_dataset(tmp_path / "x", 1, 1, 1, image_size=8)

"""``embed_with_checkpoint`` and ``tuwen embed --checkpoint``: the service's preprocessing + our model equal
the official tokenizer, transform and model end to end."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from service.cli import main as tuwen
from tests.peers import import_cn_clip, official_model, random_model
from training.checkpoints import CheckpointError, save_checkpoint
from training.embedding import EmbedResult, embed_with_checkpoint
from training.models import CLIP

TEXTS = ["一只在草地上奔跑的小狗", "Red 连衣裙 “高级感”", "很长的描述" * 20]


@pytest.fixture(scope="module")
def model() -> CLIP:
    return random_model("tiny-vit", seed=11)


@pytest.fixture(scope="module")
def checkpoint(model: CLIP, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model, name="embed-test")


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root, rng = tmp_path_factory.mktemp("images"), np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(97, 61), (40, 300)]):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _as_array(result: EmbedResult) -> np.ndarray:
    return np.asarray(result.embeddings, dtype=np.float32)


def test_texts_equal_the_official_pipeline(model: CLIP, checkpoint: Path) -> None:
    result = embed_with_checkpoint(checkpoint, "tiny-vit", texts=TEXTS)
    assert (result.model, result.dim) == ("tiny-vit", 64)
    cn_clip = import_cn_clip()
    official = official_model(model.config, model.state_dict())
    # official training/evaluation lower-cases and straightens curly quotes before tokenize()
    ids = cn_clip.tokenize([t.lower().replace("“", '"').replace("”", '"') for t in TEXTS])
    with torch.no_grad():
        expected = F.normalize(official.encode_text(ids), dim=-1).numpy()
    np.testing.assert_allclose(_as_array(result), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(_as_array(result), axis=1), 1.0, atol=1e-6)


def test_images_equal_the_official_pipeline(model: CLIP, checkpoint: Path, image_files: list[Path]) -> None:
    result = embed_with_checkpoint(checkpoint, "tiny-vit", images=image_files)
    import_cn_clip()
    from cn_clip.clip.utils import image_transform

    official = official_model(model.config, model.state_dict())
    transform = image_transform(model.config.image_resolution)
    pixels = torch.stack([transform(Image.open(path)) for path in image_files])
    with torch.no_grad():
        expected = F.normalize(official.encode_image(pixels), dim=-1).numpy()
    np.testing.assert_allclose(_as_array(result), expected, atol=1e-5, rtol=0)


def test_image_bytes_and_detected_arch(checkpoint: Path, image_files: list[Path]) -> None:
    from_paths = embed_with_checkpoint(checkpoint, "tiny-vit", images=image_files)
    from_bytes = embed_with_checkpoint(checkpoint, None, images=[p.read_bytes() for p in image_files])
    np.testing.assert_array_equal(_as_array(from_bytes), _as_array(from_paths))


def test_needs_exactly_one_kind_of_input(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="either texts or images"):
        embed_with_checkpoint(checkpoint, "tiny-vit")


def test_cli_prints_json(checkpoint: Path) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        status = tuwen(["embed", "--checkpoint", str(checkpoint), "--arch", "tiny-vit", "--text", *TEXTS[:2]])
    assert status == 0
    printed = json.loads(out.getvalue())
    assert (printed["model"], printed["dim"]) == ("tiny-vit", 64)
    np.testing.assert_allclose(
        printed["embeddings"],
        embed_with_checkpoint(checkpoint, "tiny-vit", texts=TEXTS[:2]).embeddings,
        atol=1e-7,
    )


def test_wrong_arch_fails_with_the_checkpoint_error(checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="It is a tiny-vit checkpoint"):
        embed_with_checkpoint(checkpoint, "tiny-rn", texts=["你好"])

"""Parity: the same random weights in ours, the official ``cn_clip`` and ``transformers.ChineseCLIPModel``
give the same image and text features (fp32, CPU). Hugging Face has no ResNet, so RN50 is compared
with the official package only."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from service.preprocessing.text import ChineseTokenizer
from tests.peers import hf_model, official_model, random_model
from training.checkpoints import to_hf_state_dict
from training.models import load_model_config

TOLERANCE = 1e-5
TEXTS = [
    "一只在草地上奔跑的小狗",
    "北京故宫的雪景, 2024年1月",
    "Red 连衣裙 “高级感” 托特包斜挎",
    "很长的描述" * 20,  # longer than the context: truncated to 52 tokens
]


@dataclass
class Features:
    """Raw (unnormalised) features of the same inputs from each implementation."""

    ours_image: torch.Tensor
    ours_text: torch.Tensor
    official_image: torch.Tensor
    official_text: torch.Tensor
    hf_image: torch.Tensor | None
    hf_text: torch.Tensor | None


@torch.no_grad()
def _features(name: str) -> Features:
    config = load_model_config(name)
    ours = random_model(name, seed=1)
    ids = torch.from_numpy(ChineseTokenizer.from_vocab().tokenize(TEXTS, normalize=True))
    r = config.image_resolution
    pixels = torch.randn(2, 3, r, r, generator=torch.Generator().manual_seed(2))
    ours_image, ours_text = ours.encode_image(pixels), ours.encode_text(ids)
    official = official_model(config, ours.state_dict())
    official_image, official_text = official.encode_image(pixels), official.encode_text(ids)
    del official
    hf_image = hf_text = None
    if config.vision.type == "vit":
        hf = hf_model(config, to_hf_state_dict(ours.state_dict()))
        hf_image = _tensor(hf.get_image_features(pixel_values=pixels))
        # Hugging Face only matches with the padding mask passed explicitly
        hf_text = _tensor(hf.get_text_features(input_ids=ids, attention_mask=(ids != 0).long()))
    return Features(ours_image, ours_text, official_image, official_text, hf_image, hf_text)


def _tensor(output: object) -> torch.Tensor:  # transformers 5 returns a model output, 4.x a tensor
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


@pytest.fixture(
    scope="module",
    params=[
        "tiny-vit",
        "tiny-rn",
        pytest.param("ViT-B-16", marks=pytest.mark.slow),
        pytest.param("RN50", marks=pytest.mark.slow),
    ],
)
def features(request: pytest.FixtureRequest) -> Features:
    return _features(request.param)


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Within 1e-5 once L2-normalised (what the service uses); raw features within 1e-5 relative."""
    normalised = (F.normalize(ours, dim=-1) - F.normalize(theirs, dim=-1)).abs().max().item()
    assert normalised <= TOLERANCE, f"normalised features differ by {normalised:.3g}"
    torch.testing.assert_close(ours, theirs, rtol=TOLERANCE, atol=TOLERANCE)


def test_image_features_equal_official(features: Features) -> None:
    _assert_close(features.ours_image, features.official_image)


def test_text_features_equal_official(features: Features) -> None:
    _assert_close(features.ours_text, features.official_text)


def test_image_features_equal_huggingface(features: Features) -> None:
    if features.hf_image is None:
        pytest.skip("Hugging Face ChineseCLIPModel has no ResNet image tower")
    _assert_close(features.ours_image, features.hf_image)


def test_text_features_equal_huggingface(features: Features) -> None:
    if features.hf_text is None:
        pytest.skip("Hugging Face ChineseCLIPModel has no ResNet image tower")
    _assert_close(features.ours_text, features.hf_text)


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
@torch.no_grad()
def test_forward_equals_official_similarity(name: str) -> None:
    ours = random_model(name, seed=3)
    official = official_model(ours.config, ours.state_dict())
    r = ours.config.image_resolution
    pixels = torch.randn(2, 3, r, r)
    ids = torch.from_numpy(ChineseTokenizer.from_vocab().tokenize(TEXTS))
    image_features, text_features, scale = ours(pixels, ids)
    theirs_image, theirs_text, theirs_scale = official(pixels, ids)
    torch.testing.assert_close(
        scale * image_features @ text_features.T, theirs_scale * theirs_image @ theirs_text.T
    )

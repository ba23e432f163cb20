"""Initialising towers for training: an OpenAI-CLIP image tower and a Hugging Face BERT text tower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.peers import random_model
from training.checkpoints import CheckpointError, load_hf_bert, load_openai_visual
from training.models import CLIP, build_model


@pytest.fixture
def fresh() -> CLIP:
    torch.manual_seed(0)
    return build_model("tiny-vit")


@pytest.fixture(scope="module")
def donor() -> CLIP:
    return random_model("tiny-vit", seed=9)


def _assert_tower_equal(ours: nn.Module, theirs: nn.Module) -> None:
    expected = theirs.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_openai_visual_from_a_state_dict_ignores_the_text_tower(
    fresh: CLIP, donor: CLIP, tmp_path: Path
) -> None:
    state = {k: v for k, v in donor.state_dict().items() if k.startswith("visual.")}
    # an OpenAI CLIP file also holds its own text transformer, which must not be touched or required
    state |= {"token_embedding.weight": torch.zeros(49408, 8), "logit_scale": torch.tensor(1.0)}
    torch.save(state, tmp_path / "ViT-B-16.pt")
    text_before = {k: v.clone() for k, v in fresh.bert.state_dict().items()}
    provenance = load_openai_visual(fresh, tmp_path / "ViT-B-16.pt")
    _assert_tower_equal(fresh.visual, donor.visual)
    _assert_tower_equal(fresh.bert, _Holder(text_before))
    assert provenance["format"] == "openai-clip-visual" and len(provenance["sha256"]) == 64


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, OpenAI's files are not
def test_openai_visual_from_a_torchscript_archive(fresh: CLIP, donor: CLIP, tmp_path: Path) -> None:
    # OpenAI's released files are TorchScript archives whose state dict has `visual.*` keys
    wrapper = _VisualOnly(donor.visual)
    torch.jit.trace(wrapper, torch.zeros(1, 3, 64, 64)).save(str(tmp_path / "openai.pt"))
    load_openai_visual(fresh, tmp_path / "openai.pt")
    _assert_tower_equal(fresh.visual, donor.visual)


def test_openai_visual_of_another_size_names_the_mismatch(fresh: CLIP, tmp_path: Path) -> None:
    other = random_model("tiny-rn")
    torch.save({k: v for k, v in other.state_dict().items() if k.startswith("visual.")}, tmp_path / "rn.pt")
    with pytest.raises(
        CheckpointError, match=r"31 missing keys \(class_embedding, ln_post.*conv1\.weight: file"
    ):
        load_openai_visual(fresh, tmp_path / "rn.pt")
    torch.save({"bert.x": torch.zeros(1)}, tmp_path / "text_only.pt")
    with pytest.raises(CheckpointError, match="no 'visual"):
        load_openai_visual(fresh, tmp_path / "text_only.pt")


def test_hf_bert_directory_from_transformers(fresh: CLIP, tmp_path: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM

    text = fresh.config.text
    config = BertConfig(
        vocab_size=text.vocab_size,
        hidden_size=text.hidden_size,
        num_hidden_layers=text.num_layers,
        num_attention_heads=text.num_heads,
        intermediate_size=text.intermediate_size,
        max_position_embeddings=text.max_position_embeddings,
    )
    torch.manual_seed(1)
    bert = BertForMaskedLM(config).eval()  # `bert.*` plus the `cls.*` head, as hfl/chinese-roberta-wwm-ext
    bert.save_pretrained(tmp_path / "roberta")
    provenance = load_hf_bert(fresh, tmp_path / "roberta")
    assert provenance["format"] == "huggingface-bert"
    fresh.eval()
    ids = torch.tensor([[101, 2769, 4263, 872, 102, 0], [101, 1920, 102, 0, 0, 0]])
    with torch.no_grad():
        theirs = bert.bert(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        ours = fresh.bert(ids, ids != 0)
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], atol=1e-5, rtol=1e-5)


def test_hf_bert_tf_era_names_and_pooler(fresh: CLIP, donor: CLIP, tmp_path: Path) -> None:
    state = {}
    for key, value in donor.bert.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[f"bert.{key}"] = value
    state["bert.pooler.dense.weight"] = torch.zeros(64, 64)
    state["cls.predictions.bias"] = torch.zeros(21128)
    torch.save(state, tmp_path / "pytorch_model.bin")
    load_hf_bert(fresh, tmp_path / "pytorch_model.bin")
    _assert_tower_equal(fresh.bert, donor.bert)


def test_hf_bert_of_another_size_names_the_mismatch(fresh: CLIP, tmp_path: Path) -> None:
    state = {f"bert.{k}": v for k, v in fresh.bert.state_dict().items() if ".layer.1." not in k}
    torch.save(state, tmp_path / "short.bin")
    with pytest.raises(CheckpointError, match=r"missing keys \(encoder\.layer\.1\.attention"):
        load_hf_bert(fresh, tmp_path / "short.bin")


class _VisualOnly(nn.Module):
    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


class _Holder(nn.Module):
    """Wraps a plain state dict so ``_assert_tower_equal`` can compare against it."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._state = state

    def state_dict(self, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self._state

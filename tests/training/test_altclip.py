"""AltCLIP: the same random weights in ours and in ``transformers.AltCLIPModel`` give the same features
(fp32, CPU); Hugging Face directories load both ways; released sizes have Hugging Face's parameter counts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from training.checkpoints import (
    CheckpointError,
    hf_altclip_config_dict,
    load_checkpoint,
    save_altclip_hf_directory,
)
from training.models import AltCLIP, AltCLIPConfig, build_model, list_models, load_model_config
from training.models.xlmr import position_ids

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-5
RELEASED = ["AltCLIP", "AltCLIP-m9", "AltCLIP-m18"]
PAD, BOS, EOS = 1, 0, 2


def perturbed_model(name: str, seed: int) -> AltCLIP:
    """``name`` with every parameter moved off its init, LayerNorms included (unit scales hide a missing norm)."""
    torch.manual_seed(seed)
    model = build_model(name)
    assert isinstance(model, AltCLIP)
    assert not list(model.buffers())  # nothing to perturb beyond the parameters
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def hf_altclip(config: AltCLIPConfig) -> Any:
    hf = hf_altclip_config_dict(config)
    hf_config = transformers.AltCLIPConfig(
        text_config=hf["text_config"], vision_config=hf["vision_config"], projection_dim=hf["projection_dim"]
    )
    return transformers.AltCLIPModel(hf_config)


def from_pretrained(directory: Path) -> Any:
    model, info = transformers.AltCLIPModel.from_pretrained(directory, output_loading_info=True)
    assert not any(info.values()), f"transformers reports {info}"
    return model.eval()


def token_ids(config: AltCLIPConfig, lengths: list[int], seed: int = 0) -> torch.Tensor:
    """``<s> … </s>`` rows of the given lengths, right-padded with ``<pad>`` to the longest."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(3, config.vocab_size, (length,), generator=generator)
        ids[row, 0], ids[row, length - 1] = BOS, EOS
    return ids


def _output(output: object) -> torch.Tensor:  # transformers 5 returns a model output, 4.x a tensor
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


def _differences(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    raw = (ours - theirs).abs().max().item()
    normalised = (F.normalize(ours, dim=-1) - F.normalize(theirs, dim=-1)).abs().max().item()
    return raw, normalised


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[AltCLIP, Any]:
    ours = perturbed_model("tiny-altclip", seed=1)
    directory = save_altclip_hf_directory(ours, tmp_path_factory.mktemp("hf") / "tiny-altclip")
    return ours, from_pretrained(directory)


@torch.no_grad()
def test_text_features_equal_huggingface(pair: tuple[AltCLIP, Any]) -> None:
    ours, hf = pair
    ids = token_ids(ours.config, [5, 77, 2, 30, 11])  # 77: the whole context
    mask = (ids != PAD).long()
    theirs = _output(hf.get_text_features(input_ids=ids, attention_mask=mask))
    raw, normalised = _differences(ours.encode_text(ids, mask), theirs)
    print(f"text: max |diff| raw {raw:.3g}, normalised {normalised:.3g}")
    assert raw <= TOLERANCE and normalised <= TOLERANCE
    torch.testing.assert_close(ours.encode_text(ids), ours.encode_text(ids, mask), rtol=0, atol=0)


@torch.no_grad()
def test_image_features_equal_huggingface(pair: tuple[AltCLIP, Any]) -> None:
    ours, hf = pair
    r = ours.config.image_resolution
    pixels = torch.randn(3, 3, r, r, generator=torch.Generator().manual_seed(2))
    raw, normalised = _differences(
        ours.encode_image(pixels), _output(hf.get_image_features(pixel_values=pixels))
    )
    print(f"image: max |diff| raw {raw:.3g}, normalised {normalised:.3g}")
    assert raw <= TOLERANCE and normalised <= TOLERANCE


@torch.no_grad()
def test_forward_equals_huggingface_logits(pair: tuple[AltCLIP, Any]) -> None:
    ours, hf = pair
    r = ours.config.image_resolution
    pixels, ids = torch.randn(2, 3, r, r), token_ids(ours.config, [6, 9, 4], seed=3)
    image_features, text_features, scale = ours(pixels, ids)
    theirs = hf(input_ids=ids, pixel_values=pixels, attention_mask=(ids != PAD).long())
    torch.testing.assert_close(scale, ours.scale())
    torch.testing.assert_close(scale * image_features @ text_features.T, theirs.logits_per_image)


@torch.no_grad()
def test_padding_changes_nothing() -> None:
    model = perturbed_model("tiny-altclip", seed=4)
    ids = token_ids(model.config, [7, 12])
    torch.testing.assert_close(
        model.encode_text(ids[:1, :7]), model.encode_text(ids)[:1], atol=1e-6, rtol=1e-6
    )


def test_positions_count_from_the_padding_id() -> None:
    ids = torch.tensor([[BOS, 5, 6, EOS, PAD, PAD], [BOS, EOS, PAD, PAD, PAD, PAD]])
    assert position_ids(ids, PAD).tolist() == [[2, 3, 4, 5, 1, 1], [2, 3, 1, 1, 1, 1]]
    # Hugging Face's own helper, as the embeddings call it
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    assert torch.equal(position_ids(ids, PAD), RobertaEmbeddings.create_position_ids_from_input_ids(ids, PAD))


def test_configs_and_interface() -> None:
    assert {*RELEASED, "tiny-altclip"} <= set(list_models())
    for name in RELEASED:
        config = load_model_config(name)
        assert isinstance(config, AltCLIPConfig) and config.family == "altclip"
        assert (config.context_length, config.image_resolution, config.vocab_size) == (77, 224, 250002)
    assert load_model_config("ViT-B-16").family == "chinese-clip"
    model = perturbed_model("tiny-altclip", seed=0)
    assert model.family == "altclip" and model.config.name == "tiny-altclip"
    assert math.isclose(AltCLIP(model.config).scale().item(), 1 / 0.07, rel_tol=1e-6)


def test_context_longer_than_positions_is_refused() -> None:
    raw = json.loads(Path("training/models/configs/tiny-altclip.json").read_text())
    with pytest.raises(ValueError, match="max_position_embeddings is 80; use at most 78"):
        AltCLIPConfig.model_validate({**raw, "name": "x", "context_length": 79})


@pytest.mark.parametrize("name", RELEASED)
def test_parameter_counts_equal_huggingface(name: str) -> None:
    config = load_model_config(name)
    assert isinstance(config, AltCLIPConfig)
    with torch.device("meta"):
        ours = sum(p.numel() for p in build_model(name).parameters())
        theirs = sum(p.numel() for p in hf_altclip(config).parameters())
    print(f"{name}: ours {ours:,} Hugging Face {theirs:,}")
    assert ours == theirs


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    model = perturbed_model("tiny-altclip", seed=5)
    r = model.config.image_resolution
    pixels, ids = torch.randn(2, 3, r, r), token_ids(model.config, [6, 9])

    def grads(enable: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        image_features, text_features, scale = model(pixels, ids)
        (scale * image_features @ text_features.T).logsumexp(dim=1).sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], msg=key)


@torch.no_grad()
def _assert_same(loaded: torch.nn.Module, original: AltCLIP) -> None:
    assert isinstance(loaded, AltCLIP) and loaded.config == original.config and not loaded.training
    for key, value in original.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    ids = token_ids(original.config, [4, 9])
    torch.testing.assert_close(loaded.encode_text(ids), original.encode_text(ids), rtol=0, atol=0)


@pytest.mark.parametrize("safetensors", [True, False])
def test_hf_directory_round_trip(safetensors: bool, tmp_path: Path) -> None:
    ours = perturbed_model("tiny-altclip", seed=6)
    directory = save_altclip_hf_directory(ours, tmp_path / "hf", safetensors=safetensors)
    loaded = load_checkpoint(directory)
    _assert_same(loaded.model, ours)
    assert loaded.provenance["format"] == "huggingface" and loaded.provenance["family"] == "altclip"
    assert loaded.provenance["arch"] == "tiny-altclip"


def test_hf_directory_written_by_transformers_loads(pair: tuple[AltCLIP, Any], tmp_path: Path) -> None:
    ours, hf = pair
    hf.save_pretrained(tmp_path / "saved")
    _assert_same(load_checkpoint(tmp_path / "saved").model, ours)


def test_hf_state_dict_file_loads(pair: tuple[AltCLIP, Any], tmp_path: Path) -> None:
    ours, hf = pair  # transformers 5's in-memory names (encoder.layers.N)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    _assert_same(load_checkpoint(tmp_path / "pytorch_model.bin", arch="tiny-altclip").model, ours)


def test_same_architecture_sizes_are_told_apart_by_name_or_path(tmp_path: Path) -> None:
    from training.checkpoints.hf_altclip import detect_altclip_arch

    with torch.device("meta"):
        state_dict = build_model("AltCLIP").state_dict()
    config = hf_altclip_config_dict(load_model_config("AltCLIP-m9"))  # type: ignore[arg-type]
    assert detect_altclip_arch(state_dict, config, "x") == "AltCLIP"
    assert (
        detect_altclip_arch(state_dict, {**config, "_name_or_path": "BAAI/AltCLIP-m9"}, "x") == "AltCLIP-m9"
    )
    m18 = hf_altclip_config_dict(load_model_config("AltCLIP-m18"))  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="Closest is AltCLIP"):
        detect_altclip_arch(state_dict, m18, "x")


def test_hf_directory_with_other_heads_is_refused(tmp_path: Path) -> None:
    directory = save_altclip_hf_directory(perturbed_model("tiny-altclip", seed=7), tmp_path / "hf")
    config = json.loads((directory / "config.json").read_text())
    config["text_config"]["num_attention_heads"] = 8
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"text_config\.num_attention_heads is 8, tiny-altclip has 4"):
        load_checkpoint(directory)
    with pytest.raises(CheckpointError, match="num_attention_heads is 8"):
        load_checkpoint(directory, arch="tiny-altclip")
    with pytest.raises(CheckpointError, match="not an AltCLIP size"):
        load_checkpoint(directory, arch="tiny-vit")

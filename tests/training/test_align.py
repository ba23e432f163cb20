"""ALIGN: the same random weights in ours and in ``transformers.AlignModel`` give the same features; sizes
and parameter counts equal Hugging Face's; Hugging Face directories load both ways.

Every parameter and buffer is perturbed first (BatchNorm running statistics included) and the models
compare in eval mode, so a mis-folded BatchNorm or a skipped norm cannot hide behind default values;
unnormalised image features are compared too, since a wrong pooling divisor only scales them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from training.checkpoints import (
    CheckpointError,
    from_hf_align_state_dict,
    hf_align_config_dict,
    load_checkpoint,
    save_align_hf_directory,
    save_checkpoint,
    to_hf_align_state_dict,
)
from training.models import ALIGN, AlignConfig, build_model, load_model_config

TOLERANCE = 1e-5
# ids of a BERT uncased vocab: [CLS] ... [SEP], right-padded with [PAD] = 0; the second row is truncated
IDS = torch.tensor(
    [
        [101, 1037, 6302, 1997, 1037, 4937, 102] + [0] * 5,
        [101, *range(2000, 2010), 102],
        [101, 102] + [0] * 10,
    ]
)


def _hf_model(config: AlignConfig, state_dict: dict[str, torch.Tensor] | None = None) -> Any:
    """A ``transformers.AlignModel`` of the same size in eval mode (random init unless ``state_dict``)."""
    from transformers import AlignConfig as HFAlignConfig
    from transformers import AlignModel

    hf = hf_align_config_dict(config)
    hf_config = HFAlignConfig(
        text_config=hf["text_config"], vision_config=hf["vision_config"], projection_dim=hf["projection_dim"]
    )
    model = AlignModel(hf_config)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _perturbed(state_dict: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A distinct random value for every tensor; norm scales and variances stay near 1 so 15+ blocks stay finite."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point():  # num_batches_tracked: unused in eval, still must round-trip
            out[key] = torch.randint(1, 1000, tensor.shape, generator=generator, dtype=tensor.dtype)
            continue
        noise = torch.randn(tensor.shape, generator=generator)
        norm = any(part in key for part in ("batchnorm", "_bn", "_norm", "LayerNorm"))
        if key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(tensor.shape, generator=generator)
        elif key.endswith("running_mean"):
            out[key] = 0.2 * noise
        elif norm and key.endswith(".weight"):
            out[key] = 1.0 + 0.2 * noise
        elif key == "temperature":
            out[key] = torch.tensor(0.0731)
        elif tensor.dim() == 1:  # biases, norm shifts
            out[key] = 0.1 * noise
        else:
            fan_in = tensor[0].numel()
            out[key] = noise * fan_in**-0.5
    return out


def _random_pair(config: AlignConfig, seed: int) -> tuple[ALIGN, Any]:
    theirs = _hf_model(config)
    state = _perturbed(theirs.state_dict(), seed)
    for key, value in theirs.state_dict().items():
        assert not torch.equal(state[key], value), f"{key} kept its initial value"
    theirs.load_state_dict(state, strict=True)
    ours = ALIGN(config)
    ours.load_state_dict(from_hf_align_state_dict(state), strict=True)
    return ours.eval(), theirs


def _variant(**vision: Any) -> AlignConfig:
    """tiny-align with other image-tower settings."""
    base = load_model_config("tiny-align")
    assert isinstance(base, AlignConfig)
    data = base.model_dump()
    data["vision"].update(vision)
    return AlignConfig.model_validate(data)


CONFIGS = {
    "tiny-align": lambda: load_model_config("tiny-align"),
    # an odd input and symmetric padding before a stride-2 depthwise conv (block 2 starts stage 3)
    "odd-size-depthwise-padding": lambda: _variant(image_resolution=37, depthwise_padding=(2,)),
    # a stride-2 stage with a 3x3 kernel, and drop-connect off
    "stride-2-k3": lambda: _variant(strides=(1, 2, 2), kernel_sizes=(3, 3, 3), drop_connect_rate=0.0),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request: pytest.FixtureRequest) -> tuple[ALIGN, Any]:
    config = CONFIGS[request.param]()
    assert isinstance(config, AlignConfig)
    return _random_pair(config, seed=len(request.param))


def _max_differences(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    raw = (ours - theirs).abs().max().item()
    normalised = (F.normalize(ours, dim=-1) - F.normalize(theirs, dim=-1)).abs().max().item()
    return raw, normalised


@torch.no_grad()
def test_image_features_equal_huggingface(pair: tuple[ALIGN, Any]) -> None:
    ours, theirs = pair
    r = ours.config.image_resolution
    # a different brightness per image: the global mean of i.i.d. noise alone hardly varies between images
    pixels = (
        torch.randn(3, 3, r, r, generator=torch.Generator().manual_seed(2))
        + torch.tensor([-1.5, 0.0, 1.5])[:, None, None, None]
    )
    output = theirs.vision_model(pixel_values=pixels)
    # the last feature map is as small as ours says (Hugging Face's pool is only global when it fits)
    assert output.last_hidden_state.shape[-1] == ours.config.vision.feature_map_size
    mine = ours.encode_image(pixels)
    assert mine.shape == (3, ours.config.embed_dim)
    raw, normalised = _max_differences(mine, output.pooler_output)
    assert raw <= TOLERANCE * max(1.0, output.pooler_output.abs().max().item()), (
        f"raw features differ by {raw:.3g}"
    )
    assert normalised <= TOLERANCE, f"normalised features differ by {normalised:.3g}"
    torch.testing.assert_close(mine, output.pooler_output, rtol=TOLERANCE, atol=TOLERANCE)
    # the features are not near-constant: a scaled or shifted tower would not pass by accident
    assert mine.std(dim=0).mean() > 100 * TOLERANCE


@torch.no_grad()
def test_text_features_equal_huggingface(pair: tuple[ALIGN, Any]) -> None:
    ours, theirs = pair
    ids = IDS.clone()
    ids[ids >= ours.config.vocab_size] = 7
    mask = (ids != 0).long()
    output = theirs.get_text_features(input_ids=ids, attention_mask=mask)
    expected = getattr(output, "pooler_output", output)  # transformers 5: an output object
    mine = ours.encode_text(ids)  # the mask defaults to ids != 0
    _, normalised = _max_differences(mine, expected)
    assert normalised <= TOLERANCE, f"normalised features differ by {normalised:.3g}"
    torch.testing.assert_close(mine, expected, rtol=TOLERANCE, atol=TOLERANCE)
    torch.testing.assert_close(ours.encode_text(ids, mask), mine, rtol=0, atol=0)


@torch.no_grad()
def test_forward_equals_huggingface_logits(pair: tuple[ALIGN, Any]) -> None:
    ours, theirs = pair
    r = ours.config.image_resolution
    pixels = torch.randn(3, 3, r, r, generator=torch.Generator().manual_seed(3))
    ids = IDS.clamp(max=ours.config.vocab_size - 1)
    output = theirs(input_ids=ids, pixel_values=pixels, attention_mask=(ids != 0).long())
    image, text, scale = ours(pixels, ids)
    torch.testing.assert_close(scale, 1 / ours.temperature)
    torch.testing.assert_close(scale * image @ text.T, output.logits_per_image, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))


# ---- sizes ----------------------------------------------------------------------------------------------


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["ALIGN-base", "tiny-align"])
def test_parameter_counts_and_shapes_equal_huggingface(name: str) -> None:
    config = load_model_config(name)
    assert isinstance(config, AlignConfig)
    with torch.device("meta"):
        ours, theirs = build_model(name), _hf_model(config)
    assert isinstance(ours, ALIGN)
    assert _count(ours) == _count(theirs)
    assert _count(ours.visual) == _count(theirs.vision_model)
    shapes = {k: tuple(v.shape) for k, v in to_hf_align_state_dict(ours.state_dict()).items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_align_base_is_b7_at_289_without_top() -> None:
    config = load_model_config("ALIGN-base")
    assert isinstance(config, AlignConfig)
    assert (config.embed_dim, config.context_length, config.image_resolution, config.vocab_size) == (
        640,
        64,
        289,
        30522,
    )
    assert config.vision.feature_map_size == 9
    with torch.device("meta"):
        model = build_model("ALIGN-base")
    assert isinstance(model, ALIGN) and model.family == "align"
    assert _count(model) == 172_117_841
    assert _count(model.visual) == 62_143_440  # EfficientNet-B7 without its top conv and classifier
    assert len(model.visual.encoder.blocks) == 55


def test_embed_dim_must_be_the_image_width() -> None:
    data = load_model_config("tiny-align").model_dump()
    data["embed_dim"] = 32
    with pytest.raises(ValueError, match="no image projection"):
        AlignConfig.model_validate(data)


def test_temperature_is_raw_and_the_pooler_frozen() -> None:
    model = build_model("tiny-align")
    assert isinstance(model, ALIGN)
    assert model.temperature.item() == 1.0 and model.scale().item() == 1.0
    assert not any(p.requires_grad for p in model.text_pooler.parameters())


def test_drop_connect_only_in_training() -> None:
    torch.manual_seed(0)
    model = ALIGN(_variant(drop_connect_rate=0.9))
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model.encode_image(pixels), model.encode_image(pixels), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model.encode_image(pixels), model.encode_image(pixels))


# ---- checkpoints ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> ALIGN:
    config = load_model_config("tiny-align")
    assert isinstance(config, AlignConfig)
    return _random_pair(config, seed=7)[0]


@torch.no_grad()
def _assert_same_model(loaded: torch.nn.Module, original: ALIGN) -> None:
    assert isinstance(loaded, ALIGN) and loaded.config == original.config and not loaded.training
    for key, value in original.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.encode_image(pixels), original.encode_image(pixels), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_text(IDS), original.encode_text(IDS), rtol=0, atol=0)


@pytest.mark.parametrize("safetensors", [True, False])
@torch.no_grad()
def test_hf_directory_loads_in_transformers_without_missing_keys(
    tiny: ALIGN, safetensors: bool, tmp_path: Path
) -> None:
    from transformers import AlignModel

    directory = save_align_hf_directory(tiny, tmp_path / "hf", safetensors=safetensors)
    theirs, info = AlignModel.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    theirs.eval()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        theirs.get_image_features(pixel_values=pixels).pooler_output, tiny.encode_image(pixels)
    )
    text = theirs.get_text_features(input_ids=IDS, attention_mask=(IDS != 0).long()).pooler_output
    torch.testing.assert_close(text, tiny.encode_text(IDS), rtol=TOLERANCE, atol=TOLERANCE)
    torch.testing.assert_close(theirs.temperature, tiny.temperature)

    loaded = load_checkpoint(directory)
    _assert_same_model(loaded.model, tiny)
    assert (loaded.provenance["format"], loaded.provenance["arch"]) == ("huggingface", "tiny-align")


def test_directory_saved_by_transformers_loads(tiny: ALIGN, tmp_path: Path) -> None:
    theirs = _hf_model(tiny.config, to_hf_align_state_dict(tiny.state_dict()))
    theirs.save_pretrained(tmp_path / "hf")
    _assert_same_model(load_checkpoint(tmp_path / "hf", arch="tiny-align").model, tiny)


def test_hf_state_dict_file_and_our_checkpoint_load(tiny: ALIGN, tmp_path: Path) -> None:
    state = to_hf_align_state_dict(tiny.state_dict())
    state["text_model.embeddings.position_ids"] = torch.arange(64)[None]  # older transformers saved it
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = load_checkpoint(tmp_path / "pytorch_model.bin")
    assert loaded.provenance["format"] == "huggingface-state-dict"
    _assert_same_model(loaded.model, tiny)
    path = save_checkpoint(tmp_path / "ours.pt", tiny, epoch=2)  # type: ignore[arg-type]
    _assert_same_model(load_checkpoint(path).model, tiny)


def test_mapping_is_exactly_invertible(tiny: ALIGN) -> None:
    ours = tiny.state_dict()
    hf = to_hf_align_state_dict(ours)
    assert "text_model.pooler.dense.weight" in hf and "vision_model.embeddings.convolution.weight" in hf
    back = from_hf_align_state_dict(hf)
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[key], ours[key]) for key in ours)


def test_a_different_architecture_in_config_json_is_refused(tiny: ALIGN, tmp_path: Path) -> None:
    directory = save_align_hf_directory(tiny, tmp_path / "hf")
    config = (directory / "config.json").read_text()
    (directory / "config.json").write_text(config.replace('"hidden_dim": 64', '"hidden_dim": 4'))
    with pytest.raises(CheckpointError, match="hidden_dim 4 is smaller than the 8x8 feature map"):
        load_checkpoint(directory)

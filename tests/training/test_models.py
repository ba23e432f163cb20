"""The model family: sizes, state-dict layout against the official package, and the CLIP interface."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from tests.peers import official_model
from training.models import CLIP, build_model, list_models, load_model_config

# the official parameter counts (all, image tower, text tower + text_projection)
REFERENCE_PARAMS = {
    "RN50": (76_989_537, 38_316_896, 38_672_640),
    "ViT-B-16": (188_262_913, 86_192_640, 102_070_272),
    "ViT-L-14": (406_233_089, 303_966_208, 102_266_880),
    "ViT-L-14-336": (406_560_769, 304_293_888, 102_266_880),
    "ViT-H-14": (957_598_209, 632_076_800, 325_521_408),
}


def _on_meta(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init time
        return build()


def test_every_size_is_listed() -> None:
    assert set(list_models()) >= {*REFERENCE_PARAMS, "tiny-vit", "tiny-rn"}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_counts_match_the_official_table(name: str) -> None:
    model = _on_meta(lambda: build_model(name))
    text = _count(model.bert) + model.text_projection.numel()
    assert (_count(model), _count(model.visual), text) == REFERENCE_PARAMS[name]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", [*sorted(REFERENCE_PARAMS), "tiny-vit", "tiny-rn"])
def test_state_dict_keys_and_shapes_equal_the_official_model(name: str) -> None:
    config = load_model_config(name)
    ours = _on_meta(lambda: build_model(name)).state_dict()
    theirs = _on_meta(lambda: official_model(config)).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_tiny_sizes_use_the_real_vocab_and_context() -> None:
    for name in ("tiny-vit", "tiny-rn"):
        config = load_model_config(name)
        assert (config.vocab_size, config.context_length, config.image_resolution) == (21128, 52, 64)


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(ValueError, match="ViT-B-16"):
        load_model_config("ViT-Z-99")


@pytest.fixture(scope="module", params=["tiny-vit", "tiny-rn"])
def tiny(request: pytest.FixtureRequest) -> CLIP:
    torch.manual_seed(0)
    return build_model(request.param).eval()


def _inputs(model: CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    r = model.config.image_resolution
    ids = torch.zeros(3, 52, dtype=torch.long)
    ids[:, 0], ids[0, 1:4], ids[0, 4] = 101, torch.tensor([2769, 4263, 872]), 102
    ids[1, 1:51], ids[1, 51] = torch.arange(1000, 1050), 102
    ids[2, 1] = 102
    return torch.randn(3, 3, r, r), ids


def test_forward_returns_normalised_features_and_scale(tiny: CLIP) -> None:
    images, ids = _inputs(tiny)
    with torch.no_grad():
        image_features, text_features, scale = tiny(images, ids)
    dim = tiny.config.embed_dim
    assert image_features.shape == text_features.shape == (3, dim)
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(3))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert math.isclose(tiny.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)


def test_text_mask_defaults_to_non_padding_and_padding_is_ignored(tiny: CLIP) -> None:
    _, ids = _inputs(tiny)
    with torch.no_grad():
        default = tiny.encode_text(ids)
        explicit = tiny.encode_text(ids, (ids != 0).long())
        unpadded = tiny.encode_text(ids[:1, :5])  # the same first text without its padding
    torch.testing.assert_close(default, explicit)
    torch.testing.assert_close(unpadded, default[:1], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    # ViT and BERT layers are checkpointed; the ResNet accepts the flag and ignores it (BatchNorm)
    torch.manual_seed(0)
    model = build_model("tiny-vit").eval()  # deterministic: no dropout
    images, ids = _inputs(model)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        image_features, text_features, scale = model(images, ids)
        (scale * image_features @ text_features.T).logsumexp(dim=1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads(False)
    model.train()  # checkpointing only applies in training mode...
    for module in model.modules():  # ...but keep dropout off for an exact comparison
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    for layer in model.bert.encoder.layer:
        layer.attention.self.dropout = 0.0
    checkpointed = grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)

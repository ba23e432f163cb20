"""Checkpoint formats round-trip, and wrong or corrupt files fail with messages that name the keys."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.peers import hf_model, random_model
from training.checkpoints import (
    CheckpointError,
    from_hf_state_dict,
    load_checkpoint,
    save_checkpoint,
    save_hf_directory,
    to_hf_state_dict,
)
from training.models import CLIP


@pytest.fixture(scope="module", params=["tiny-vit", "tiny-rn"])
def model(request: pytest.FixtureRequest) -> CLIP:
    return random_model(request.param, seed=5)


@pytest.fixture(scope="module")
def vit() -> CLIP:
    return random_model("tiny-vit", seed=6)


def _inputs(model: CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    r = model.config.image_resolution
    ids = torch.tensor([[101, 2769, 4263, 872, 102, 0, 0], [101, 1920, 2157, 102, 0, 0, 0]])
    return torch.randn(2, 3, r, r, generator=torch.Generator().manual_seed(0)), ids


@torch.no_grad()
def _assert_same_model(loaded: CLIP, original: CLIP) -> None:
    assert loaded.config == original.config
    assert not loaded.training
    for key, value in original.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    pixels, ids = _inputs(original)
    torch.testing.assert_close(loaded.encode_image(pixels), original.encode_image(pixels), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_text(ids), original.encode_text(ids), rtol=0, atol=0)


def _official(model: CLIP, path: Path) -> Path:
    return save_checkpoint(path / "epoch3.pt", model, epoch=3, step=120, name="finetune-muge")


def _tuwen(model: CLIP, path: Path) -> Path:
    config = {"model": model.config.name, "stage": 2, "lr": 5e-5}
    return save_checkpoint(path / "last.pt", model, epoch=1, step=7, name="run", config=config, optimizer={})


def _plain(model: CLIP, path: Path) -> Path:
    torch.save(model.state_dict(), path / "weights.pt")
    return path / "weights.pt"


def _plain_safetensors(model: CLIP, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "weights.safetensors"))
    return path / "weights.safetensors"


def _fp16_official(model: CLIP, path: Path) -> Path:  # released files store fp16 weights
    state = {f"module.{k}": v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "step": 1, "name": "released", "state_dict": state}, path / "released.pt")
    return path / "released.pt"


WRITERS: dict[str, tuple[Callable[[CLIP, Path], Path], str]] = {
    "official": (_official, "chinese-clip"),
    "tuwen": (_tuwen, "tuwen"),
    "state-dict": (_plain, "state-dict"),
    "safetensors": (_plain_safetensors, "state-dict"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_round_trip(model: CLIP, writer: str, tmp_path: Path) -> None:
    write, expected_format = WRITERS[writer]
    path = write(model, tmp_path)
    for arch in (None, model.config.name):  # detected and given
        loaded = load_checkpoint(path, arch=arch)
        _assert_same_model(loaded.model, model)
        assert loaded.provenance["format"] == expected_format
        assert loaded.provenance["arch"] == model.config.name
        assert loaded.provenance["path"] == str(path.resolve())
        assert len(loaded.provenance["sha256"]) == 64


def test_official_layout_and_provenance(model: CLIP, tmp_path: Path) -> None:
    path = _official(model, tmp_path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"epoch", "step", "name", "state_dict"}
    assert all(key.startswith("module.") for key in raw["state_dict"])
    provenance = load_checkpoint(path).provenance
    assert (provenance["epoch"], provenance["step"], provenance["name"]) == (3, 120, "finetune-muge")


def test_resumable_training_checkpoint_loads(vit: CLIP, tmp_path: Path) -> None:
    optimizer = torch.optim.AdamW(vit.parameters())
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    path = save_checkpoint(
        tmp_path / "last.pt", vit, config={"arch": "tiny-vit"}, optimizer=optimizer.state_dict()
    )
    torch.save({**torch.load(path, weights_only=True), "rng": rng}, path)
    _assert_same_model(load_checkpoint(path).model, vit)


def test_arbitrary_pickles_are_not_executed(tmp_path: Path) -> None:
    torch.save({"state_dict": {}, "hook": _Unsafe()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*evil\.pt"):
        load_checkpoint(tmp_path / "evil.pt")


class _Unsafe:
    pass


def test_fp16_released_file_loads_as_fp32(model: CLIP, tmp_path: Path) -> None:
    loaded = load_checkpoint(_fp16_official(model, tmp_path)).model
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(loaded.text_projection, model.text_projection, atol=1e-3, rtol=1e-3)


def test_released_pooler_keys_are_dropped_as_officially(vit: CLIP, tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in vit.state_dict().items()}
    state["module.bert.pooler.dense.weight"] = torch.zeros(64, 64)
    torch.save({"state_dict": state}, tmp_path / "with_pooler.pt")
    _assert_same_model(load_checkpoint(tmp_path / "with_pooler.pt").model, vit)


@pytest.mark.parametrize("safetensors", [True, False])
def test_hf_directory_round_trip(vit: CLIP, safetensors: bool, tmp_path: Path) -> None:
    directory = save_hf_directory(vit, tmp_path / "hf", safetensors=safetensors)
    assert (directory / ("model.safetensors" if safetensors else "pytorch_model.bin")).is_file()
    loaded = load_checkpoint(directory)
    _assert_same_model(loaded.model, vit)
    assert loaded.provenance["format"] == "huggingface"


@torch.no_grad()
def test_hf_directory_loads_in_transformers_with_equal_features(vit: CLIP, tmp_path: Path) -> None:
    from transformers import ChineseCLIPModel

    directory = save_hf_directory(vit, tmp_path / "hf")
    theirs = ChineseCLIPModel.from_pretrained(directory).eval()
    pixels, ids = _inputs(vit)
    image = theirs.get_image_features(pixel_values=pixels)
    text = theirs.get_text_features(input_ids=ids, attention_mask=(ids != 0).long())
    image, text = (getattr(t, "pooler_output", t) for t in (image, text))
    torch.testing.assert_close(image, vit.encode_image(pixels), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text, vit.encode_text(ids), atol=1e-5, rtol=1e-5)


def test_hf_directory_written_by_transformers_loads(vit: CLIP, tmp_path: Path) -> None:
    hf_model(vit.config, to_hf_state_dict(vit.state_dict())).save_pretrained(tmp_path / "hf")
    _assert_same_model(load_checkpoint(tmp_path / "hf").model, vit)


def test_hf_state_dict_file_loads(vit: CLIP, tmp_path: Path) -> None:
    state = to_hf_state_dict(vit.state_dict())
    state["text_model.embeddings.position_ids"] = torch.arange(512)[None]  # older transformers saved it
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = load_checkpoint(tmp_path / "pytorch_model.bin")
    assert loaded.provenance["format"] == "huggingface-state-dict"
    _assert_same_model(loaded.model, vit)


def test_hf_mapping_is_exactly_invertible(vit: CLIP) -> None:
    ours = vit.state_dict()
    hf = to_hf_state_dict(ours)
    assert not any(key.startswith(("visual.", "bert.")) for key in hf)
    assert hf["text_projection.weight"].shape == ours["text_projection"].T.shape
    back = from_hf_state_dict(hf)
    assert back.keys() == ours.keys()
    for key in ours:
        assert torch.equal(back[key], ours[key]), key


def test_rn50_has_no_hf_form() -> None:
    with pytest.raises(ValueError, match="no ResNet"):
        to_hf_state_dict(random_model("tiny-rn").state_dict())


# ---- wrong and corrupt files -------------------------------------------------------------------------


def test_missing_and_unexpected_keys_are_named(vit: CLIP, tmp_path: Path) -> None:
    state = dict(vit.state_dict())
    del state["visual.proj"], state["bert.encoder.layer.1.output.dense.bias"]
    state["visual.extra_head.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "broken.pt", arch="tiny-vit")
    message = str(error.value)
    assert "2 missing keys (bert.encoder.layer.1.output.dense.bias, visual.proj)" in message
    assert "1 unexpected keys (visual.extra_head.weight)" in message
    assert "tiny-vit" in message and str(tmp_path / "broken.pt") in message


def test_undetectable_file_names_the_closest_model_and_its_differences(vit: CLIP, tmp_path: Path) -> None:
    state = dict(vit.state_dict())
    del state["logit_scale"]
    torch.save(state, tmp_path / "no_scale.pt")
    with pytest.raises(CheckpointError, match=r"Closest is tiny-vit: 1 missing keys \(logit_scale\)"):
        load_checkpoint(tmp_path / "no_scale.pt")


def test_wrong_arch_names_the_shape_mismatch_and_the_right_arch(vit: CLIP, tmp_path: Path) -> None:
    path = _plain(vit, tmp_path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, arch="tiny-rn")
    message = str(error.value)
    assert "visual.conv1.weight: file [128, 3, 16, 16] vs model [8, 3, 3, 3]" in message
    assert "missing keys (visual.attnpool." in message and "… and" in message  # first few, then a count
    assert "It is a tiny-vit checkpoint" in message


def test_unknown_arch_lists_the_choices(vit: CLIP, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"choose one of .*ViT-B-16"):
        load_checkpoint(_plain(vit, tmp_path), arch="ViT-B-99")


def test_truncated_file_says_it_is_incomplete(vit: CLIP, tmp_path: Path) -> None:
    path = _official(vit, tmp_path)
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*cut\.pt.*Is the file complete"):
        load_checkpoint(tmp_path / "cut.pt")


def test_garbage_file_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def test_dict_without_weights_is_refused(tmp_path: Path) -> None:
    torch.save({"epoch": 1, "args": "x"}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"without 'state_dict'.*keys: epoch, args"):
        load_checkpoint(tmp_path / "meta.pt")


def test_hf_directory_problems_are_named(vit: CLIP, tmp_path: Path) -> None:
    directory = save_hf_directory(vit, tmp_path / "hf")
    config = json.loads((directory / "config.json").read_text())
    config["vision_config"]["num_attention_heads"] = 2
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"vision_config.num_attention_heads is 2 but tiny-vit has 4"):
        load_checkpoint(directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"holds none of model\.safetensors, pytorch_model\.bin"):
        load_checkpoint(directory)
    (directory / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        load_checkpoint(directory)

"""Hugging Face ``ChineseCLIPModel`` directories: ``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from training.checkpoints.hf_mapping import from_hf_state_dict, hf_config_dict, to_hf_state_dict
from training.checkpoints.state_dicts import CheckpointError, read_weights
from training.models import CLIP, ModelConfig

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# the fields that decide the architecture; shapes alone do not show the number of heads
_STRUCTURE = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
    "image_size",
)


def hf_model_type(directory: Path) -> str | None:
    """The ``model_type`` of a Hugging Face model directory's config.json, or None when it has none."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        return None
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        return None
    return model_type if isinstance(model_type, str) else None


def weights_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(
        f"{directory} holds none of {', '.join(WEIGHT_FILES)}; a Hugging Face model directory needs its weights file"
    )


def read_hf_directory(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(official-layout state dict, the directory's config.json)."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{directory} has no config.json; is it a Hugging Face ChineseCLIPModel directory?"
        )
    hf_config = json.loads(config_path.read_text())
    if hf_config.get("model_type") != "chinese_clip":
        raise CheckpointError(
            f"{config_path} has model_type {hf_config.get('model_type')!r}, expected 'chinese_clip' (ChineseCLIPModel)"
        )
    state_dict = read_weights(weights_file(directory))
    try:
        return from_hf_state_dict(state_dict), hf_config
    except ValueError as error:
        raise CheckpointError(f"{directory}: {error}") from error


def check_hf_structure(hf_config: dict[str, Any], config: ModelConfig, source: str) -> None:
    """Fail when config.json describes a different architecture than ``config`` (e.g. other head counts)."""
    ours = hf_config_dict(config)
    for tower in ("text_config", "vision_config"):
        for key in _STRUCTURE:
            theirs = hf_config.get(tower, {}).get(key)
            if key in ours[tower] and theirs is not None and theirs != ours[tower][key]:
                raise CheckpointError(
                    f"{source}: {tower}.{key} is {theirs} but {config.name} has {ours[tower][key]}; "
                    "pass the arch this model was built as"
                )


def save_hf_directory(model: CLIP, directory: str | Path, *, safetensors: bool = True) -> Path:
    """Write ``model`` as a directory that ``transformers.ChineseCLIPModel.from_pretrained`` loads."""
    return write_hf_directory(
        directory, hf_config_dict(model.config), to_hf_state_dict(model.state_dict()), safetensors=safetensors
    )


def write_hf_directory(
    directory: str | Path,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    *,
    safetensors: bool = True,
) -> Path:
    """A Hugging Face model directory: ``config.json`` and the weights (safetensors, or a ``.bin``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    if safetensors:
        from safetensors.torch import save_file

        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(tensors, directory / "pytorch_model.bin")
    return directory

"""``load_checkpoint``: one entry for every checkpoint format the project reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from service.bundle import sha256_of
from training.checkpoints.detect import detect_arch
from training.checkpoints.hf_align import (
    from_hf_align_state_dict,
    is_align_directory,
    is_align_state_dict,
    load_align_directory,
)
from training.checkpoints.hf_altclip import (
    from_hf_altclip_state_dict,
    is_altclip_directory,
    is_altclip_state_dict,
    load_altclip_directory,
)
from training.checkpoints.hf_directory import check_hf_structure, read_hf_directory, weights_file
from training.checkpoints.hf_mapping import from_hf_state_dict
from training.checkpoints.state_dicts import CheckpointError, load_strict, read_weights, strip_prefix
from training.models import ALIGN, CLIP, AltCLIP, build_model, list_models, load_model_config

# what official / Tuwen training checkpoints carry beside the weights, kept as provenance
_RECORD_KEYS = ("epoch", "step", "name")


@dataclass(frozen=True)
class LoadedModel:
    model: CLIP | AltCLIP | ALIGN
    provenance: dict[str, Any]  # format, path, sha256, arch, and epoch/step/name where the file has them


def load_checkpoint(path: str | Path, arch: str | None = None) -> LoadedModel:
    """Load a model in eval mode (fp32, CPU) from any supported checkpoint.

    Formats: official Chinese-CLIP ``.pt`` (``{"state_dict": {"module.…": …}, "epoch", "step", "name"}``), Tuwen
    training checkpoints (the same plus ``config``), Hugging Face ``ChineseCLIPModel``, ``AltCLIPModel`` and ``AlignModel`` directories, and plain
    state dicts (``.pt``/``.bin``/``.safetensors``, official or Hugging Face keys). Keys load strictly, without
    remapping (bar Hugging Face's names); ``arch`` is detected from the shapes when not given.
    """
    path = Path(path)
    if path.is_dir() and is_altclip_directory(path):  # config.json's model_type is "altclip"
        model, record = load_altclip_directory(path, arch)
        provenance = {**record, "path": str(path.resolve()), "sha256": sha256_of(weights_file(path))}
        return LoadedModel(model=model, provenance=provenance)
    if path.is_dir() and is_align_directory(path):  # config.json's model_type is "align"
        align, record = load_align_directory(path, arch)
        provenance = {**record, "path": str(path.resolve()), "sha256": sha256_of(weights_file(path))}
        return LoadedModel(model=align, provenance=provenance)
    if path.is_dir():
        state_dict, hf_config = read_hf_directory(path)
        record: dict[str, Any] = {"format": "huggingface"}
        weights = weights_file(path)
    else:
        state_dict, record = _unwrap(read_weights(path), path)
        weights, hf_config = path, None

    if arch is None:
        arch = detect_arch(state_dict, f"checkpoint {path}")
    elif arch not in list_models():
        raise CheckpointError(f"unknown arch {arch!r}; choose one of {', '.join(list_models())}")
    if hf_config is not None:
        check_hf_structure(hf_config, load_model_config(arch), f"{path}/config.json")

    with torch.device("meta"):  # no random init: every tensor comes from the file
        model = build_model(arch)
    load_strict(model, state_dict, what=f"checkpoint {path} as {arch}", hint=lambda: _arch_hint(state_dict))
    provenance = {**record, "path": str(path.resolve()), "sha256": sha256_of(weights), "arch": arch}
    return LoadedModel(model=model.eval(), provenance=provenance)


def _arch_hint(state_dict: dict[str, torch.Tensor]) -> str:
    try:
        return f"It is a {detect_arch(state_dict, 'checkpoint')} checkpoint: pass that arch, or omit it."
    except CheckpointError:
        return "Pass the arch the checkpoint was trained with (or omit it to detect it), or check the file is complete."


def _unwrap(raw: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(official-layout state dict, provenance record) from whatever ``torch.load`` returned."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(raw).__name__}, not a dict of weights")
    if "state_dict" in raw:
        record = {"format": "tuwen" if "config" in raw else "chinese-clip"}
        record.update({key: raw[key] for key in _RECORD_KEYS if key in raw})
        state_dict = raw["state_dict"]
    elif raw and all(isinstance(value, torch.Tensor) for value in raw.values()):
        record, state_dict = {"format": "state-dict"}, raw
    else:
        keys = ", ".join(map(str, list(raw)[:8]))
        raise CheckpointError(
            f"checkpoint {path} is a dict without 'state_dict' whose values are not all tensors (keys: {keys}); "
            "expected an official Chinese-CLIP / Tuwen checkpoint or a plain state dict"
        )
    state_dict = strip_prefix(state_dict, "module.")
    if is_altclip_state_dict(state_dict):  # Hugging Face AltCLIPModel keys
        record["format"] = "huggingface-state-dict"
        return from_hf_altclip_state_dict(state_dict), record
    if is_align_state_dict(state_dict):  # Hugging Face AlignModel keys
        record["format"] = "huggingface-state-dict"
        return from_hf_align_state_dict(state_dict), record
    if any(key.startswith(("text_model.", "vision_model.")) for key in state_dict):
        record["format"] = "huggingface-state-dict"
        state_dict = from_hf_state_dict(state_dict)
    # the official loader drops the unused BERT pooler some released files still carry
    return {k: v for k, v in state_dict.items() if not k.startswith("bert.pooler.")}, record


def save_checkpoint(
    path: str | Path,
    model: CLIP,
    *,
    epoch: int = 0,
    step: int = 0,
    name: str = "",
    config: dict[str, Any] | None = None,
    optimizer: dict[str, Any] | None = None,
) -> Path:
    """Write the official layout (``module.``-prefixed ``state_dict``); with ``config`` it is a Tuwen checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint: dict[str, Any] = {
        "epoch": epoch,
        "step": step,
        "name": name,
        "state_dict": {f"module.{key}": value for key, value in model.state_dict().items()},
    }
    if config is not None:
        checkpoint["config"] = config
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer
    torch.save(checkpoint, path)
    return path

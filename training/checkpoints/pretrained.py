"""Initialising a tower for training: an OpenAI-CLIP image tower, a Hugging Face BERT text tower."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from service.bundle import sha256_of
from training.checkpoints.hf_directory import weights_file
from training.checkpoints.state_dicts import CheckpointError, load_strict, read_weights, strip_prefix
from training.models import CLIP

_BERT_IGNORED = ("pooler.", "cls.")  # pretraining heads; Chinese-CLIP uses neither


def load_openai_visual(model: CLIP, path: str | Path) -> dict[str, Any]:
    """Copy ``visual.*`` from an OpenAI-CLIP-format checkpoint (TorchScript archive or state dict) into
    ``model.visual``; everything else in the file (its text tower, logit scale) is ignored."""
    path = Path(path)
    state_dict = _read_openai(path)
    visual = {
        key.removeprefix("visual."): value for key, value in state_dict.items() if key.startswith("visual.")
    }
    if not visual:
        raise CheckpointError(f"{path} has no 'visual.*' weights; expected an OpenAI-CLIP-format checkpoint")
    load_strict(
        model.visual,
        visual,
        what=f"image tower of {path} (keys without 'visual.') for {model.config.name}",
        hint="Use the OpenAI CLIP checkpoint of the same image tower (e.g. ViT-B/16 for ViT-B-16).",
    )
    return {"format": "openai-clip-visual", "path": str(path.resolve()), "sha256": sha256_of(path)}


def load_hf_bert(model: CLIP, path: str | Path) -> dict[str, Any]:
    """Copy a Hugging Face BERT (``hfl/chinese-roberta-wwm-ext`` layout) into ``model.bert``.

    ``path`` is the model directory or its weights file; ``bert.*`` keys (or bare ``embeddings.*``/``encoder.*``
    keys) are used, the pooler and pretraining heads ignored, and TF-era LayerNorm ``gamma``/``beta`` renamed.
    """
    path = Path(path)
    file = weights_file(path) if path.is_dir() else path
    raw = read_weights(file)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{file} holds a {type(raw).__name__}, not a BERT state dict")
    prefixed = any(key.startswith("bert.") for key in raw)
    bert: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if prefixed:
            if not key.startswith("bert."):
                continue  # pretraining heads (cls.*) stored beside the encoder
            key = key.removeprefix("bert.")
        if key.startswith(_BERT_IGNORED) or key.endswith("position_ids"):
            continue
        bert[_rename_layer_norm(key)] = value
    load_strict(
        model.bert,
        bert,
        what=f"BERT weights of {file} for {model.config.name}'s text tower",
        hint="Use the BERT matching the text tower (RBT3 for RN50, RoBERTa-wwm-ext base/large for the ViTs).",
    )
    return {"format": "huggingface-bert", "path": str(file.resolve()), "sha256": sha256_of(file)}


def _rename_layer_norm(key: str) -> str:
    if ".LayerNorm." in key:
        return key.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(
            ".LayerNorm.beta", ".LayerNorm.bias"
        )
    return key


def _read_openai(path: Path) -> Mapping[str, torch.Tensor]:
    # OpenAI's released files are TorchScript archives; fine-tuned ones are usually plain state dicts
    if zipfile.is_zipfile(path) and any(
        n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()
    ):
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    raw = read_weights(path)
    if isinstance(raw, Mapping) and "state_dict" in raw:
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a CLIP state dict")
    return strip_prefix(raw, "module.")

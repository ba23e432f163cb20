"""Hugging Face ``AltCLIPModel`` directories and state dicts, both ways.

The image tower reuses the Chinese-CLIP ViT mapping (same CLIP ViT under the same Hugging Face names);
the text tower maps by prefix. Layer names differ by writer: released files (and transformers 4) have
``text_model.roberta.encoder.layer.N`` and ``vision_model.encoder.layers.N``; transformers 5 renames
``layer.`` to ``layers.`` when loading and back when saving, so its files say ``vision_model.encoder.layer.N``
too. Every form is read; the released one is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from training.checkpoints.detect import model_shapes
from training.checkpoints.hf_directory import hf_model_type, weights_file, write_hf_directory
from training.checkpoints.hf_mapping import bert_text_config, from_hf_state_dict, to_hf_state_dict
from training.checkpoints.state_dicts import CheckpointError, compare, read_weights
from training.models import AltCLIP, AltCLIPConfig, list_models, load_model_config

MODEL_TYPE = "altclip"
# (ours, Hugging Face) key prefixes of the text side
_TEXT_PREFIXES = [
    ("text.embeddings.", "text_model.roberta.embeddings."),
    ("text.encoder.layer.", "text_model.roberta.encoder.layer."),
    ("text.pre_LN.", "text_model.pre_LN."),
    ("text.transformation.", "text_model.transformation."),
    ("text_projection.", "text_projection."),
]
# (other writer's prefix, released prefix)
_HF_LAYER_ALIASES = [
    ("text_model.roberta.encoder.layers.", "text_model.roberta.encoder.layer."),
    ("vision_model.encoder.layer.", "vision_model.encoder.layers."),
]
# index buffers Hugging Face rebuilds, and the tanh pooler AltCLIP never uses
_HF_IGNORED = (".position_ids", ".token_type_ids")
_HF_POOLER = "text_model.roberta.pooler."


def is_altclip_state_dict(state_dict: Mapping[str, Any]) -> bool:
    return any(key.startswith("text_model.roberta.") for key in state_dict)


def to_hf_altclip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ``AltCLIP`` keys -> ``AltCLIPModel`` keys (the released checkpoints' names)."""
    out: dict[str, torch.Tensor] = {}
    image: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        target = _swap_prefix(key, _TEXT_PREFIXES, reverse=False)
        if target is not None:
            out[target] = value
        else:  # visual.* and logit_scale: the same names as a Chinese-CLIP ViT
            image[key] = value
    return {**to_hf_state_dict(image), **out}


def from_hf_altclip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``AltCLIPModel`` keys -> ours. Unknown keys pass through so strict loading names them."""
    out: dict[str, torch.Tensor] = {}
    image: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith(_HF_IGNORED) or key.startswith(_HF_POOLER):
            continue
        key = _swap_prefix(key, _HF_LAYER_ALIASES, reverse=False) or key
        target = _swap_prefix(key, _TEXT_PREFIXES, reverse=True)
        if target is not None:
            out[target] = value
        else:
            image[key] = value
    return {**from_hf_state_dict(image), **out}


def _swap_prefix(key: str, pairs: list[tuple[str, str]], reverse: bool) -> str | None:
    for ours, hf in pairs:
        source, target = (hf, ours) if reverse else (ours, hf)
        if key.startswith(source):
            return target + key.removeprefix(source)
    return None


def hf_altclip_config_dict(config: AltCLIPConfig) -> dict[str, Any]:
    """The ``config.json`` of an ``AltCLIPModel`` equal to ``config`` (overriding HF's ViT-B/32 vision default)."""
    text, vision = config.text, config.vision
    return {
        "architectures": ["AltCLIPModel"],
        "model_type": MODEL_TYPE,
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "model_type": "altclip_text_model",
            **bert_text_config(text),
            "pad_token_id": config.pad_token_id,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "project_dim": config.project_dim,
        },
        "vision_config": {
            "model_type": "altclip_vision_model",
            "hidden_size": vision.width,
            "intermediate_size": vision.width * 4,
            "num_hidden_layers": vision.layers,
            "num_attention_heads": vision.heads,
            "image_size": vision.image_resolution,
            "patch_size": vision.patch_size,
            "projection_dim": config.embed_dim,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
    }


# what decides the computation beyond the shapes (head counts, activations, norms, the padding id)
_STRUCTURE = {
    "text_config": (
        "num_attention_heads",
        "hidden_act",
        "layer_norm_eps",
        "pad_token_id",
        "num_hidden_layers",
        "hidden_size",
        "project_dim",
    ),
    "vision_config": (
        "num_attention_heads",
        "hidden_act",
        "layer_norm_eps",
        "intermediate_size",
        "num_hidden_layers",
        "hidden_size",
        "patch_size",
        "image_size",
    ),
}


def structure_differences(hf_config: Mapping[str, Any], config: AltCLIPConfig) -> list[str]:
    """Fields config.json sets differently from ``config`` (fields it omits take Hugging Face's defaults)."""
    ours = hf_altclip_config_dict(config)
    found = []
    for tower, keys in _STRUCTURE.items():
        for key in keys:
            theirs = hf_config.get(tower, {}).get(key)
            if theirs is not None and theirs != ours[tower][key]:
                found.append(f"{tower}.{key} is {theirs!r}, {config.name} has {ours[tower][key]!r}")
    theirs = hf_config.get("projection_dim")
    if theirs is not None and theirs != config.embed_dim:
        found.append(f"projection_dim is {theirs}, {config.name} has {config.embed_dim}")
    return found


def altclip_names() -> list[str]:
    return [name for name in list_models() if load_model_config(name).family == MODEL_TYPE]


def detect_altclip_arch(
    state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], source: str
) -> str:
    """The AltCLIP size whose shapes and config.json structure both fit.

    Released sizes with the same architecture (BAAI/AltCLIP and -m9) differ only in weights; the one
    named by config.json's ``_name_or_path`` wins, else the first by name.
    """
    names = altclip_names()
    scored = {name: compare(state_dict, model_shapes(name)) for name in names}
    fitting = [
        n for n in names if not scored[n] and not structure_differences(hf_config, load_model_config(n))
    ]
    if not fitting:
        closest = min(names, key=lambda n: scored[n].size)
        problems = scored[closest].describe() or "; ".join(
            structure_differences(hf_config, load_model_config(closest))
        )
        raise CheckpointError(
            f"{source} fits none of the AltCLIP sizes ({', '.join(names)}). Closest is {closest}: {problems}. "
            "Add a JSON config under training/models/configs for this size, or check the directory is complete."
        )
    hinted = str(hf_config.get("_name_or_path", "")).rsplit("/", 1)[-1]
    return hinted if hinted in fitting else fitting[0]


def is_altclip_directory(directory: Path) -> bool:
    return hf_model_type(directory) == MODEL_TYPE


def read_altclip_directory(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(our state dict, the directory's config.json)."""
    hf_config = json.loads((directory / "config.json").read_text())
    return from_hf_altclip_state_dict(read_weights(weights_file(directory))), hf_config


def check_altclip_structure(hf_config: Mapping[str, Any], config: AltCLIPConfig, source: str) -> None:
    differences = structure_differences(hf_config, config)
    if differences:
        raise CheckpointError(
            f"{source}: {'; '.join(differences)}. Pass the arch this model was built as, or omit it to detect it."
        )


def save_altclip_hf_directory(model: AltCLIP, directory: str | Path, *, safetensors: bool = True) -> Path:
    """Write ``model`` as a directory that ``transformers.AltCLIPModel.from_pretrained`` loads."""
    return write_hf_directory(
        directory,
        hf_altclip_config_dict(model.config),
        to_hf_altclip_state_dict(model.state_dict()),
        safetensors=safetensors,
    )


def load_altclip_directory(directory: Path, arch: str | None) -> tuple[AltCLIP, dict[str, Any]]:
    """(the model in eval mode, fp32 on CPU; provenance) from a Hugging Face ``AltCLIPModel`` directory."""
    from training.checkpoints.state_dicts import load_strict
    from training.models import build_model

    state_dict, hf_config = read_altclip_directory(directory)
    source = f"Hugging Face AltCLIP directory {directory}"
    if arch is None:
        arch = detect_altclip_arch(state_dict, hf_config, source)
    elif arch not in altclip_names():
        raise CheckpointError(
            f"{source}: {arch!r} is not an AltCLIP size; choose one of {', '.join(altclip_names())}"
        )
    config = load_model_config(arch)
    assert isinstance(config, AltCLIPConfig)  # altclip_names() holds AltCLIP sizes only
    check_altclip_structure(hf_config, config, f"{directory}/config.json")
    with torch.device("meta"):  # no random init: every tensor comes from the file
        model = build_model(arch)
    load_strict(
        model, state_dict, what=f"{source} as {arch}", hint="Check the directory's weights file is complete."
    )
    assert isinstance(model, AltCLIP)
    return model.eval(), {"format": "huggingface", "family": MODEL_TYPE, "arch": arch}

"""Hugging Face ``AlignModel`` directories and state dicts, both ways.

Our ALIGN keeps Hugging Face's module names inside each tower, so the mapping is a prefix rename:
``visual.`` <-> ``vision_model.``, ``bert.`` <-> ``text_model.``, ``text_pooler.`` <-> ``text_model.pooler.dense.``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from training.checkpoints.detect import model_shapes
from training.checkpoints.hf_directory import hf_model_type, weights_file, write_hf_directory
from training.checkpoints.hf_mapping import bert_text_config
from training.checkpoints.state_dicts import CheckpointError, compare, load_strict, read_weights
from training.models import ALIGN, AlignConfig, build_model, list_models, load_model_config

MODEL_TYPE = "align"
# (ours, Hugging Face); the pooler first: its Hugging Face prefix is inside the text model's
_PREFIXES = [
    ("text_pooler.", "text_model.pooler.dense."),
    ("visual.", "vision_model."),
    ("bert.", "text_model."),
    ("text_projection.", "text_projection."),
    ("temperature", "temperature"),
]
# index buffers Hugging Face rebuilds (older versions saved them)
_HF_IGNORED = (".position_ids", ".token_type_ids")


def is_align_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Hugging Face ``AlignModel`` keys (its EfficientNet stem has no counterpart in the other families)."""
    return "vision_model.embeddings.convolution.weight" in state_dict


def _rename(key: str, reverse: bool) -> str:
    for ours, hf in _PREFIXES:
        source, target = (hf, ours) if reverse else (ours, hf)
        if key.startswith(source):
            return target + key[len(source) :]
    return key  # unknown keys pass through, so strict loading names them


def to_hf_align_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {_rename(key, reverse=False): value for key, value in state_dict.items()}


def from_hf_align_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {_rename(k, reverse=True): v for k, v in state_dict.items() if not k.endswith(_HF_IGNORED)}
    # BatchNorm's step counter is unused with a set momentum; a file converted without it still loads
    for key in [k for k in out if k.endswith(".running_mean")]:
        out.setdefault(key.removesuffix("running_mean") + "num_batches_tracked", torch.tensor(0))
    return out


def hf_align_config_dict(config: AlignConfig) -> dict[str, Any]:
    """The ``config.json`` of an ``AlignModel`` equal to ``config``."""
    text, vision = config.text, config.vision
    return {
        "architectures": ["AlignModel"],
        "model_type": MODEL_TYPE,
        "projection_dim": config.embed_dim,
        "temperature_init_value": config.temperature_init,
        "text_config": {
            "model_type": "align_text_model",
            **bert_text_config(text),
            "pad_token_id": 0,
        },
        "vision_config": {
            "model_type": "align_vision_model",
            "num_channels": 3,
            "image_size": vision.image_resolution,
            "width_coefficient": vision.width_coefficient,
            "depth_coefficient": vision.depth_coefficient,
            "depth_divisor": vision.depth_divisor,
            "kernel_sizes": list(vision.kernel_sizes),
            "in_channels": list(vision.in_channels),
            "out_channels": list(vision.out_channels),
            "depthwise_padding": list(vision.depthwise_padding),
            "strides": list(vision.strides),
            "num_block_repeats": list(vision.num_block_repeats),
            "expand_ratios": list(vision.expand_ratios),
            "squeeze_expansion_ratio": vision.squeeze_expansion_ratio,
            "hidden_act": "swish",
            # Hugging Face's pooling window: at least the last feature map, so its pool is the global mean
            "hidden_dim": max(vision.width, vision.feature_map_size),
            "pooling_type": "mean",
            "batch_norm_eps": vision.batch_norm_eps,
            "batch_norm_momentum": vision.batch_norm_momentum,
            "drop_connect_rate": vision.drop_connect_rate,
        },
    }


# fields that decide the architecture or the eval-mode numbers; omitted ones take Hugging Face's defaults,
# which are align-base's (BERT-base, EfficientNet-B7)
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "text_config": {
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
    },
    "vision_config": {
        "image_size": 600,
        "width_coefficient": 2.0,
        "depth_coefficient": 3.1,
        "depth_divisor": 8,
        "kernel_sizes": [3, 3, 5, 3, 5, 5, 3],
        "in_channels": [32, 16, 24, 40, 80, 112, 192],
        "out_channels": [16, 24, 40, 80, 112, 192, 320],
        "depthwise_padding": [],
        "strides": [1, 2, 2, 2, 1, 2, 1],
        "num_block_repeats": [1, 2, 2, 3, 3, 4, 1],
        "expand_ratios": [1, 6, 6, 6, 6, 6, 6],
        "squeeze_expansion_ratio": 0.25,
        "hidden_act": "swish",
        "pooling_type": "mean",
        "batch_norm_eps": 1e-3,
    },
}
_SAME_ACTIVATION = {"swish": "silu", "gelu": "gelu"}


def structure_differences(hf_config: Mapping[str, Any], config: AlignConfig) -> list[str]:
    """Where config.json describes another model than ``config``; an absent field means Hugging Face's default."""
    ours = hf_align_config_dict(config)
    found = []
    for tower, defaults in _HF_DEFAULTS.items():
        for key, default in defaults.items():
            if key == "image_size" and key not in hf_config.get(tower, {}):
                continue  # Hugging Face's default (600) is not align-base's; the weights fit any size
            theirs, mine = hf_config.get(tower, {}).get(key, default), ours[tower][key]
            if key == "hidden_act":
                theirs, mine = _SAME_ACTIVATION.get(theirs, theirs), _SAME_ACTIVATION.get(mine, mine)
            if theirs != mine:
                found.append(f"{tower}.{key} is {theirs!r}, {config.name} has {mine!r}")
    pool = hf_config.get("vision_config", {}).get("hidden_dim", 2560)
    if pool < config.vision.feature_map_size:
        found.append(
            f"vision_config.hidden_dim {pool} is smaller than the {config.vision.feature_map_size}x"
            f"{config.vision.feature_map_size} feature map, so Hugging Face's pool is not the global mean ours is"
        )
    projection = hf_config.get("projection_dim", 640)
    if projection != config.embed_dim:
        found.append(f"projection_dim is {projection}, {config.name} has {config.embed_dim}")
    return found


def align_names() -> list[str]:
    return [name for name in list_models() if load_model_config(name).family == MODEL_TYPE]


def detect_align_arch(
    state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], source: str
) -> str:
    """The ALIGN size whose shapes and config.json structure both fit (the first by name if several)."""
    names = align_names()
    scored = {name: compare(state_dict, model_shapes(name)) for name in names}
    fitting = [n for n in names if not scored[n] and not structure_differences(hf_config, _config(n))]
    if fitting:
        return fitting[0]
    closest = min(names, key=lambda n: scored[n].size)
    problems = scored[closest].describe() or "; ".join(structure_differences(hf_config, _config(closest)))
    raise CheckpointError(
        f"{source} fits none of the ALIGN sizes ({', '.join(names)}). Closest is {closest}: {problems}. "
        "Add a JSON config under training/models/configs for this size, or check the directory is complete."
    )


def _config(name: str) -> AlignConfig:
    config = load_model_config(name)
    if not isinstance(config, AlignConfig):
        raise CheckpointError(f"{name!r} is not an ALIGN size; choose one of {', '.join(align_names())}")
    return config


def is_align_directory(directory: Path) -> bool:
    return hf_model_type(directory) == MODEL_TYPE


def read_align_directory(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(our state dict, the directory's config.json)."""
    hf_config = json.loads((directory / "config.json").read_text())
    return from_hf_align_state_dict(read_weights(weights_file(directory))), hf_config


def load_align_directory(directory: Path, arch: str | None) -> tuple[ALIGN, dict[str, Any]]:
    """(the model in eval mode, fp32 on CPU; provenance) from a Hugging Face ``AlignModel`` directory."""
    state_dict, hf_config = read_align_directory(directory)
    source = f"Hugging Face ALIGN directory {directory}"
    if arch is None:
        arch = detect_align_arch(state_dict, hf_config, source)
    config = _config(arch)
    differences = structure_differences(hf_config, config)
    if differences:
        raise CheckpointError(
            f"{directory}/config.json: {'; '.join(differences)}. "
            "Pass the arch this model was built as, or omit it to detect it."
        )
    with torch.device("meta"):  # no random init: every tensor comes from the file
        model = build_model(arch)
    load_strict(
        model, state_dict, what=f"{source} as {arch}", hint="Check the directory's weights file is complete."
    )
    if not isinstance(model, ALIGN):  # _config() checked the family
        raise TypeError(f"{arch} built a {type(model).__name__}, not ALIGN")
    return model.eval(), {"format": "huggingface", "family": MODEL_TYPE, "arch": arch}


def save_align_hf_directory(model: ALIGN, directory: str | Path, *, safetensors: bool = True) -> Path:
    """Write ``model`` as a directory that ``transformers.AlignModel.from_pretrained`` loads."""
    return write_hf_directory(
        directory,
        hf_align_config_dict(model.config),
        to_hf_align_state_dict(model.state_dict()),
        safetensors=safetensors,
    )

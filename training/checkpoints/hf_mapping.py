"""Key mapping between the official Chinese-CLIP state dict and Hugging Face ``ChineseCLIPModel``.

Each rule is a pair of templates, ours and Hugging Face's; ``{i}`` is a layer number, ``{p}`` a
``weight``/``bias`` suffix and ``{rest}`` any remainder. The same table maps both directions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from training.models.config import ModelConfig, ResNetConfig, TextConfig

_VIT_BLOCK = "visual.transformer.resblocks.{i}"
_HF_BLOCK = "vision_model.encoder.layers.{i}"
_RENAMES: list[tuple[str, str]] = [
    ("logit_scale", "logit_scale"),
    ("bert.{rest}", "text_model.{rest}"),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.ln_pre.{p}", "vision_model.pre_layrnorm.{p}"),  # sic: Hugging Face's spelling
    ("visual.ln_post.{p}", "vision_model.post_layernorm.{p}"),
    (_VIT_BLOCK + ".attn.out_proj.{p}", _HF_BLOCK + ".self_attn.out_proj.{p}"),
    (_VIT_BLOCK + ".ln_1.{p}", _HF_BLOCK + ".layer_norm1.{p}"),
    (_VIT_BLOCK + ".ln_2.{p}", _HF_BLOCK + ".layer_norm2.{p}"),
    (_VIT_BLOCK + ".mlp.c_fc.{p}", _HF_BLOCK + ".mlp.fc1.{p}"),
    (_VIT_BLOCK + ".mlp.c_proj.{p}", _HF_BLOCK + ".mlp.fc2.{p}"),
]
# ours is used as ``x @ P``, Hugging Face's as a Linear weight: the same matrix transposed
_TRANSPOSED: list[tuple[str, str]] = [
    ("text_projection", "text_projection.weight"),
    ("visual.proj", "visual_projection.weight"),
]
_FUSED_QKV = (_VIT_BLOCK + ".attn.in_proj_{p}", _HF_BLOCK + ".self_attn.{qkv}_proj.{p}")
# Hugging Face buffers and heads that carry no weights of ours
_HF_IGNORED = re.compile(r"(.*\.position_ids|.*\.token_type_ids|text_model\.pooler\..*)$")

_GROUPS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "rest": r"(?P<rest>.+)", "qkv": r"(?P<qkv>[qkv])"}


def _regex(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for name, group in _GROUPS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), group)
    return re.compile(pattern + "$")


def _compile(pairs: list[tuple[str, str]], reverse: bool) -> list[tuple[re.Pattern[str], str]]:
    return [(_regex(hf if reverse else ours), ours if reverse else hf) for ours, hf in pairs]


def to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official (ViT) keys -> ``ChineseCLIPModel`` keys. RN50 has no Hugging Face counterpart."""
    if any(key.startswith("visual.attnpool.") for key in state_dict):
        raise ValueError("Hugging Face ChineseCLIPModel has no ResNet image tower; RN50 cannot be converted")
    renames, transposed = _compile(_RENAMES, False), _compile(_TRANSPOSED, False)
    fused = _regex(_FUSED_QKV[0])
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if match := fused.match(key):
            for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[_FUSED_QKV[1].format(qkv=name, **match.groupdict())] = part.clone()
        elif target := _apply(transposed, key):
            out[target] = value.t().contiguous()
        else:
            out[_apply(renames, key) or key] = value
    return out


def from_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``ChineseCLIPModel`` keys -> official keys. Unknown keys pass through so strict loading names them."""
    renames, transposed = _compile(_RENAMES, True), _compile(_TRANSPOSED, True)
    fused = _regex(_FUSED_QKV[1])
    parts: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if _HF_IGNORED.match(key):
            continue
        if match := fused.match(key):
            groups = match.groupdict()
            parts.setdefault(_FUSED_QKV[0].format(i=groups["i"], p=groups["p"]), {})[groups["qkv"]] = value
        elif target := _apply(transposed, key):
            out[target] = value.t().contiguous()
        else:
            out[_apply(renames, key) or key] = value
    for key, qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:
            missing = sorted({"q", "k", "v"} - set(qkv))
            raise ValueError(f"Hugging Face checkpoint lacks the {'/'.join(missing)} projection for {key}")
        out[key] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out


def _apply(rules: list[tuple[re.Pattern[str], str]], key: str) -> str | None:
    for pattern, target in rules:
        if match := pattern.match(key):
            return target.format(**match.groupdict())
    return None


def hf_config_dict(config: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` of a ``ChineseCLIPModel`` equal to ``config`` (overriding HF's BERT/ViT-B-32 defaults)."""
    if isinstance(config.vision, ResNetConfig):
        raise ValueError("Hugging Face ChineseCLIPModel has no ResNet image tower; RN50 cannot be converted")
    text, vision = config.text, config.vision
    return {
        "architectures": ["ChineseCLIPModel"],
        "model_type": "chinese_clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": 2.6592,
        "text_config": {"model_type": "chinese_clip_text_model", **bert_text_config(text), "pad_token_id": 0},
        "vision_config": {
            "model_type": "chinese_clip_vision_model",
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


def bert_text_config(text: TextConfig) -> dict[str, Any]:
    """The BERT-encoder fields of a Hugging Face text config (Chinese-CLIP, ALIGN and AltCLIP's XLM-R share
    them); each family adds its model type and special token ids."""
    return {
        "vocab_size": text.vocab_size,
        "hidden_size": text.hidden_size,
        "num_hidden_layers": text.num_layers,
        "num_attention_heads": text.num_heads,
        "intermediate_size": text.intermediate_size,
        "max_position_embeddings": text.max_position_embeddings,
        "type_vocab_size": text.type_vocab_size,
        "hidden_act": "gelu",
        "layer_norm_eps": text.layer_norm_eps,
        "hidden_dropout_prob": text.hidden_dropout,
        "attention_probs_dropout_prob": text.attention_dropout,
    }

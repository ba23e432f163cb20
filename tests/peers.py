"""Test-only peers: the official ``cn_clip`` and Hugging Face ``ChineseCLIPModel``, built offline on random weights.

``cn_clip`` imports ``torchvision``, whose PyPI build fails to load beside the CPU torch here
(``operator torchvision::nms does not exist``, raised by its ``__init__``). Its transforms are pure
Python, so a bare package module with the real ``__path__``/``__spec__`` is registered instead of
running that ``__init__``; ``torchvision.transforms`` then imports from the installed tree.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.metadata
import io
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from training.models import CLIP, ModelConfig, ResNetConfig, build_model

# torchvision lives outside site-packages (`make venv` installs it there, without deps) so that nothing
# else, transformers included, finds it and runs its failing __init__
TORCHVISION_DIR = Path(sys.prefix) / "peers"


def import_cn_clip() -> types.ModuleType:
    """The official ``cn_clip.clip`` package, importable beside CPU torch."""
    if "torchvision" not in sys.modules:
        spec = importlib.machinery.PathFinder.find_spec("torchvision", [str(TORCHVISION_DIR)])
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(
                f"torchvision's Python sources are missing from {TORCHVISION_DIR}; the cn_clip peer needs them: "
                f"pip install --no-deps --target {TORCHVISION_DIR} torchvision==0.28.0 (as `make venv` does)"
            )
        bare = types.ModuleType("torchvision")
        bare.__path__ = list(spec.submodule_search_locations)
        bare.__spec__ = spec
        bare.__file__ = spec.origin
        # libraries that probe for torchvision (transformers) read its version
        bare.__version__ = _peer_version()
        sys.modules["torchvision"] = bare
    return importlib.import_module("cn_clip.clip")


def _peer_version() -> str:
    found = list(importlib.metadata.distributions(name="torchvision", path=[str(TORCHVISION_DIR)]))
    return found[0].version if found else "0.0"


def official_struct(config: ModelConfig) -> dict[str, Any]:
    """``config`` as the keyword arguments of ``cn_clip.clip.model.CLIP``."""
    vision, text = config.vision, config.text
    return {
        "embed_dim": config.embed_dim,
        "image_resolution": vision.image_resolution,
        "vision_layers": list(vision.layers) if isinstance(vision, ResNetConfig) else vision.layers,
        "vision_width": vision.width,
        "vision_patch_size": None if isinstance(vision, ResNetConfig) else vision.patch_size,
        "vision_head_width": vision.head_width,
        "vocab_size": text.vocab_size,
        "text_attention_probs_dropout_prob": text.attention_dropout,
        "text_hidden_act": "gelu",
        "text_hidden_dropout_prob": text.hidden_dropout,
        "text_hidden_size": text.hidden_size,
        "text_initializer_range": 0.02,
        "text_intermediate_size": text.intermediate_size,
        "text_max_position_embeddings": text.max_position_embeddings,
        "text_num_attention_heads": text.num_heads,
        "text_num_hidden_layers": text.num_layers,
        "text_type_vocab_size": text.type_vocab_size,
    }


_RELEASED_STRUCTS = {
    "RN50": "RN50@RBT3-chinese",
    "ViT-B-16": "ViT-B-16@RoBERTa-wwm-ext-base-chinese",
    "ViT-L-14": "ViT-L-14@RoBERTa-wwm-ext-base-chinese",
    "ViT-L-14-336": "ViT-L-14-336@RoBERTa-wwm-ext-base-chinese",
    "ViT-H-14": "ViT-H-14@RoBERTa-wwm-ext-large-chinese",
}


def official_model(
    config: ModelConfig, state_dict: Mapping[str, torch.Tensor] | None = None
) -> torch.nn.Module:
    """An official ``cn_clip`` model of the same size, fp32, eval mode; random weights unless ``state_dict``.

    Released sizes come from the official ``create_model(struct)`` (its own JSON configs, so the test also
    checks ours agree); tiny sizes from its ``CLIP`` class with our sizes.
    """
    cn_clip = import_cn_clip()
    from cn_clip.clip.model import CLIP as OfficialCLIP
    from cn_clip.clip.utils import create_model

    device = torch.device("meta") if state_dict is not None else torch.get_default_device()
    with contextlib.redirect_stdout(io.StringIO()), device:  # create_model prints its config
        if config.name in _RELEASED_STRUCTS:
            model = create_model(_RELEASED_STRUCTS[config.name])
        else:
            model = OfficialCLIP(**official_struct(config), tokenizer=cn_clip._tokenizer)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True, assign=True)
    return model.float().eval()


def hf_model(config: ModelConfig, state_dict: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """A ``transformers.ChineseCLIPModel`` of the same size (ViT only), eval mode; random weights unless
    ``state_dict`` (in Hugging Face's names)."""
    from transformers import ChineseCLIPConfig, ChineseCLIPModel
    from transformers.initialization import no_init_weights

    from training.checkpoints import hf_config_dict

    hf = hf_config_dict(config)
    hf_config = ChineseCLIPConfig(
        text_config=hf["text_config"], vision_config=hf["vision_config"], projection_dim=hf["projection_dim"]
    )
    if state_dict is None:
        return ChineseCLIPModel(hf_config).eval()
    with no_init_weights():  # every weight is overwritten below
        model = ChineseCLIPModel(hf_config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def random_state_dict(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A distinct random value for every tensor of ``model`` (which may be on the meta device), so a
    swapped or skipped weight shows up.

    Norm scales (and BatchNorm variances) stay near 1 and the rest near the usual init scale, so the
    activations of deep towers stay finite; BatchNorm's counters keep their value.
    """
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            out[key] = torch.zeros(tensor.shape, dtype=tensor.dtype)
            continue
        noise = torch.randn(tensor.shape, generator=generator)
        if key.endswith("running_var"):
            out[key] = 1.0 + 0.1 * noise.abs()
        elif _is_norm(key) and key.endswith(".weight"):
            out[key] = 1.0 + 0.1 * noise
        elif key.endswith("running_mean") or (_is_norm(key) and key.endswith(".bias")):
            out[key] = 0.1 * noise
        elif key == "logit_scale":
            out[key] = torch.tensor(4.6052)
        else:
            fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
            out[key] = noise * (0.02 if tensor.dim() == 1 else fan_in**-0.5)
    return out


def random_model(name: str, seed: int = 0) -> CLIP:
    """Our model ``name`` in eval mode with ``random_state_dict`` weights."""
    with torch.device("meta"):
        model = build_model(name)
    model.load_state_dict(random_state_dict(model, seed), strict=True, assign=True)
    return model.eval()


def _is_norm(key: str) -> bool:
    module = key.rsplit(".", 2)[-2] if key.count(".") >= 1 else key
    return module.startswith(("ln_", "bn", "LayerNorm")) or (module == "1" and ".downsample." in key)

"""Which model size a state dict belongs to, from its keys and shapes alone."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import torch

from training.checkpoints.state_dicts import CheckpointError, compare, expected_shapes
from training.models import build_model, list_models


@cache
def model_shapes(name: str) -> dict[str, torch.Size]:
    with torch.device("meta"):  # no memory, even for ViT-H
        return expected_shapes(build_model(name))


def detect_arch(state_dict: Mapping[str, torch.Tensor], source: str) -> str:
    """The one model whose keys and shapes equal ``state_dict``'s; otherwise name the closest and its differences."""
    scored = [(compare(state_dict, model_shapes(name)), name) for name in list_models()]
    exact = [name for mismatch, name in scored if not mismatch]
    if len(exact) == 1:
        return exact[0]
    if exact:
        raise CheckpointError(f"{source} fits several models ({', '.join(exact)}); pass the arch explicitly")
    mismatch, closest = min(scored, key=lambda item: item[0].size)
    raise CheckpointError(
        f"{source} matches none of the known models ({', '.join(list_models())}). "
        f"Closest is {closest}: {mismatch.describe()}. "
        "Check the file is a Chinese-CLIP checkpoint, or pass the arch it was trained with."
    )

"""AdamW with weight decay only on weight matrices, and a linear-warmup + cosine schedule.

Which parameters decay is decided by what they are, not by their names: the weights of layers that
multiply (Linear, convolutions, the fused attention input projection) and the towers' output projections
decay; biases, normalisation parameters, embedding tables (token/position/type embeddings, the ViT class and
positional embeddings, the attention-pool positional embedding) and the temperature do not. (The official
name-substring rule leaves BERT LayerNorms and the ViT embeddings decaying.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_EMBEDDING_ATTRIBUTES = (
    "class_embedding",
    "positional_embedding",
)  # raw parameters a tower adds to activations


def no_decay_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the trainable parameters that must not get weight decay."""
    skip: set[int] = set()
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if isinstance(module, (*_NORMS, nn.Embedding)):
            skip.update(id(p) for p in own.values())
            continue
        for attribute in _EMBEDDING_ATTRIBUTES:
            value = getattr(module, attribute, None)
            if isinstance(value, nn.Parameter):
                skip.add(id(value))
        skip.update(id(p) for p in own.values() if p.ndim < 2)  # biases, logit_scale, norm-like vectors
    return skip


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the parameters that require grad (frozen ones get no optimizer state)."""
    skip = no_decay_parameter_ids(model)
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if id(param) in skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    device: torch.device,
) -> torch.optim.AdamW:
    fused = device.type == "cuda"  # the fused kernel is the fast path on CUDA; CPU keeps the default
    return torch.optim.AdamW(
        parameter_groups(model, weight_decay),
        lr=lr,
        betas=betas,
        eps=eps,
        fused=fused or None,
        foreach=not fused,
    )


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear from 1/warmup to 1 over warmup, then cosine down to 0 at total."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps)
    )

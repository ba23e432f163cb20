"""Symmetric InfoNCE over features gathered from every rank.

Each rank computes the loss over the whole global batch (local features first in the gathered matrix, so the
positive pairs of this rank sit on the diagonal offset by rank × local batch). Gathered copies of the other
ranks' features are constants unless `gather_with_grad`, in which case torch.distributed.nn.all_gather sends
gradients back to their ranks.

Gradient scale. Without gather-with-grad each rank's loss holds *every* use of its local features (as rows and
as columns), so the gradient reaching them is the full-batch gradient; DDP then averages over ranks, which
would leave the towers with 1/world of it. `scale_local_gradients` multiplies the local features' gradient by
the world size so that, after DDP's average, the towers receive exactly the single-process full-batch
gradient, while logit_scale (whose gradient is already complete on every rank) is left untouched. With
gather-with-grad the all_gather backward sums the contributions of all ranks and no scaling is needed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn as dist_nn
import torch.nn.functional as F


def gather_features(
    local: torch.Tensor, rank: int, world_size: int, *, with_grad: bool = False
) -> torch.Tensor:
    """Concatenate features from all ranks with this rank's own (graph-connected) features first."""
    if world_size == 1:
        return local
    if with_grad:
        shards = list(dist_nn.all_gather(local))
    else:
        shards = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(shards, local.detach())
        shards[rank] = local
    order = [rank] + [r for r in range(world_size) if r != rank]
    return torch.cat([shards[r] for r in order], dim=0)


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor,
    *,
    rank: int = 0,
    world_size: int = 1,
    gather_with_grad: bool = False,
) -> torch.Tensor:
    """Mean of image→text and text→image cross-entropy on L2-normalised features.

    ``scale`` multiplies the cosine similarities as it is: pass the model's ``logit_scale.exp()`` (the
    model's forward already returns it exponentiated), not the learned log-temperature itself.
    """
    if world_size > 1 and not gather_with_grad and torch.is_grad_enabled():
        image_features = _scale_grad(image_features, float(world_size))
        text_features = _scale_grad(text_features, float(world_size))
    all_images = gather_features(image_features, rank, world_size, with_grad=gather_with_grad)
    all_texts = gather_features(text_features, rank, world_size, with_grad=gather_with_grad)
    logits_per_image = scale * all_images @ all_texts.t()
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels)) / 2


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None


def _scale_grad(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by `factor` (see the module docstring)."""
    return _ScaleGrad.apply(tensor, factor)

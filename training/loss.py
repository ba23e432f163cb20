"""Contrastive losses over features gathered from every rank, and AltCLIP's teacher-learning loss.

Each rank computes the loss over the whole global batch (local features first in the gathered matrix, so the
positive pairs of this rank sit on the diagonal offset by rank × local batch). Gathered copies of the other
ranks' features are constants unless `gather_with_grad`, in which case torch.distributed.nn.all_gather sends
gradients back to their ranks.

Gradient scale. Without gather-with-grad each rank's loss holds *every* use of its local features (as rows and
as columns), so the gradient reaching them is the full-batch gradient; DDP then averages over ranks, which
would leave the towers with 1/world of it. `_scale_grad` multiplies the local features' gradient by
the world size so that, after DDP's average, the towers receive exactly the single-process full-batch
gradient, while logit_scale (whose gradient is already complete on every rank) is left untouched. With
gather-with-grad the all_gather backward sums the contributions of all ranks and no scaling is needed.

A training config's `loss` picks one of three; the two contrastive ones share that machinery
(`gathered_similarities`):

- `clip_loss` ("infonce"): Chinese-CLIP / CLIP / AltCLIP — cross-entropy over cosine × an exponentiated scale;
- `align_loss` ("align"): ALIGN — cosine / a raw temperature, label smoothing 0.1 in both directions, as
  Hugging Face's `AlignModel` computes it;
- `teacher_mse_loss` ("teacher-mse"): AltCLIP's teacher learning. Per-sample, so it needs no gather: each rank
  takes the mean over its shard and DDP's gradient average over equal shards is the full-batch mean.
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


def gathered_similarities(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *,
    rank: int = 0,
    world_size: int = 1,
    gather_with_grad: bool = False,
) -> torch.Tensor:
    """Cosine similarities [global batch, global batch] of L2-normalised features, this rank's rows first.

    The one place that gathers for a contrastive loss, including the world-size gradient scaling (see the module
    docstring), so every contrastive loss built on it matches one process on the whole batch.
    """
    if world_size > 1 and not gather_with_grad and torch.is_grad_enabled():
        image_features = _scale_grad(image_features, float(world_size))
        text_features = _scale_grad(text_features, float(world_size))
    all_images = gather_features(image_features, rank, world_size, with_grad=gather_with_grad)
    all_texts = gather_features(text_features, rank, world_size, with_grad=gather_with_grad)
    return all_images @ all_texts.t()


def symmetric_cross_entropy(logits_per_image: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean of image→text and text→image cross-entropy; the positives are on the diagonal."""
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    image_to_text = F.cross_entropy(logits_per_image, labels, label_smoothing=label_smoothing)
    text_to_image = F.cross_entropy(logits_per_image.t(), labels, label_smoothing=label_smoothing)
    return (image_to_text + text_to_image) / 2


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
    similarities = gathered_similarities(
        image_features, text_features, rank=rank, world_size=world_size, gather_with_grad=gather_with_grad
    )
    return symmetric_cross_entropy(scale * similarities)


ALIGN_LABEL_SMOOTHING = 0.1  # Jia et al. 2021, and Hugging Face's AlignModel loss


def align_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    temperature: torch.Tensor,
    *,
    label_smoothing: float = ALIGN_LABEL_SMOOTHING,
    rank: int = 0,
    world_size: int = 1,
    gather_with_grad: bool = False,
) -> torch.Tensor:
    """ALIGN's normalised softmax loss: logits = cosine / ``temperature`` (the raw learned parameter, not
    exponentiated), cross-entropy with label smoothing in both directions."""
    similarities = gathered_similarities(
        image_features, text_features, rank=rank, world_size=world_size, gather_with_grad=gather_with_grad
    )
    return symmetric_cross_entropy(similarities / temperature, label_smoothing)


def teacher_mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """AltCLIP teacher learning: mean squared error between the student's ``<s>`` feature (after
    ``transformation``, before ``text_projection``) and the frozen teacher's pooled text feature."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student features {tuple(student.shape)} and teacher features {tuple(teacher.shape)} differ: "
            "the student's project_dim must equal the teacher text tower's width"
        )
    return F.mse_loss(student, teacher.detach())


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

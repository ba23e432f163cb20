"""The contrastive loss on one process: its value against a direct computation, and its symmetry."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.loss import clip_loss


def _features(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(
        torch.randn(n, d, generator=g), dim=-1
    )


def test_matches_a_direct_computation():
    images, texts = _features(6, 8, 0)
    scale = torch.tensor(10.0)
    logits = scale * images @ texts.t()
    expected = 0
    for i in range(6):  # per row: -log softmax at the diagonal, both directions
        expected += -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
    assert torch.allclose(clip_loss(images, texts, scale), expected / 12, atol=1e-6)


def test_perfectly_aligned_features_give_a_low_loss_and_random_ones_about_log_n():
    images, texts = _features(64, 512, 1)
    assert clip_loss(images, images, torch.tensor(100.0)) < 1e-3
    assert abs(clip_loss(images, texts, torch.tensor(1.0)).item() - math.log(64)) < 0.05


def test_swapping_the_towers_gives_the_same_loss():
    images, texts = _features(5, 4, 2)
    scale = torch.tensor(3.0)
    assert torch.allclose(clip_loss(images, texts, scale), clip_loss(texts, images, scale))

"""The losses of the three recipes on one process: ALIGN's against Hugging Face's, teacher MSE by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.loss import align_loss, clip_loss, symmetric_cross_entropy, teacher_mse_loss


def _features(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        F.normalize(torch.randn(n, d, generator=g), dim=-1),
        F.normalize(torch.randn(n, d, generator=g), dim=-1),
    )


@pytest.mark.parametrize("temperature", [1.0, 0.37, 0.05])
def test_align_loss_equals_hugging_face_align_model_loss(temperature):
    modeling_align = pytest.importorskip("transformers.models.align.modeling_align")
    images, texts = _features(7, 16, 0)
    t = torch.tensor(temperature)
    # AlignModel.forward: logits_per_text = text_embeds @ image_embeds.T / temperature; loss = align_loss(...)
    reference = modeling_align.align_loss(texts @ images.t() / t)
    assert torch.allclose(align_loss(images, texts, t), reference, atol=1e-6, rtol=0)


def test_align_loss_uses_label_smoothing_and_a_raw_temperature():
    images, texts = _features(6, 8, 1)
    t = torch.tensor(0.2)
    plain = symmetric_cross_entropy(images @ texts.t() / t)
    assert not torch.allclose(align_loss(images, texts, t), plain)
    assert torch.allclose(align_loss(images, texts, t, label_smoothing=0.0), plain)
    # InfoNCE with scale 1 / t is the same logits without smoothing: the losses differ only by the smoothing
    assert torch.allclose(clip_loss(images, texts, 1 / t), plain, atol=1e-6)


def test_the_temperature_gets_a_gradient():
    images, texts = _features(5, 4, 2)
    t = torch.tensor(0.5, requires_grad=True)
    align_loss(images, texts, t).backward()
    assert t.grad is not None and t.grad.abs() > 0


def test_teacher_mse_equals_a_direct_computation():
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    teacher = torch.tensor([[1.5, 2.0, 1.0], [1.0, -1.0, -0.5]])
    # squared differences: 0.25, 0, 4, 1, 0, 1 -> mean 6.25 / 6
    assert teacher_mse_loss(student, teacher).item() == pytest.approx(6.25 / 6, abs=1e-7)


def test_teacher_mse_sends_no_gradient_to_the_teacher_and_names_a_width_mismatch():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    teacher_mse_loss(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None
    with pytest.raises(ValueError, match="project_dim"):
        teacher_mse_loss(torch.randn(3, 4), torch.randn(3, 5))

"""The parts of a stage that differ by recipe: what is frozen, AltCLIP's teacher, EfficientNet's BatchNorm.

- Chinese-CLIP stage 1 / AltCLIP contrastive stage: the image tower frozen (no gradients, no optimizer
  state, eval mode). AltCLIP's stage 2 trains the text side to fit CLIP's image encoder, as its model card
  describes, so its config freezes the image tower too.
- AltCLIP teacher learning: only the student — XLM-R + ``pre_LN`` + ``transformation`` (``model.text``) —
  trains; the teacher is another model, frozen, in eval mode, under no_grad, never in the optimizer.
- ALIGN: Hugging Face builds EfficientNet's BatchNorm with TensorFlow's momentum (0.99), which PyTorch reads
  as the weight of the *new* batch. Training either converts it (``"train"``: momentum 1 − 0.99 = 0.01 on
  every BatchNorm of the tower, as TF EfficientNet uses one momentum throughout) or keeps the statistics
  fixed (``"frozen"``: BatchNorm in eval mode; its affine parameters still train).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from training.models import ALIGN, CLIP, AltCLIP
from training.models.efficientnet import EfficientNet

BatchNormMode = Literal["train", "frozen"]


def freeze(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(False)


def freeze_all_but_student(model: AltCLIP) -> nn.Module:
    """Teacher learning: everything but the XLM-R student frozen; returns the student (the module DDP wraps)."""
    freeze(model)
    for param in model.text.parameters():
        param.requires_grad_(True)
    return model.text


def load_teacher(path: Path, device: torch.device) -> CLIP:
    """A Chinese-CLIP / CLIP checkpoint whose text tower teaches: frozen, eval mode (dropout off)."""
    from training.checkpoints import load_checkpoint

    teacher = load_checkpoint(path).model
    if not isinstance(teacher, CLIP):
        raise ValueError(
            f"init.teacher {path} is a {teacher.family} model; the teacher must be a Chinese-CLIP/CLIP "
            "checkpoint (its BERT text tower's [CLS] output is the target)"
        )
    freeze(teacher)
    return teacher.eval().to(device)


@torch.no_grad()
def teacher_features(teacher: CLIP, input_ids: torch.Tensor) -> torch.Tensor:
    """The teacher's pooled text output, before text_projection: [CLS]'s last hidden state (Chinese-CLIP's
    text feature is that row times text_projection)."""
    return teacher.bert(input_ids, input_ids != 0)[:, 0]  # [PAD] is id 0


def student_features(student: nn.Module, input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """AltCLIP's ``<s>`` feature after ``pre_LN`` and ``transformation``, before ``text_projection``."""
    return student(input_ids, input_ids != pad_id)


@torch.no_grad()
def init_from_teacher(model: AltCLIP, teacher: CLIP) -> None:
    """AltCLIP keeps CLIP's image tower and text projection and only alters the text encoder: copy them, so
    that the student, trained to reproduce the teacher's pooled output, lands in CLIP's embedding space."""
    if model.config.project_dim != teacher.config.text.hidden_size:
        raise ValueError(
            f"{model.config.name}'s project_dim {model.config.project_dim} must equal the teacher's text width "
            f"{teacher.config.text.hidden_size} ({teacher.config.name}): pick an AltCLIP size that matches"
        )
    try:
        model.visual.load_state_dict(teacher.visual.state_dict())
    except RuntimeError as error:
        raise ValueError(
            f"{model.config.name}'s image tower does not match the teacher's ({teacher.config.name}): its vision "
            f"config and embed_dim must equal the teacher's ({error})"
        ) from None
    model.text_projection.weight.copy_(teacher.text_projection.t())  # CLIP: x @ P; Linear: x @ W.T
    model.logit_scale.copy_(teacher.logit_scale)


def configure_batchnorm(model: nn.Module) -> None:
    """Give an EfficientNet image tower's BatchNorm PyTorch's momentum convention (1 − the TF value)."""
    visual = getattr(model, "visual", None)
    if isinstance(visual, EfficientNet):
        momentum = 1.0 - visual.config.batch_norm_momentum
        for module in visual.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum


@torch.no_grad()
def recalibrate_batchnorm(visual: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Precise BatchNorm: replace the running statistics by their exact average over ``batches`` under the
    final weights. With momentum 0.01 the running statistics average the last ~100 steps' weights, which a
    short from-scratch run has moved far past; long runs (and TF's) do not need this. Returns the batches used."""
    norms = [m for m in visual.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training, momenta = visual.training, [m.momentum for m in norms]
    visual.eval()  # stochastic depth and dropout off: only the statistics are being measured
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    used = 0
    for pixels in batches:
        visual(pixels)
        used += 1
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    visual.train(was_training)
    return used


def set_train_mode(model: nn.Module, *, image_tower_frozen: bool, batchnorm: BatchNormMode) -> None:
    """Train mode, except what must not move: a frozen tower (dropout, BatchNorm statistics) and, when
    frozen, the image tower's BatchNorm statistics."""
    model.train()
    if image_tower_frozen:
        model.visual.eval()
    elif batchnorm == "frozen":
        for module in model.visual.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def check_recipe(model: nn.Module, loss: str) -> None:
    """The loss a config names must fit the model family the arch names."""
    if loss == "teacher-mse" and not isinstance(model, AltCLIP):
        raise ValueError(
            f"loss teacher-mse trains an AltCLIP student, but arch {model.config.name} is {model.family}: "
            "use an AltCLIP arch (training/configs/altclip-teacher.yaml)"
        )
    if loss == "align" and not isinstance(model, ALIGN):
        raise ValueError(
            f"loss align divides by ALIGN's raw temperature, but arch {model.config.name} is {model.family}: "
            "use an ALIGN arch, or loss infonce"
        )

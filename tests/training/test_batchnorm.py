"""EfficientNet's BatchNorm in ALIGN training: Hugging Face's TF-style momentum (0.99) is converted to PyTorch's
0.01, so after a step the running statistics moved by 1% toward the batch's; frozen, they do not move."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_data import tiny_config, write_tiny_dataset

from training.loss import align_loss
from training.models import build_model
from training.stages import configure_batchnorm, recalibrate_batchnorm, set_train_mode
from training.train import build_initial_model, train


def _model():
    torch.manual_seed(0)
    return build_model("tiny-align")


def _stem_batch_statistics(model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stem BatchNorm's input statistics, computed directly: mean and unbiased variance per channel."""
    stem = model.visual.embeddings
    with torch.no_grad():
        x = stem.convolution(stem.padding(pixels))
    return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=True)


def _training_step(model, pixels: torch.Tensor, ids: torch.Tensor) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    image_features, text_features, _ = model(pixels, ids)
    align_loss(image_features, text_features, model.temperature).backward()
    optimizer.step()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 2000, (4, 8), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return torch.randn(4, 3, 32, 32, generator=g) * 2 + 0.5, ids


def test_as_built_the_momentum_is_tensorflows_and_training_converts_it():
    model = _model()
    norm = model.visual.embeddings.batchnorm
    assert norm.momentum == pytest.approx(0.99)  # Hugging Face's module, as loaded
    configure_batchnorm(model)
    momenta = {m.momentum for m in model.visual.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert len(momenta) == 1 and momenta.pop() == pytest.approx(0.01)  # the expansion BN's 0.1 too


def test_a_training_step_moves_the_running_statistics_by_the_pytorch_momentum():
    model = _model()
    configure_batchnorm(model)
    set_train_mode(model, image_tower_frozen=False, batchnorm="train")
    norm = model.visual.embeddings.batchnorm
    pixels, ids = _batch()
    old_mean, old_var = norm.running_mean.clone(), norm.running_var.clone()
    batch_mean, batch_var = _stem_batch_statistics(model, pixels)
    _training_step(model, pixels, ids)
    # PyTorch: running = (1 - momentum) * running + momentum * batch; TF's 0.99 would be 0.01 * running + ...
    assert torch.allclose(norm.running_mean, 0.99 * old_mean + 0.01 * batch_mean, atol=1e-6)
    assert torch.allclose(norm.running_var, 0.99 * old_var + 0.01 * batch_var, atol=1e-5)
    assert not torch.allclose(norm.running_mean, 0.01 * old_mean + 0.99 * batch_mean, atol=1e-3)


def test_frozen_batchnorm_keeps_the_running_statistics_while_the_tower_trains():
    model = _model()
    configure_batchnorm(model)
    set_train_mode(model, image_tower_frozen=False, batchnorm="frozen")
    before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    _training_step(model, *_batch())
    after = model.visual.state_dict()
    statistics = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(before[k], after[k]) for k in statistics)
    assert not torch.equal(before["embeddings.convolution.weight"], after["embeddings.convolution.weight"])
    # eval-mode BatchNorm normalises with the running statistics
    norm = model.visual.embeddings.batchnorm
    x = torch.randn(2, norm.num_features, 3, 3)
    expected = F.batch_norm(
        x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps
    )
    assert torch.allclose(norm(x), expected)


def test_recalibration_replaces_the_running_statistics_by_the_batches_own():
    model = _model()
    configure_batchnorm(model)
    model.train()
    pixels, _ = _batch()
    batch_mean, batch_var = _stem_batch_statistics(model, pixels)
    assert recalibrate_batchnorm(model.visual, [pixels]) == 1
    norm = model.visual.embeddings.batchnorm
    assert torch.allclose(norm.running_mean, batch_mean, atol=1e-6)
    assert torch.allclose(norm.running_var, batch_var, atol=1e-5)
    assert norm.momentum == pytest.approx(0.01) and model.visual.training  # restored


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["train", "frozen"])
def test_the_trainer_applies_the_configured_batchnorm_mode(tmp_path, mode):
    data = write_tiny_dataset(tmp_path / "data")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "一", "张", "的", "图", "片",
                                "红", "绿", "蓝", "黄", "色"]) + "\n", encoding="utf-8")  # fmt: skip
    config = tiny_config(
        data, tmp_path / mode, arch="tiny-align", loss="align", tokenizer=vocab, image_batchnorm=mode,
        max_steps=2, cpu_threads=1,
    )  # fmt: skip
    before = build_initial_model(config).visual.state_dict()
    result = train(config)
    from training.checkpoints import load_checkpoint

    after = load_checkpoint(result.checkpoint, arch="tiny-align").model.visual.state_dict()
    moved = [k for k in before if k.endswith("running_mean") and not torch.equal(before[k], after[k])]
    assert (len(moved) > 0) == (mode == "train")

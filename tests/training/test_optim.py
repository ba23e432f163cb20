"""Weight-decay grouping by parameter kind, and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from training.models import build_model
from training.optim import (
    build_optimizer,
    build_scheduler,
    no_decay_parameter_ids,
    parameter_groups,
    warmup_cosine,
)


@pytest.mark.parametrize("arch", ["tiny-vit", "tiny-rn"])
def test_only_weight_matrices_decay(arch):
    model = build_model(arch)
    skip = no_decay_parameter_ids(model)
    decayed = {name for name, p in model.named_parameters() if id(p) not in skip}
    kept = {name for name, p in model.named_parameters() if id(p) in skip}
    for name in decayed:  # every decayed parameter is a multiplying weight matrix or a projection
        assert name.endswith(("weight", "proj", "text_projection")), name
        assert "LayerNorm" not in name and "ln_" not in name and "bn" not in name and "embeddings" not in name
    assert "logit_scale" in kept and "text_projection" in decayed
    assert "bert.embeddings.word_embeddings.weight" in kept
    assert "bert.embeddings.position_embeddings.weight" in kept
    assert "bert.encoder.layer.0.attention.output.LayerNorm.weight" in kept
    assert all(name in kept for name, _ in model.named_parameters() if name.endswith("bias"))
    if arch == "tiny-vit":
        assert {"visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight"} <= kept
        assert {
            "visual.proj",
            "visual.conv1.weight",
            "visual.transformer.resblocks.0.attn.in_proj_weight",
        } <= decayed
    else:
        assert {"visual.bn1.weight", "visual.attnpool.positional_embedding"} <= kept
        assert {"visual.conv1.weight", "visual.attnpool.q_proj.weight"} <= decayed


def test_frozen_parameters_get_no_optimizer_state():
    model = build_model("tiny-vit")
    for p in model.visual.parameters():
        p.requires_grad_(False)
    groups = parameter_groups(model, 0.2)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert not in_groups & {id(p) for p in model.visual.parameters()}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    optimizer = build_optimizer(
        model, lr=1e-3, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6, device=torch.device("cpu")
    )
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0]


def test_warmup_then_cosine_to_zero():
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.0, abs=1e-12)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2.0)
    scheduler = build_scheduler(optimizer, 4, 20)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lrs[4] == pytest.approx(2.0) and lrs[12] == pytest.approx(1 + math.cos(math.pi * 8 / 16))

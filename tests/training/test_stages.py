"""Stage 1 leaves the image tower (parameters and BatchNorm statistics) bit-identical; stage 2 trains it."""

from __future__ import annotations

import pytest
import torch
from tiny_data import tiny_config, write_tiny_dataset

from training.checkpoints import load_checkpoint
from training.train import build_initial_model, train


def _visual_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.visual.state_dict().items()}


@pytest.mark.slow
def test_stage_one_freezes_the_image_tower_and_stage_two_trains_it(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    stage1 = tiny_config(data, tmp_path / "stage1", arch="tiny-rn", freeze_image_tower=True, max_steps=3)
    before = build_initial_model(stage1)
    train(stage1)

    after = load_checkpoint(tmp_path / "stage1" / "checkpoint.pt", arch="tiny-rn").model
    visual_before, visual_after = _visual_state(before), _visual_state(after)
    assert any("running_mean" in k for k in visual_before)  # tiny-rn has BatchNorm
    for key, value in visual_before.items():
        assert torch.equal(value, visual_after[key]), key
    assert not torch.equal(
        before.bert.embeddings.word_embeddings.weight, after.bert.embeddings.word_embeddings.weight
    )
    assert not torch.equal(before.text_projection, after.text_projection)
    state = torch.load(tmp_path / "stage1" / "last.pt", weights_only=False)
    n_trainable = sum(1 for name, p in before.named_parameters() if not name.startswith("visual."))
    assert len(state["optimizer"]["state"]) == n_trainable  # no optimizer state for the frozen tower

    stage2 = tiny_config(data, tmp_path / "stage2", arch="tiny-rn", max_steps=2)
    stage2.init.checkpoint = tmp_path / "stage1" / "checkpoint.pt"
    result = train(stage2)
    final = load_checkpoint(result.checkpoint, arch="tiny-rn").model
    visual_final = _visual_state(final)
    changed = [k for k, v in visual_after.items() if not torch.equal(v, visual_final[k])]
    assert "conv1.weight" in changed and any("running_mean" in k for k in changed)
    assert torch.load(tmp_path / "stage2" / "last.pt", weights_only=False)["step"] == 2  # a fresh schedule

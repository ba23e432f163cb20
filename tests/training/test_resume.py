"""Resuming from a mid-run checkpoint continues the same run: the next losses equal the uninterrupted ones."""

from __future__ import annotations

import pytest
import torch
from tiny_data import tiny_config, write_tiny_dataset

from training.checkpoints import load_checkpoint
from training.train import train


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")  # 24 pairs / batch 8 = 3 steps an epoch: resume crosses one
    whole = train(tiny_config(data, tmp_path / "whole", max_steps=6, save_every=2))
    resumed = train(
        tiny_config(data, tmp_path / "resumed", max_steps=6, resume=tmp_path / "whole" / "step-000002.pt")
    )
    assert len(whole.losses) == 6 and len(resumed.losses) == 4
    assert resumed.losses == pytest.approx(whole.losses[2:], abs=1e-6)
    a = load_checkpoint(whole.checkpoint).model.state_dict()
    b = load_checkpoint(resumed.checkpoint).model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_weights_only_checkpoint_cannot_resume(tmp_path):
    from training.checkpointing import load_training_state

    torch.save({"epoch": 0, "step": 1, "name": "x", "state_dict": {}, "config": {}}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="lacks optimizer"):
        load_training_state(tmp_path / "w.pt")


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    from training.checkpointing import atomic_save

    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_gradient_checkpointing_gives_the_same_run(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    settings = {"max_steps": 2, "text_dropout": 0.0, "cpu_threads": 1, "export_weights": False}
    plain = train(tiny_config(data, tmp_path / "plain", **settings))
    checkpointed = train(tiny_config(data, tmp_path / "ckpt", grad_checkpointing=True, **settings))
    assert checkpointed.losses == pytest.approx(plain.losses, abs=1e-6)

"""End-to-end training on the synthetic set (loss falls, held-out recall far above chance), and the CLI
under torchrun with two gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_data import tiny_config, write_tiny_dataset

from training.data.synthetic import write_synthetic_dataset
from training.train import train

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_short_run_lowers_the_loss_and_lifts_recall_well_above_chance(tmp_path):
    data = tmp_path / "data"
    write_synthetic_dataset(data, n_train=640, n_valid=64, n_test=0, captions_per_image=1)
    config = tiny_config(
        data, tmp_path / "run", batch_size=32, max_steps=150, warmup_steps=10, lr=1e-3, text_dropout=0.0,
        cpu_threads=1, log_every=20, data={"root": data, "num_workers": 0, "valid_split": "valid"},
    )  # fmt: skip
    result = train(config)

    first, last = result.losses[0], sum(result.losses[-5:]) / 5
    assert last < first - 1.0, result.losses
    recall = result.evaluation["text_to_image"]
    # most captions match one image in 64: chance R@1/5/10 ≈ 1.6/7.8/15.6 %, mean recall ≈ 8.3 %
    chance = {k: k * 100 / result.evaluation["num_images"] for k in (1, 5, 10)}
    assert recall["r1"] > 3 * chance[1], recall
    assert recall["mean_recall"] > 3 * sum(chance.values()) / 3, recall
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    assert summary["text_to_image"] == recall
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert [row["step"] for row in steps] == [20, 40, 60, 80, 100, 120, 140, 150]
    assert all(row["samples_per_s"] > 0 for row in steps)
    assert log[-1]["valid/text_to_image_r1"] == recall["r1"]
    assert any((tmp_path / "run" / "tensorboard").iterdir())


@pytest.mark.slow
def test_the_cli_under_torchrun_with_two_processes(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    out = tmp_path / "run"
    config = tmp_path / "config.json"
    settings = tiny_config(data, out, max_steps=2, cpu_threads=1).model_dump(mode="json")
    config.write_text(json.dumps(settings))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "training.train", "--config", str(config), "batch_size=4", "name=ddp",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]  # written once: only rank 0 writes
    import torch

    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["name"] == "ddp" and state["config"]["batch_size"] == 4 and "optimizer" not in state
    assert all(key.startswith("module.") for key in state["state_dict"])

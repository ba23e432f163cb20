"""Training configs: YAML files with key=value overrides; every shipped stage config validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from training.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_validates(path):
    config = load_config(path)
    assert config.max_steps > 0 and config.out_dir.name


def test_overrides_are_yaml_values_with_dotted_sections(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("arch: tiny-rn\nlr: 1.0e-3\ndata:\n  root: /data\n")
    config = load_config(
        path, ["lr=2e-4", "data.num_workers=0", "freeze_image_tower=true", "betas=[0.9, 0.99]"]
    )
    assert (config.arch, config.lr, config.data.num_workers) == ("tiny-rn", 2e-4, 0)
    assert (
        config.freeze_image_tower is True
        and config.betas == (0.9, 0.99)
        and config.data.root == Path("/data")
    )


def test_mistakes_are_named():
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["lr"])
    with pytest.raises(ValidationError, match="learning_rate"):
        load_config(None, ["learning_rate=1"])  # unknown keys are errors, not silently ignored
    with pytest.raises(ValidationError, match="warmup_steps"):
        load_config(None, ["max_steps=10", "warmup_steps=20"])

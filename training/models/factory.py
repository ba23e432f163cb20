"""One factory for every size: the JSON files in ``configs/`` are the whole list (open_clip style)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from training.models.clip import CLIP
from training.models.config import ModelConfig

CONFIG_DIR = Path(__file__).parent / "configs"


def list_models() -> list[str]:
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


@cache
def load_model_config(name: str) -> ModelConfig:
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    return ModelConfig.model_validate({"name": name, **json.loads(path.read_text())})


def build_model(name: str) -> CLIP:
    """A randomly initialised model in fp32 on the current default device (``torch.device("meta")`` works)."""
    return CLIP(load_model_config(name))

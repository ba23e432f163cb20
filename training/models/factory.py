"""One factory for every size: the JSON files in ``configs/`` are the whole list (open_clip style)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from training.models.align import ALIGN, AlignConfig
from training.models.altclip import AltCLIP
from training.models.altclip_config import AltCLIPConfig
from training.models.clip import CLIP
from training.models.config import ModelConfig

CONFIG_DIR = Path(__file__).parent / "configs"
# a JSON's "family" key picks its schema and model class; without the key it is Chinese-CLIP
_FAMILIES: dict[
    str,
    tuple[
        type[ModelConfig] | type[AltCLIPConfig] | type[AlignConfig], type[CLIP] | type[AltCLIP] | type[ALIGN]
    ],
] = {
    "chinese-clip": (ModelConfig, CLIP),
    "altclip": (AltCLIPConfig, AltCLIP),
    "align": (AlignConfig, ALIGN),
}


def list_models() -> list[str]:
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


@cache
def load_model_config(name: str) -> ModelConfig | AltCLIPConfig | AlignConfig:
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    raw = json.loads(path.read_text())
    family = raw.get("family", "chinese-clip")
    if family not in _FAMILIES:
        raise ValueError(f"{path}: unknown family {family!r}; use one of {', '.join(_FAMILIES)}")
    return _FAMILIES[family][0].model_validate({"name": name, **raw})


def build_model(name: str) -> CLIP | AltCLIP | ALIGN:
    """A randomly initialised model in fp32 on the current default device (``torch.device("meta")`` works)."""
    return model_from_config(load_model_config(name))


def model_from_config(config: ModelConfig | AltCLIPConfig | AlignConfig) -> CLIP | AltCLIP | ALIGN:
    """The model class of ``config.family``, built from a (possibly modified) config."""
    return _FAMILIES[config.family][1](config)  # type: ignore[arg-type]  # the family fixes the config type

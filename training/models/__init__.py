"""The Chinese-CLIP model family: ViT / ModifiedResNet image towers, BERT text towers, one factory."""

from training.models.clip import CLIP
from training.models.config import ModelConfig, ResNetConfig, TextConfig, ViTConfig
from training.models.factory import build_model, list_models, load_model_config

__all__ = [
    "CLIP",
    "ModelConfig",
    "ResNetConfig",
    "TextConfig",
    "ViTConfig",
    "build_model",
    "list_models",
    "load_model_config",
]

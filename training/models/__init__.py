"""The model families (Chinese-CLIP: ViT / ModifiedResNet + BERT; AltCLIP: ViT + XLM-R; ALIGN: EfficientNet + BERT), one factory."""

from training.models.align import ALIGN, AlignConfig
from training.models.altclip import AltCLIP
from training.models.altclip_config import AltCLIPConfig
from training.models.clip import CLIP
from training.models.config import ModelConfig, ResNetConfig, TextConfig, ViTConfig
from training.models.factory import build_model, list_models, load_model_config, model_from_config

__all__ = [
    "ALIGN",
    "CLIP",
    "AlignConfig",
    "AltCLIP",
    "AltCLIPConfig",
    "ModelConfig",
    "ResNetConfig",
    "TextConfig",
    "ViTConfig",
    "build_model",
    "list_models",
    "load_model_config",
    "model_from_config",
]

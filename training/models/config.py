"""Model sizes as data: one pydantic schema for the JSON files in ``configs/``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ViTConfig(_Frozen):
    """OpenAI CLIP's vision transformer."""

    type: Literal["vit"] = "vit"
    image_resolution: int
    layers: int
    width: int
    patch_size: int
    head_width: int = 64

    @property
    def heads(self) -> int:
        return self.width // self.head_width


class ResNetConfig(_Frozen):
    """OpenAI CLIP's ModifiedResNet with attention pooling."""

    type: Literal["resnet"] = "resnet"
    image_resolution: int
    layers: tuple[int, int, int, int]
    width: int
    head_width: int = 64

    @property
    def heads(self) -> int:
        # the attention pool runs over the final feature map, whose width is 32x the stem width
        return self.width * 32 // self.head_width


class TextConfig(_Frozen):
    """A BERT encoder (RoBERTa-wwm-ext family): GELU, LayerNorm eps 1e-12, no pooler."""

    vocab_size: int = 21128
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12


class ModelConfig(_Frozen):
    family: Literal["chinese-clip"] = "chinese-clip"  # JSONs without a "family" key are Chinese-CLIP
    name: str
    embed_dim: int
    context_length: int = 52
    vision: Annotated[ViTConfig | ResNetConfig, Field(discriminator="type")]
    text: TextConfig

    @property
    def image_resolution(self) -> int:
        return self.vision.image_resolution

    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size

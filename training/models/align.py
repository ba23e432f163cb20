"""ALIGN (Jia et al. 2021; kakaobrain/align-base): an EfficientNet image tower, a BERT text tower, a temperature.

Same interface as ``CLIP``: ``encode_image``, ``encode_text`` (unnormalised features), ``forward`` (normalised
features and the similarity multiplier), ``config``. Module names follow ``CLIP`` where the parts are shared
(``visual``, ``bert``) and Hugging Face ``AlignModel`` inside them, so the checkpoint mapping is a rename.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from training.models.bert import BertModel
from training.models.config import TextConfig, _Frozen
from training.models.efficientnet import EfficientNet, EfficientNetConfig


class AlignConfig(_Frozen):
    """An ALIGN size (``"family": "align"`` in its JSON file)."""

    family: Literal["align"] = "align"
    name: str
    embed_dim: int
    context_length: int = 64
    vision: EfficientNetConfig
    text: TextConfig  # BERT: GELU, LayerNorm eps 1e-12, token type 0, as Hugging Face's AlignTextModel
    temperature_init: float = 1.0

    @model_validator(mode="after")
    def _check(self) -> AlignConfig:
        if self.embed_dim != self.vision.width:
            raise ValueError(
                f"embed_dim {self.embed_dim} must equal the image tower's width {self.vision.width} "
                "(ALIGN has no image projection); change embed_dim or the last out_channels"
            )
        if self.context_length > self.text.max_position_embeddings:
            raise ValueError(
                f"context_length {self.context_length} exceeds max_position_embeddings "
                f"{self.text.max_position_embeddings}"
            )
        return self

    @property
    def image_resolution(self) -> int:
        return self.vision.image_resolution

    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size


class ALIGN(nn.Module):
    family = "align"

    def __init__(self, config: AlignConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = EfficientNet(config.vision)
        self.bert = BertModel(config.text)
        hidden = config.text.hidden_size
        # BERT's tanh pooler: unused by ALIGN (the feature is [CLS]'s hidden state), kept frozen so that
        # Hugging Face checkpoints round-trip and the parameter count is AlignModel's
        self.text_pooler = nn.Linear(hidden, hidden)
        self.text_pooler.requires_grad_(False)
        self.text_projection = nn.Linear(hidden, config.embed_dim)
        # a raw divisor of the cosine similarities, as the paper and Hugging Face (not exp'd like CLIP's)
        self.temperature = nn.Parameter(torch.tensor(config.temperature_init))
        nn.init.normal_(self.text_pooler.weight, std=0.02)
        nn.init.zeros_(self.text_pooler.bias)
        nn.init.xavier_uniform_(self.text_projection.weight)
        nn.init.zeros_(self.text_projection.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        # text tower only: recomputing the EfficientNet would update its BatchNorm statistics twice
        self.bert.set_grad_checkpointing(enable)

    def scale(self) -> torch.Tensor:
        """The multiplier of cosine similarities: 1 / temperature."""
        return 1.0 / self.temperature

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, R, R] float pixels -> [N, embed_dim] features (not normalised)."""
        return self.visual(pixels)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, L] token ids -> [N, embed_dim] features (not normalised): [CLS]'s last hidden state, projected."""
        if attention_mask is None:
            attention_mask = input_ids != 0  # [PAD] is id 0
        return self.text_projection(self.bert(input_ids, attention_mask)[:, 0])

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_features = F.normalize(self.encode_image(images), dim=-1)
        text_features = F.normalize(self.encode_text(input_ids, attention_mask), dim=-1)
        return image_features, text_features, self.scale()

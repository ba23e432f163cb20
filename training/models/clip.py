"""The two-tower Chinese-CLIP model: an image tower, a BERT text tower, a text projection and a logit scale."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.models.bert import BertModel
from training.models.config import ModelConfig, ResNetConfig
from training.models.resnet import ModifiedResNet
from training.models.vit import VisionTransformer


class CLIP(nn.Module):
    family = "chinese-clip"  # what training.export.writer.bundle_description dispatches on

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        if isinstance(config.vision, ResNetConfig):
            self.visual: nn.Module = ModifiedResNet(config.vision, config.embed_dim)
        else:
            self.visual = VisionTransformer(config.vision, config.embed_dim)
        self.bert = BertModel(config.text)
        hidden = config.text.hidden_size
        self.text_projection = nn.Parameter(torch.randn(hidden, config.embed_dim) * hidden**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.bert.set_grad_checkpointing(enable)

    def scale(self) -> torch.Tensor:
        """The multiplier of cosine similarities in the logits: exp(logit_scale)."""
        return self.logit_scale.exp()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, R, R] float pixels -> [N, embed_dim] features (not normalised)."""
        return self.visual(pixels)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, L] token ids -> [N, embed_dim] features (not normalised): [CLS]'s last hidden state, projected."""
        if attention_mask is None:
            attention_mask = input_ids != 0  # [PAD] is id 0
        hidden = self.bert(input_ids, attention_mask)
        return hidden[:, 0] @ self.text_projection

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_features = F.normalize(self.encode_image(images), dim=-1)
        text_features = F.normalize(self.encode_text(input_ids, attention_mask), dim=-1)
        return image_features, text_features, self.scale()

"""AltCLIP (BAAI): CLIP's ViT image tower beside an XLM-R text tower, Hugging Face ``AltCLIPModel``'s math.

The image tower is ``vit.VisionTransformer`` (the same pre-LN CLIP ViT, quick GELU, LayerNorm eps 1e-5);
its fused QKV and ``x @ proj`` layout is mapped to Hugging Face's names when loading and saving.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.models.altclip_config import AltCLIPConfig
from training.models.vit import VisionTransformer
from training.models.xlmr import XLMRTextTower


class AltCLIP(nn.Module):
    family = "altclip"

    def __init__(self, config: AltCLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config.vision, config.embed_dim)
        self.text = XLMRTextTower(config.text, config.pad_token_id, config.project_dim)
        self.text_projection = nn.Linear(config.project_dim, config.embed_dim, bias=False)
        nn.init.normal_(self.text_projection.weight, std=config.project_dim**-0.5)
        # Hugging Face's logit_scale_init_value 2.6592 is log(1 / 0.07)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    def scale(self) -> torch.Tensor:
        """The multiplier of cosine similarities in the logits."""
        return self.logit_scale.exp()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, R, R] CLIP-normalised pixels -> [N, embed_dim] features (not normalised)."""
        return self.visual(pixels)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, L] XLM-R ids (``<s> … </s>``, padded with ``<pad>``) -> [N, embed_dim] features (not normalised)."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        return self.text_projection(self.text(input_ids, attention_mask))

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_features = F.normalize(self.encode_image(images), dim=-1)
        text_features = F.normalize(self.encode_text(input_ids, attention_mask), dim=-1)
        return image_features, text_features, self.scale()

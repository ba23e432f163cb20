"""AltCLIP sizes as data: the schema for ``configs/*.json`` files with ``"family": "altclip"``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from training.models.config import TextConfig, ViTConfig


class AltCLIPConfig(BaseModel):
    """CLIP's ViT image tower and an XLM-RoBERTa text tower (Hugging Face ``AltCLIPModel``).

    ``text`` is the XLM-R encoder (RoBERTa layers are BERT's; XLM-R uses LayerNorm eps 1e-5, 514 positions
    counted from ``pad_token_id``, one token type). ``project_dim`` is the width of the ``transformation``
    Linear after ``pre_LN`` (the distillation teacher's width); ``embed_dim`` that of the shared space.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Literal["altclip"] = "altclip"
    name: str
    embed_dim: int
    project_dim: int
    # FlagAI's examples tokenise with max_length=77; XLM-R itself allows max_position_embeddings - 2
    context_length: int = 77
    pad_token_id: int = 1
    vision: ViTConfig
    text: TextConfig

    @model_validator(mode="after")
    def _positions_fit(self) -> AltCLIPConfig:
        # RoBERTa numbers real tokens pad_token_id + 1, pad_token_id + 2, ...: the last one must have an embedding
        longest = self.text.max_position_embeddings - self.pad_token_id - 1
        if self.context_length > longest:
            raise ValueError(
                f"{self.name}: context_length {self.context_length} needs position {self.context_length + self.pad_token_id}"
                f" but text.max_position_embeddings is {self.text.max_position_embeddings}; use at most {longest}"
            )
        return self

    @property
    def image_resolution(self) -> int:
        return self.vision.image_resolution

    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size

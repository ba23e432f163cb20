"""The XLM-RoBERTa text tower of AltCLIP, as Hugging Face's ``AltCLIPTextModel`` computes it.

RoBERTa's layers are BERT's (post-LN), so the encoder is ``bert.BertEncoder``; only the embeddings
differ: positions are counted from the padding id, and there is a single token type.
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.bert import BertEncoder, BertModel
from training.models.config import TextConfig


def position_ids(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """fairseq's ``make_positions``: real tokens get pad+1, pad+2, …; padding keeps ``pad_token_id``.

    Hugging Face derives this from ``input_ids != pad`` (not from the attention mask), and so do we.
    """
    real = input_ids.ne(pad_token_id).long()
    return torch.cumsum(real, dim=1) * real + pad_token_id


class XLMREmbeddings(nn.Module):
    def __init__(self, config: TextConfig, pad_token_id: int) -> None:
        super().__init__()
        self.pad_token_id = pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # token types are all 0: Hugging Face gathers them from an all-zero buffer when none are passed
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids(input_ids, self.pad_token_id))
            + self.token_type_embeddings.weight[0]
        )
        return self.dropout(self.LayerNorm(x))


class XLMRTextTower(nn.Module):
    """XLM-R (no pooler) -> ``pre_LN`` on every token -> ``transformation`` -> the ``<s>`` (position 0) row."""

    def __init__(self, config: TextConfig, pad_token_id: int, project_dim: int) -> None:
        super().__init__()
        self.embeddings = XLMREmbeddings(config, pad_token_id)
        self.encoder = BertEncoder(config)
        self.pre_LN = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.transformation = nn.Linear(config.hidden_size, project_dim)
        self.apply(BertModel._init_weights)  # normal(0.02) Linear/Embedding, unit LayerNorm, as Hugging Face

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.grad_checkpointing = enable

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.bool()[:, None, None, :]  # [N, 1, 1, L], broadcast over heads and queries
        hidden = self.encoder(self.embeddings(input_ids), keep)
        # pre_LN and transformation act per token, so applying them to <s> alone is the same computation
        return self.transformation(self.pre_LN(hidden[:, 0]))

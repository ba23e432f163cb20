"""What training needs to know per model family: the image pipeline, the tokenizer, the temperature's bounds.

Chosen by ``model.family`` (which the factory takes from the model config), never by names. The image
pipelines are the families' reference processors (DESIGN.md's table), scaled to the model's resolution:

- Chinese-CLIP: bicubic squash to R×R, CLIP mean/std;
- AltCLIP: shortest edge to R (bicubic), centre crop R, CLIP mean/std (``CLIPImageProcessor``);
- ALIGN: fixed resize to R·346/289 (bilinear), centre crop R, x / 127.5 − 1 (``EfficientNetImageProcessor``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from service.preprocessing.image import CLIP_MEAN, CLIP_STD, ImageSpec, Rescale
from service.preprocessing.text import ChineseTokenizer, TextTokenizer

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: similarities are multiplied by at most 100
ALIGN_RESIZE_RATIO = 346 / 289  # align-base resizes to 346 and crops 289


def image_spec(model: nn.Module) -> ImageSpec:
    size = model.config.image_resolution
    family = model.family
    if family == "chinese-clip":
        return ImageSpec(size=size, mean=CLIP_MEAN, std=CLIP_STD)
    if family == "altclip":
        return ImageSpec(size=size, resize="shortest_edge", resize_size=size, mean=CLIP_MEAN, std=CLIP_STD)
    if family == "align":
        side = round(size * ALIGN_RESIZE_RATIO)
        return ImageSpec(
            size=size,
            resize="fixed",
            resize_size=(side, side),
            resample="bilinear",
            rescale=Rescale(1 / 127.5, -1.0),
        )
    raise ValueError(f"no image pipeline for model family {family!r}")


def text_tokenizer(model: nn.Module, tokenizer_file: Path | None = None) -> TextTokenizer:
    """The model's tokenizer at its context length, from ``tokenizer_file``: a ``tokenizer.json``, or what the
    family's tokenizer is built from (the same files ``tuwen export`` reads) — AltCLIP's SentencePiece
    ``.model``, ALIGN's ``vocab.txt``. Chinese-CLIP: its vocab.txt, by default the shipped one."""
    config = model.config
    if model.family == "chinese-clip":
        return ChineseTokenizer.from_vocab(tokenizer_file, context_length=config.context_length)
    if tokenizer_file is None:
        source = {"altclip": "sentencepiece.bpe.model", "align": "vocab.txt"}.get(
            model.family, "tokenizer.json"
        )
        raise ValueError(
            f"a {model.family} model ({config.name}) needs its tokenizer: set tokenizer= in the training config "
            f"to its {source} or a tokenizer.json"
        )
    tokenizer_file = Path(tokenizer_file)
    pad_id = config.pad_token_id if model.family == "altclip" else 0  # XLM-R's <pad> is 1, BERT's [PAD] 0
    if tokenizer_file.suffix == ".json":
        tokenizer = TextTokenizer.from_file(
            tokenizer_file, context_length=config.context_length, pad_id=pad_id
        )
    elif model.family == "altclip":
        from training.tokenizers.xlmr import xlmr_tokenizer

        backend = xlmr_tokenizer(tokenizer_file, config.context_length)
        tokenizer = TextTokenizer(backend, context_length=config.context_length, pad_id=pad_id)
    else:
        from training.tokenizers.wordpiece import wordpiece_tokenizer

        backend = wordpiece_tokenizer(tokenizer_file, context_length=config.context_length)
        tokenizer = TextTokenizer(backend, context_length=config.context_length, pad_id=pad_id)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"{tokenizer_file} has {tokenizer.vocab_size} tokens but {config.name}'s embedding table only "
            f"{config.vocab_size}: use the tokenizer the model was built for, or a model with a larger vocab_size"
        )
    return tokenizer


@torch.no_grad()
def clamp_temperature(model: nn.Module) -> None:
    """Keep the similarity multiplier in (0, 100]: CLIP's clamp of the exponentiated scale, and for ALIGN's
    raw temperature the same bound (the paper learns it freely; a step that takes it below 0.01 diverges)."""
    if hasattr(model, "logit_scale"):
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    if hasattr(model, "temperature"):
        model.temperature.clamp_(min=1 / 100)

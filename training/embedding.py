"""``tuwen embed --checkpoint``: L2-normalised embeddings from a PyTorch checkpoint (entry point
``tuwen.embedders: checkpoint``). Tokenisation and image preprocessing are the service's, so these
embeddings are what an exported bundle must reproduce."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from service.engines.embed_bundle import EmbedResult
from service.preprocessing.image import CLIP_MEAN, CLIP_STD, ImageSpec, decode_image, preprocess
from service.preprocessing.text import ChineseTokenizer
from training.checkpoints import load_checkpoint
from training.models import CLIP

BATCH_SIZE = 32  # bounds memory for long input lists; results do not depend on it


def embed_with_checkpoint(
    checkpoint: str | Path,
    arch: str | None = None,
    texts: Sequence[str] | None = None,
    images: Sequence[str | Path | bytes] | None = None,
) -> EmbedResult:
    """Embed ``texts`` or ``images`` (file paths or encoded bytes) with the model in ``checkpoint``.

    ``arch`` is detected from the checkpoint when omitted. Raises ``CheckpointError`` for unusable
    checkpoints and ``ImageError`` (with a stable code) for unreadable images.
    """
    if (texts is None) == (images is None):
        raise ValueError("pass either texts or images")
    model = load_checkpoint(checkpoint, arch=arch).model
    features = embed_texts(model, texts) if texts is not None else embed_images(model, images or [])
    return EmbedResult(model=model.config.name, dim=model.config.embed_dim, embeddings=features.tolist())


@torch.inference_mode()
def embed_texts(model: CLIP, texts: Sequence[str]) -> torch.Tensor:
    """[N, D] float32, L2-normalised; texts normalised as in official training (lower case, straight quotes)."""
    tokenizer = ChineseTokenizer.from_vocab(context_length=model.config.context_length)
    out = []
    for start in range(0, len(texts), BATCH_SIZE):
        ids, mask = tokenizer.pad(tokenizer.encode(texts[start : start + BATCH_SIZE], normalize=True))
        out.append(model.encode_text(torch.from_numpy(ids), torch.from_numpy(mask)))
    return _normalised(out, model.config.embed_dim)


@torch.inference_mode()
def embed_images(model: CLIP, images: Sequence[str | Path | bytes]) -> torch.Tensor:
    """[N, D] float32, L2-normalised; images decoded and preprocessed exactly as the service does."""
    spec = ImageSpec(size=model.config.image_resolution, mean=CLIP_MEAN, std=CLIP_STD)
    out = []
    for start in range(0, len(images), BATCH_SIZE):
        batch = images[start : start + BATCH_SIZE]
        decoded = [decode_image(Path(item) if isinstance(item, str) else item) for item in batch]
        out.append(model.encode_image(torch.from_numpy(preprocess(decoded, spec))))
    return _normalised(out, model.config.embed_dim)


def _normalised(batches: list[torch.Tensor], dim: int) -> torch.Tensor:
    if not batches:
        return torch.empty(0, dim)
    return F.normalize(torch.cat(batches).float(), dim=-1)

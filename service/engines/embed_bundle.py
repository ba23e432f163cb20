"""`tuwen embed --bundle`: embed texts or image files with a bundle's fp32 graphs on ONNX Runtime (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.bundle import Bundle
from service.engines import load_towers


@dataclass(frozen=True)
class EmbedResult:
    """What `tuwen embed` prints, from a bundle here or a checkpoint (training.embedding)."""

    model: str
    dim: int
    embeddings: list[list[float]]
    family: str = "chinese-clip"  # the checkpoint path serves Chinese-CLIP models only, for now


def embed_with_bundle(
    bundle_dir: str | Path, texts: Sequence[str] | None = None, images: Sequence[str | Path] | None = None
) -> EmbedResult:
    if (texts is None) == (images is None):
        raise ValueError("give either texts or images")
    bundle = Bundle.load(bundle_dir)
    # fp32 on ONNX Runtime: the reference path, comparable with `tuwen embed --checkpoint`
    towers = load_towers(bundle, backend="onnxruntime", precision="fp32")
    if texts is not None:
        ids, mask = (tokenizer := bundle.tokenizer()).pad(tokenizer.encode(list(texts)))
        vectors = towers.text.embed(ids, mask)
    else:
        from service.preprocessing.image import decode_image, preprocess

        pixels = preprocess([decode_image(Path(p)) for p in images or ()], bundle.image_spec())
        vectors = towers.image.embed(pixels)
    return EmbedResult(
        model=bundle.model_name, dim=bundle.embed_dim, embeddings=vectors.tolist(), family=bundle.family
    )

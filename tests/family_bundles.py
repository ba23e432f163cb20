"""Tiny AltCLIP and ALIGN models saved as Hugging Face directories, the way the released checkpoints are.

A directory holds ``config.json``, the weights, the tokenizer's own files (AltCLIP: a SentencePiece Unigram
``sentencepiece.bpe.model``, trained here on the synthetic captions; ALIGN: a BERT uncased ``vocab.txt``
written here) and ``preprocessor_config.json``: no downloads. Weights are random and perturbed
(``perturbed_model``), or fitted to a handful of synthetic image-caption pairs (``fit``) so that retrieval
through a served bundle means something.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from service.preprocessing.image import ImageSpec, preprocess
from service.preprocessing.text import TextTokenizer
from training.data.synthetic import COLORS, SHAPES, Scene, render_scene, sample_scene

FAMILIES = {"altclip": "tiny-altclip", "align": "tiny-align"}
ZH_TEMPLATE = "{count}{color}的{size}{shape}在{position}"


def scenes(n: int, seed: int = 0) -> list[Scene]:
    """``n`` scenes with distinct (colour, shape) pairs, so no two captions describe the same picture."""
    rng = random.Random(seed)
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    rng.shuffle(pairs)
    out = []
    for color, shape in pairs[:n]:
        base = sample_scene(rng)
        out.append(Scene(shape=shape, color=color, count=base.count, size=base.size, position=base.position))
    return out


def captions(scene: Scene) -> tuple[str, str]:
    """(Chinese, English)."""
    return scene.chinese_caption(ZH_TEMPLATE), scene.english_caption()


def render(scene: Scene, index: int, size: int = 64) -> Image.Image:
    return render_scene(scene, random.Random(f"family-bundles:{index}"), size)


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _corpus() -> list[str]:
    rng = random.Random(1)
    return [text for _ in range(3000) for text in captions(sample_scene(rng))]


def write_sentencepiece(directory: Path, vocab_size: int = 300) -> Path:
    """A SentencePiece Unigram model of the synthetic captions, as XLM-R's ``sentencepiece.bpe.model``."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,  # the captions have only so many pieces
        num_threads=1,
        minloglevel=2,
    )
    path = directory / "sentencepiece.bpe.model"
    path.write_bytes(buffer.getvalue())
    return path


def write_wordpiece_vocab(directory: Path) -> Path:
    """A BERT uncased ``vocab.txt``: bert-base-uncased's special ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP]
    102, [MASK] 103), then ASCII, the caption words and their characters (CJK included)."""
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    words: set[str] = set()
    for text in _corpus():
        words.update(text.lower().split())
        chars += [c for c in text if ord(c) > 127]
    chars = list(dict.fromkeys(chars))
    tokens += chars + ["##" + c for c in chars if c.isalnum()] + sorted(words - set(chars))
    path = directory / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


def image_spec(family: str, size: int) -> ImageSpec:
    from service.preprocessing.image import Rescale

    if family == "altclip":
        return ImageSpec(size, resize="shortest_edge", resize_size=size)
    resize = round(size * 346 / 289)
    return ImageSpec(
        size,
        resize="fixed",
        resize_size=(resize, resize),
        resample="bilinear",
        rescale=Rescale(1 / 127.5, -1.0),
    )


def hf_image_processor(family: str, size: int) -> Any:
    """transformers' processor configured as the released checkpoints' preprocessor_config.json (PIL path)."""
    if family == "altclip":
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil(
            do_resize=True,
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            resample=3,
        )
    from transformers import EfficientNetImageProcessorPil

    resize = round(size * 346 / 289)
    return EfficientNetImageProcessorPil(
        do_resize=True,
        size={"height": resize, "width": resize},
        resample=2,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 127.5,
        rescale_offset=True,
        do_normalize=False,
        include_top=False,
    )


def tokenizer_for(family: str, directory: Path, context_length: int) -> TextTokenizer:
    """The tokenizer the exporter writes for ``directory``, loaded as the service loads it."""
    if family == "altclip":
        from training.tokenizers.xlmr import xlmr_tokenizer

        backend = xlmr_tokenizer(directory / "sentencepiece.bpe.model", context_length)
        return TextTokenizer(backend, context_length=context_length, pad_id=1)
    from training.tokenizers.wordpiece import wordpiece_tokenizer

    backend = wordpiece_tokenizer(directory / "vocab.txt", context_length=context_length)
    return TextTokenizer(backend, context_length=context_length, pad_id=0)


def perturbed_model(family: str, seed: int) -> torch.nn.Module:
    """The tiny model with every parameter and float buffer moved off its init (norms near 1, variances > 0)."""
    from training.models import build_model

    torch.manual_seed(seed)
    model = build_model(FAMILIES[family])
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name == "temperature":
                tensor.fill_(0.07)
            else:
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))
    return model.eval()


def save_hf_directory(model: torch.nn.Module, family: str, directory: Path) -> Path:
    """``model`` as a Hugging Face directory with its tokenizer and image processor files."""
    from training.checkpoints import save_align_hf_directory, save_altclip_hf_directory

    save = save_altclip_hf_directory if family == "altclip" else save_align_hf_directory
    save(model, directory)  # type: ignore[arg-type]
    if (directory / "tokenizer_config.json").is_file():
        return directory  # written before: the model's weights were updated, its tokenizer stays
    if family == "altclip":
        write_sentencepiece(directory)
        config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512}
    else:
        write_wordpiece_vocab(directory)
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64}
    (directory / "tokenizer_config.json").write_text(json.dumps(config) + "\n")
    hf_image_processor(family, model.config.image_resolution).save_pretrained(directory)
    return directory


def fit(
    model: torch.nn.Module,
    family: str,
    tokenizer: TextTokenizer,
    pairs: list[tuple[Scene, Image.Image]],
    steps: int = 60,
    seed: int = 0,
    lr: float = 1e-3,
    freeze_image: bool = False,
    scale: float = 20.0,
) -> list[float]:
    """A short symmetric InfoNCE fit of ``model`` on these pairs, each image against both of its captions.

    Eval mode throughout (no dropout, BatchNorm keeps its statistics): the point is a model whose retrieval
    is far from chance, quickly and deterministically. Returns the losses.
    """
    torch.manual_seed(seed)
    spec = image_spec(family, model.config.image_resolution)
    pixels = torch.from_numpy(preprocess([image for _, image in pairs], spec))
    texts = [captions(scene) for scene, _ in pairs]
    ids, mask = (torch.from_numpy(a) for a in tokenizer.pad(tokenizer.encode([t for p in texts for t in p])))
    targets = torch.arange(len(pairs))
    model.eval()
    if freeze_image:  # EfficientNet's depthwise convolutions are slow to backpropagate on CPU
        with torch.no_grad():
            fixed = model.encode_image(pixels)
    trained = [p for name, p in model.named_parameters() if not (freeze_image and name.startswith("visual."))]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        image = F.normalize(fixed if freeze_image else model.encode_image(pixels), dim=-1)
        text = F.normalize(model.encode_text(ids, mask), dim=-1).view(len(pairs), 2, -1)
        loss = torch.zeros(())
        for language in range(2):
            logits = scale * image @ text[:, language].T
            loss = loss + F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()) / 4)
    return losses


def random_images(directory: Path, n: int = 3, seed: int = 0) -> list[Path]:
    """PNG files of different sizes and aspect ratios (the resize and crop matter)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, (w, h) in enumerate([(80, 60), (37, 52), (64, 64)][:n]):
        paths.append(directory / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    return paths

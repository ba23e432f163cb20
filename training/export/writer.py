"""Write a model bundle from a PyTorch CLIP model: graphs, tokenizer, verification figures, manifest.

Nothing is declared exported until it has been checked: every graph runs on the sample inputs and is
compared with PyTorch fp32, and the manifest (which makes the directory loadable) is written last.

What the bundle says about its model comes from the model, not from this file:
``bundle_description(model, tokenizer_source)`` looks up ``model.family`` in ``DESCRIBERS`` and returns a ``BundleDescription`` — the family, the
manifest's ``TextPipeline`` (tokenizer file name, normaliser pre-step, context length, pad id, text graph
inputs) and ``ImagePipeline`` (resize mode and sizes, filter, normalisation), and the ``tokenizers``
object saved as the tokenizer file. To export a new family, give its model class a ``family`` attribute
(one of ``service.bundle.Family``) and register a function ``(model, tokenizer_source) ->
BundleDescription`` in ``DESCRIBERS``; ``_chinese_clip`` is the example. ``tokenizer_source`` is where the
family's tokenizer files are (a Hugging Face directory, or one file): AltCLIP reads ``sentencepiece.bpe.model``
(or, without it, the directory's ``tokenizer.json``), ALIGN ``vocab.txt``; Chinese-CLIP ships its own vocab.
A ``preprocessor_config.json`` there must agree with the family's image pipeline at the model's input size.
The model must provide ``encode_image(pixels)``, ``encode_text(input_ids, attention_mask)`` and ``scale()``
(the multiplier of cosine similarities), and its ``config`` ``name``, ``embed_dim``, ``context_length``,
``vocab_size`` and ``image_resolution``: the graphs, their verification cases (the family's start, end and pad
ids, the image crop) and the manifest come from those.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from service.bundle import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    EngineFile,
    Family,
    ImagePipeline,
    Manifest,
    MeanStd,
    Precision,
    Rescale,
    TextPipeline,
    Tower,
    Verification,
    write_manifest,
)
from service.engines.verify import (
    Case,
    TokenLayout,
    VerificationFailed,
    compare,
    cpu_session,
    image_cases,
    require,
    session_runner,
    text_cases,
    token_layout,
    top_k_agreement,
)
from service.preprocessing.image import CLIP_MEAN, CLIP_STD
from service.preprocessing.text import (
    DEFAULT_VOCAB,
    PAD_ID,
    TextTokenizer,
    chinese_clip_tokenizer,
    read_vocab,
)
from training.export import onnx as graphs

THRESHOLDS: dict[Precision, float] = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}
GALLERY_IMAGES, GALLERY_QUERIES = 64, 32


@dataclass(frozen=True)
class ExportOptions:
    fp16: bool = False
    int8: bool = False
    batches: tuple[int, ...] = (1, 7)
    text_lengths: tuple[int, ...] | None = None  # default: 1, 5 and the model's context length
    seed: int = 0
    # towers whose fp32 graph is larger keep their weights in external `<graph>.data` files (all precisions)
    external_data_bytes: int = graphs.EXTERNAL_DATA_BYTES


@dataclass(frozen=True)
class BundleDescription:
    """What a model family writes into its bundle besides the graphs (see the module docstring)."""

    family: Family
    text: TextPipeline  # text.tokenizer: the file name ``tokenizer`` is saved under
    image: ImagePipeline
    tokenizer: Tokenizer


Describer = Callable[[torch.nn.Module, Path | None], BundleDescription]

SENTENCEPIECE_FILE = "sentencepiece.bpe.model"  # XLM-R's name for its SentencePiece Unigram model
# align-base's EfficientNetImageProcessor: a 346 x 346 resize, centre-cropped to the 289 input
ALIGN_RESIZE, ALIGN_CROP = 346, 289


def _chinese_clip(model: torch.nn.Module, tokenizer_source: Path | None = None) -> BundleDescription:
    """Chinese-CLIP: the shipped 21,128-token vocab as tokenizer.json (with the cn-clip-bert pre-step that
    keeps the ids equal to the official tokenizer's), a bicubic squash and CLIP's mean/std."""
    config = model.config
    size = config.image_resolution
    return BundleDescription(
        family="chinese-clip",
        text=TextPipeline(
            tokenizer="tokenizer.json",
            normalizer="cn-clip-bert",
            context_length=config.context_length,
            pad_id=PAD_ID,
        ),
        image=ImagePipeline(
            resize="squash",
            resize_size=size,
            crop_size=size,
            resample="bicubic",
            normalize=MeanStd(mean=CLIP_MEAN, std=CLIP_STD),
        ),
        tokenizer=chinese_clip_tokenizer(read_vocab(DEFAULT_VOCAB)),
    )


def _altclip(model: torch.nn.Module, tokenizer_source: Path | None) -> BundleDescription:
    """AltCLIP: XLM-R's SentencePiece tokenizer (``<s> … </s>``, pad 1), CLIPImageProcessor's shortest edge
    to the input size (bicubic) + centre crop, CLIP's mean/std."""
    config = model.config
    size = config.image_resolution
    tokenizer = _xlmr_tokenizer(tokenizer_source, config.context_length)
    _check_tokenizer(tokenizer, model, pad=("<pad>", config.pad_token_id))
    image = ImagePipeline(
        resize="shortest_edge",
        resize_size=size,
        crop_size=size,
        resample="bicubic",
        normalize=MeanStd(mean=CLIP_MEAN, std=CLIP_STD),
    )
    _check_image_processor(tokenizer_source, image)
    return BundleDescription(
        family="altclip",
        text=TextPipeline(context_length=config.context_length, pad_id=config.pad_token_id),
        image=image,
        tokenizer=tokenizer,
    )


def _align(model: torch.nn.Module, tokenizer_source: Path | None) -> BundleDescription:
    """ALIGN: BERT uncased WordPiece from vocab.txt (pad 0), EfficientNetImageProcessor's fixed square
    resize (346 for the 289 input; the same ratio at other sizes, bilinear) + centre crop, x / 127.5 - 1."""
    from training.tokenizers.wordpiece import PAD, wordpiece_tokenizer

    config = model.config
    crop = config.image_resolution
    resize = round(crop * ALIGN_RESIZE / ALIGN_CROP)
    vocab = _tokenizer_file(tokenizer_source, "vocab.txt", family="ALIGN")
    tokenizer = wordpiece_tokenizer(vocab, context_length=config.context_length)
    _check_tokenizer(tokenizer, model, pad=(PAD, 0))  # the model's attention default and HF's pad_token_id
    image = ImagePipeline(
        resize="fixed",
        resize_size=(resize, resize),
        crop_size=crop,
        resample="bilinear",
        normalize=Rescale(scale=1 / 127.5, offset=-1.0),
    )
    _check_image_processor(tokenizer_source, image)
    return BundleDescription(
        family="align",
        text=TextPipeline(context_length=config.context_length, pad_id=0),
        image=image,
        tokenizer=tokenizer,
    )


def _xlmr_tokenizer(source: Path | None, context_length: int) -> Tokenizer:
    """From the SentencePiece model when there is one: ``training.tokenizers.xlmr`` reproduces SentencePiece's
    ids, where the stock ``tokenizer.json`` (transformers' XLMRobertaConverter) splits at every Unicode space
    and mis-maps some grapheme clusters. A directory with only ``tokenizer.json`` (a converted copy) is used
    as it is; its ids equal SentencePiece's on ordinary text, not on those cases."""
    from training.tokenizers.xlmr import xlmr_tokenizer

    if source is not None and source.is_dir() and not (source / SENTENCEPIECE_FILE).is_file():
        source = source / "tokenizer.json" if (source / "tokenizer.json").is_file() else source
    if source is not None and source.is_file() and source.name == "tokenizer.json":
        return Tokenizer.from_file(str(source))
    return xlmr_tokenizer(_tokenizer_file(source, SENTENCEPIECE_FILE, family="AltCLIP"), context_length)


def _tokenizer_file(source: Path | None, name: str, *, family: str) -> Path:
    """``source`` itself (a file) or ``source/name``; the error says where the file comes from."""
    path = source if source is not None and source.is_file() else (source or Path(".")) / name
    if source is None or not path.is_file():
        raise ValueError(
            f"exporting {family} needs its tokenizer file {name}, not found in {source}: pass the Hugging Face"
            f" directory the model came from (or the file) with --tokenizer"
        )
    return path


def _check_tokenizer(tokenizer: Tokenizer, model: torch.nn.Module, *, pad: tuple[str, int]) -> None:
    """The tokenizer must fit the model: every id inside its embedding, the pad token at the model's pad id."""
    token, pad_id = pad
    size, rows = tokenizer.get_vocab_size(), model.config.vocab_size
    if size > rows:
        raise ValueError(
            f"the tokenizer has {size} ids but {model.config.name}'s embedding only {rows}:"
            " pass the tokenizer the model was trained with"
        )
    if tokenizer.token_to_id(token) != pad_id:
        raise ValueError(
            f"the tokenizer's {token} is id {tokenizer.token_to_id(token)}, {model.config.name} pads with {pad_id}:"
            " pass the tokenizer the model was trained with"
        )


_PIL_FILTERS = {
    2: "bilinear",
    3: "bicubic",
}  # Pillow's resample numbers, as preprocessor_config.json has them


def _check_image_processor(source: Path | None, pipeline: ImagePipeline) -> None:
    """A directory's ``preprocessor_config.json`` (CLIPImageProcessor, EfficientNetImageProcessor) must
    describe the pipeline the bundle will serve: a checkpoint fine-tuned at another size or with other
    statistics is refused rather than served with the wrong pixels."""
    path = source / "preprocessor_config.json" if source is not None and source.is_dir() else None
    if path is None or not path.is_file():
        return
    raw = json.loads(path.read_text(encoding="utf-8"))
    size, crop = raw.get("size", {}), raw.get("crop_size", {})
    if isinstance(size, int):  # the older format (BAAI/AltCLIP's CLIPFeatureExtractor): the shortest edge
        size = (
            {"shortest_edge": size} if pipeline.resize == "shortest_edge" else {"height": size, "width": size}
        )
    found: dict[str, Any] = {
        "resize_size": size.get("shortest_edge", (size.get("height"), size.get("width"))),
        "crop_size": crop.get("height", crop) if isinstance(crop, dict) else crop,
        "resample": _PIL_FILTERS.get(raw.get("resample"), raw.get("resample")),
    }
    if raw.get("do_normalize", True):
        found["normalize"] = (tuple(raw.get("image_mean", ())), tuple(raw.get("image_std", ())))
    else:
        offset = -1.0 if raw.get("rescale_offset") else 0.0
        found["normalize"] = (raw.get("rescale_factor"), offset)
    norm = pipeline.normalize
    expected: dict[str, Any] = {
        "resize_size": pipeline.resize_size,
        "crop_size": pipeline.crop_size,
        "resample": pipeline.resample,
        "normalize": (norm.mean, norm.std) if isinstance(norm, MeanStd) else (norm.scale, norm.offset),
    }
    differ = [key for key in expected if not _close(found[key], expected[key])]
    if differ:
        details = "; ".join(f"{key} {found[key]!r} there, {expected[key]!r} here" for key in differ)
        raise ValueError(
            f"{path} describes another image pipeline than this model's ({details}); export a checkpoint"
            " whose preprocessing is the family's, or remove the file if it is stale"
        )


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    return bool(a == b)


DESCRIBERS: dict[str, Describer] = {"chinese-clip": _chinese_clip, "altclip": _altclip, "align": _align}


def bundle_description(model: torch.nn.Module, tokenizer_source: Path | None = None) -> BundleDescription:
    """The bundle description of ``model``'s family (``model.family``, looked up in ``DESCRIBERS``)."""
    family = getattr(model, "family", None)
    describe = DESCRIBERS.get(family) if isinstance(family, str) else None
    if describe is None:
        raise ValueError(
            f"cannot export a {type(model).__name__}: its family {family!r} has no bundle description;"
            f" set a `family` attribute on the model class and register it in"
            f" training.export.writer.DESCRIBERS (known: {sorted(DESCRIBERS)})"
        )
    return describe(model, tokenizer_source)


def file_name(tower: Tower, precision: Precision) -> str:
    return f"{tower}.onnx" if precision == "fp32" else f"{tower}.{precision}.onnx"


class _TorchReference:
    """PyTorch fp32 outputs, computed once per case and shared by every precision's check."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._cache: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def __call__(self, case: Case) -> np.ndarray:
        if case.name not in self._cache:
            feeds = {k: torch.from_numpy(v) for k, v in case.feeds.items()}
            if "pixel_values" in feeds:
                out = self.model.encode_image(feeds["pixel_values"])
            else:
                out = self.model.encode_text(feeds["input_ids"], feeds["attention_mask"])
            self._cache[case.name] = F.normalize(out, dim=-1).numpy()
        return self._cache[case.name]


def export_bundle(
    model: torch.nn.Module,
    out_dir: Path,
    *,
    provenance: dict[str, Any],
    options: ExportOptions = ExportOptions(),
    log: Callable[[str], None] = print,
    tokenizer_source: Path | None = None,
) -> Manifest:
    """Export ``model`` (any family in ``DESCRIBERS``) into ``out_dir``; ``tokenizer_source``: where the
    family's tokenizer files are (AltCLIP, ALIGN: the Hugging Face directory; see the module docstring)."""
    description = bundle_description(model, tokenizer_source)
    model = model.eval()
    config = model.config
    text = description.text
    # as the service will load it; this also sets the file's truncation to the context length, unpadded
    tokenizer = TextTokenizer(
        description.tokenizer,
        context_length=text.context_length,
        pad_id=text.pad_id,
        normalizer=text.normalizer,
    )
    layout = token_layout(tokenizer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a stale manifest would make a half-rewritten directory look like a bundle until the hashes fail
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    description.tokenizer.save(str(out_dir / text.tokenizer))

    crop = description.image.crop_size
    cases: dict[Tower, list[Case]] = {
        "image": image_cases(crop, options.batches, options.seed),
        "text": text_cases(
            text.context_length,
            config.vocab_size,
            options.batches,
            options.text_lengths or (1, 5, text.context_length),
            options.seed,
            layout,
        ),
    }
    precisions: list[Precision] = (
        ["fp32"] + (["fp16"] if options.fp16 else []) + (["int8"] if options.int8 else [])
    )
    reference = _TorchReference(model)
    towers: dict[Tower, dict[Precision, EngineFile]] = {"image": {}, "text": {}}
    failures: list[str] = []

    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp:
        raw = {"image": Path(tmp) / "image.raw.onnx", "text": Path(tmp) / "text.raw.onnx"}
        log(f"exporting {config.name} image tower")
        graphs.export_image_tower(model, crop, raw["image"])
        log(f"exporting {config.name} text tower")
        graphs.export_text_tower(
            model, text.context_length, raw["text"], vocab_size=config.vocab_size, layout=layout
        )

        for tower in ("image", "text"):
            fp32 = out_dir / file_name(tower, "fp32")
            external = graphs.graph_bytes(raw[tower]) > options.external_data_bytes
            graphs.optimize_offline(raw[tower], fp32, external_data=external)
            for precision in precisions:
                path = out_dir / file_name(tower, precision)
                if precision == "fp16":
                    graphs.convert_fp16(fp32, path, external_data=external)
                elif precision == "int8":
                    graphs.quantize_int8(fp32, path, external_data=external)
                check = compare(
                    cases[tower],
                    reference,
                    session_runner(cpu_session(path)),
                    reference_name="pytorch fp32",
                    threshold=THRESHOLDS[precision],
                )
                log(
                    f"  {path.name}: min cosine {check.min_cosine:.6f}, max abs diff {check.max_abs_diff:.3g}"
                )
                towers[tower][precision] = EngineFile(
                    path=path.name, data_files=graphs.external_data_files(path), verification=check
                )
                try:
                    require(check, path.name)
                except VerificationFailed as exc:
                    failures.append(str(exc))

    if "int8" in precisions:
        agreement = _int8_retrieval_agreement(
            out_dir, crop, text.context_length, config.vocab_size, layout, options.seed
        )
        log(f"  int8 top-10 text->image retrieval agreement with fp32: {agreement:.3f}")
        for tower in ("image", "text"):
            old = towers[tower]["int8"]
            extra = {**old.verification.extra, "top10_agreement_text_to_image": agreement}
            towers[tower]["int8"] = old.model_copy(
                update={"verification": old.verification.model_copy(update={"extra": extra})}
            )
    if failures:
        raise VerificationFailed("export failed verification:\n  " + "\n  ".join(failures))

    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_name=config.name,
        family=description.family,
        arch=config.name,
        embed_dim=config.embed_dim,
        logit_scale=float(model.scale().detach()),
        image=description.image,
        text=description.text,
        towers=towers,
        provenance={**provenance, "exported_with": {"torch": torch.__version__, "opset": graphs.OPSET}},
    )
    return write_manifest(out_dir, manifest)


def _int8_retrieval_agreement(
    out_dir: Path, crop: int, context_length: int, vocab_size: int, layout: TokenLayout, seed: int
) -> float:
    """How often text->image top-10 over a synthetic gallery is the same with int8 as with fp32 graphs."""
    gallery = image_cases(crop, (GALLERY_IMAGES,), seed + 1)[0]
    rng = np.random.default_rng(seed + 2)
    length = (int(rng.integers(4, 20)),)
    queries = text_cases(context_length, vocab_size, (GALLERY_QUERIES,), length, seed + 2, layout)[0]

    def embed(precision: Precision) -> tuple[np.ndarray, np.ndarray]:
        text = session_runner(cpu_session(out_dir / file_name("text", precision)))(queries)
        image = session_runner(cpu_session(out_dir / file_name("image", precision)))(gallery)
        return text, image

    return top_k_agreement(embed("fp32"), embed("int8"), k=10)


__all__ = [
    "DESCRIBERS",
    "THRESHOLDS",
    "BundleDescription",
    "ExportOptions",
    "Verification",
    "VerificationFailed",
    "bundle_description",
    "export_bundle",
    "file_name",
]

"""Write a model bundle from a PyTorch CLIP model: graphs, tokenizer, verification figures, manifest.

Nothing is declared exported until it has been checked: every graph runs on the sample inputs and is
compared with PyTorch fp32, and the manifest (which makes the directory loadable) is written last.

What the bundle says about its model comes from the model, not from this file: ``bundle_description(model)``
looks up ``model.family`` in ``DESCRIBERS`` and returns a ``BundleDescription`` — the family, the
manifest's ``TextPipeline`` (tokenizer file name, normaliser pre-step, context length, pad id, text graph
inputs) and ``ImagePipeline`` (resize mode and sizes, filter, normalisation), and the ``tokenizers``
object saved as the tokenizer file. To export a new family, give its model class a ``family`` attribute
(one of ``service.bundle.Family``) and register a function ``model -> BundleDescription`` in
``DESCRIBERS``; ``_chinese_clip`` is the example. The towers must also provide ``encode_image(pixels)`` and
``encode_text(input_ids, attention_mask)`` for the verification here and the ONNX export.
"""

from __future__ import annotations

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
    TextPipeline,
    Tower,
    Verification,
    write_manifest,
)
from service.engines.verify import (
    Case,
    VerificationFailed,
    compare,
    cpu_session,
    image_cases,
    require,
    session_runner,
    text_cases,
    top_k_agreement,
)
from service.preprocessing.image import CLIP_MEAN, CLIP_STD
from service.preprocessing.text import DEFAULT_VOCAB, PAD_ID, chinese_clip_tokenizer, read_vocab
from training.export import onnx as graphs

THRESHOLDS: dict[Precision, float] = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.99}
GALLERY_IMAGES, GALLERY_QUERIES = 64, 32


@dataclass(frozen=True)
class ExportOptions:
    fp16: bool = False
    int8: bool = False
    batches: tuple[int, ...] = (1, 7)
    text_lengths: tuple[int, ...] = (1, 5, 52)
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


def _chinese_clip(model: torch.nn.Module) -> BundleDescription:
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


DESCRIBERS: dict[str, Callable[[torch.nn.Module], BundleDescription]] = {"chinese-clip": _chinese_clip}


def bundle_description(model: torch.nn.Module) -> BundleDescription:
    """The bundle description of ``model``'s family (``model.family``, looked up in ``DESCRIBERS``)."""
    family = getattr(model, "family", None)
    describe = DESCRIBERS.get(family) if isinstance(family, str) else None
    if describe is None:
        raise ValueError(
            f"cannot export a {type(model).__name__}: its family {family!r} has no bundle description;"
            f" set a `family` attribute on the model class and register it in"
            f" training.export.writer.DESCRIBERS (known: {sorted(DESCRIBERS)})"
        )
    return describe(model)


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
) -> Manifest:
    """Export ``model`` (a ``training.models.CLIP``, or any family in ``DESCRIBERS``) into ``out_dir``."""
    description = bundle_description(model)
    model = model.eval()
    config = model.config
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a stale manifest would make a half-rewritten directory look like a bundle until the hashes fail
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    description.tokenizer.save(str(out_dir / description.text.tokenizer))

    cases: dict[Tower, list[Case]] = {
        "image": image_cases(description.image.crop_size, options.batches, options.seed),
        "text": text_cases(
            config.context_length, config.vocab_size, options.batches, options.text_lengths, options.seed
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
        graphs.export_image_tower(model, config.image_resolution, raw["image"])
        log(f"exporting {config.name} text tower")
        graphs.export_text_tower(model, config.context_length, raw["text"])

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
        agreement = _int8_retrieval_agreement(out_dir, config, options.seed)
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
        logit_scale=float(model.logit_scale.detach().exp()),
        image=description.image,
        text=description.text,
        towers=towers,
        provenance={**provenance, "exported_with": {"torch": torch.__version__, "opset": graphs.OPSET}},
    )
    return write_manifest(out_dir, manifest)


def _int8_retrieval_agreement(out_dir: Path, config: Any, seed: int) -> float:
    """How often text->image top-10 over a synthetic gallery is the same with int8 as with fp32 graphs."""
    gallery = image_cases(config.image_resolution, (GALLERY_IMAGES,), seed + 1)[0]
    rng = np.random.default_rng(seed + 2)
    queries = text_cases(
        config.context_length, config.vocab_size, (GALLERY_QUERIES,), (int(rng.integers(4, 20)),), seed + 2
    )[0]

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

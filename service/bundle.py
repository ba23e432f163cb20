"""The model bundle: the one contract between training and serving (the single definition of its format).

A bundle is a directory holding ``manifest.json``, the tokenizer (``tokenizer.json``) and the engine files
of the two towers. The manifest describes the model — its family, the text pipeline (tokenizer file,
context length, pad id, graph inputs) and the image pipeline as data (resize mode and sizes, filter,
normalisation) — so the service serves Chinese-CLIP, AltCLIP and ALIGN alike without knowing which. It
records the sha256 of every file, so :meth:`Bundle.load` refuses a bundle whose files were changed,
truncated or lost instead of serving embeddings from the wrong weights.

Format 1 (Chinese-CLIP only: ``vocab.txt``, a squash size and mean/std) is still read: it is converted in
memory to what it meant (the ``cn-clip-bert`` WordPiece tokenizer from vocab.txt, squash, CLIP
normalisation); tools that rewrite a manifest refuse it (re-export with ``tuwen export``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.preprocessing import image as _image
from service.preprocessing.image import ImageSpec, Resample, ResizeMode

if TYPE_CHECKING:
    from service.preprocessing.text import TextTokenizer

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"

Family = Literal["chinese-clip", "altclip", "align"]
TextInput = Literal["input_ids", "attention_mask"]

Tower = Literal["image", "text"]
Precision = Literal["fp32", "fp16", "int8"]
TOWERS: tuple[Tower, ...] = ("image", "text")
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")


class BundleError(Exception):
    """A bundle that cannot be used: missing, tampered with, or of an unknown format."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeanStd(_Strict):
    """(x / 255 - mean) / std per channel."""

    kind: Literal["mean_std"] = "mean_std"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @model_validator(mode="after")
    def _positive_std(self) -> MeanStd:
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        return self


class Rescale(_Strict):
    """x * scale + offset on 0..255 values (ALIGN: scale 1/127.5, offset -1)."""

    kind: Literal["rescale"] = "rescale"
    scale: float = Field(gt=0)
    offset: float


class ImagePipeline(_Strict):
    """The image pipeline as data: resize, centre crop to ``crop_size`` (the tower's square input), normalise."""

    resize: ResizeMode = Field(
        description="squash: to crop_size x crop_size; shortest_edge: the short side to resize_size, then a "
        "centre crop; fixed: to resize_size [height, width], then a centre crop"
    )
    resize_size: int | tuple[int, int] = Field(
        description="squash: = crop_size; shortest_edge: the short side; fixed: [height, width]"
    )
    crop_size: int = Field(gt=0, description="the square input of the image tower, in pixels")
    resample: Resample = Field(description="Pillow's filter for the resize")
    normalize: Annotated[MeanStd | Rescale, Field(discriminator="kind")]

    @model_validator(mode="after")
    def _sizes_agree(self) -> ImagePipeline:
        self.spec()  # ImageSpec checks the sizes against the mode; its errors name the fix
        return self

    @property
    def size(self) -> int:
        """The tower's input size (the crop)."""
        return self.crop_size

    def spec(self) -> ImageSpec:
        """The pipeline ``service.preprocessing.image.preprocess`` runs."""
        norm = self.normalize
        return ImageSpec(
            size=self.crop_size,
            resize=self.resize,
            resize_size=self.resize_size,
            resample=self.resample,
            mean=norm.mean if isinstance(norm, MeanStd) else None,
            std=norm.std if isinstance(norm, MeanStd) else None,
            rescale=_image.Rescale(norm.scale, norm.offset) if isinstance(norm, Rescale) else None,
        )


class TextPipeline(_Strict):
    tokenizer: str = Field(
        "tokenizer.json", description="Hugging Face tokenizers file, relative to the bundle root"
    )
    normalizer: Literal["cn-clip-bert"] | None = Field(
        None, description="a Python pre-step before the tokenizer (service.preprocessing.text.NORMALIZERS)"
    )
    context_length: int = Field(gt=1, description="the longest input, special tokens included")
    pad_id: int = Field(ge=0)
    inputs: tuple[TextInput, ...] = Field(
        ("input_ids", "attention_mask"), description="the text graph's inputs, in order"
    )

    @model_validator(mode="after")
    def _inputs(self) -> TextPipeline:
        if not self.inputs or self.inputs[0] != "input_ids" or len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"inputs must start with input_ids and not repeat, got {list(self.inputs)}")
        return self


class Verification(_Strict):
    """How closely an engine file reproduced its reference on sample inputs when it was written."""

    reference: str = Field(description="what the outputs were compared with, e.g. 'pytorch fp32'")
    min_cosine: float
    max_abs_diff: float
    threshold: float = Field(description="the minimum cosine the file had to reach")
    cases: list[str] = Field(default_factory=list, description="the input shapes checked")
    extra: dict[str, float] = Field(default_factory=dict, description="e.g. top-10 retrieval agreement")


class EngineFile(_Strict):
    path: str = Field(description="relative to the bundle root")
    data_files: list[str] = Field(
        default_factory=list,
        description="external tensor data the graph loads, relative to the bundle root "
        "(graphs over protobuf's 2 GB limit)",
    )
    verification: Verification | None = None


class TensorRTEngines(_Strict):
    """Engines built for one GPU model and TensorRT version; they run nowhere else."""

    gpu: str
    tensorrt_version: str
    precision: Literal["fp32", "fp16"]
    max_batch: int = Field(gt=0)
    towers: dict[Tower, EngineFile]


class Manifest(_Strict):
    format_version: int = Field(
        description=f"{FORMAT_VERSION} when written; 1 only in memory, for a format-1 bundle read and converted"
    )
    model_name: str
    family: Family
    arch: str
    embed_dim: int = Field(gt=0)
    logit_scale: float = Field(
        description="exp(logit_scale): the similarity temperature the model was trained with"
    )
    image: ImagePipeline
    text: TextPipeline
    towers: dict[Tower, dict[Precision, EngineFile]]
    tensorrt: dict[str, TensorRTEngines] = Field(
        default_factory=dict, description="keyed by the engines' directory name under trt/"
    )
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256 of every file")
    provenance: dict[str, Any] = Field(default_factory=dict, description="where the weights came from")

    def referenced_files(self) -> list[str]:
        """Every file the manifest points at (the ones that must be hashed)."""
        paths = [self.text.tokenizer]
        graphs = [f for by_precision in self.towers.values() for f in by_precision.values()]
        paths += [path for f in graphs for path in (f.path, *f.data_files)]
        paths += [f.path for engines in self.tensorrt.values() for f in engines.towers.values()]
        return sorted(set(paths))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash every referenced file under ``root`` and write ``manifest.json``; returns the hashed manifest."""
    root = Path(root)
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{root} is a format-{manifest.format_version} bundle, read in compatibility mode; re-export it with"
            f" `tuwen export` (format {FORMAT_VERSION}) before changing it"
        )
    files: dict[str, str] = {}
    for rel in manifest.referenced_files():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"cannot write the manifest of {root}: {rel} does not exist")
        files[rel] = sha256_of(path)
    hashed = manifest.model_copy(update={"files": files})
    (root / MANIFEST_NAME).write_text(hashed.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return hashed


def read_manifest(root: Path) -> Manifest:
    """Parse ``manifest.json`` without checking the files (see :meth:`Bundle.load` for that)."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(
            f"{root} is not a model bundle: {MANIFEST_NAME} is missing (create one with `tuwen export`)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version not in READABLE_VERSIONS:
        raise BundleError(
            f"{path} has bundle format version {version!r}; this Tuwen reads versions"
            f" {', '.join(map(str, READABLE_VERSIONS))}. Re-export the model with this version's `tuwen export`,"
            " or upgrade Tuwen."
        )
    try:
        return Manifest.model_validate(raw) if version == FORMAT_VERSION else _from_v1(raw)
    except ValidationError as exc:
        raise BundleError(
            f"{path} is not a valid version-{version} manifest:\n{exc}\n"
            f"Re-export the model with `tuwen export` to write a valid version-{FORMAT_VERSION} manifest."
        ) from exc


class _ImageV1(_Strict):
    size: int = Field(gt=0)
    resize: Resample = "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class _TextV1(_Strict):
    vocab_file: str = "vocab.txt"
    context_length: int = Field(52, gt=2)
    lowercase: Literal[True] = True  # format 1 always lower-cased (Chinese-CLIP's uncased BERT)


class _ManifestV1(Manifest):
    format_version: Literal[1]
    family: Literal["chinese-clip"] = "chinese-clip"
    image: _ImageV1  # type: ignore[assignment]  # the old sections, converted by _from_v1
    text: _TextV1  # type: ignore[assignment]


def _from_v1(raw: dict[str, Any]) -> Manifest:
    """A format-1 (Chinese-CLIP) manifest as format 2 says it: the WordPiece vocab with the cn-clip-bert
    pre-step (``Bundle.tokenizer`` builds it from vocab.txt), squash, CLIP-style mean/std."""
    old = _ManifestV1.model_validate(raw)
    image = ImagePipeline(
        resize="squash",
        resize_size=old.image.size,
        crop_size=old.image.size,
        resample=old.image.resize,
        normalize=MeanStd(mean=old.image.mean, std=old.image.std),
    )
    text = TextPipeline(
        tokenizer=old.text.vocab_file,
        normalizer="cn-clip-bert",
        context_length=old.text.context_length,
        pad_id=0,
    )
    fields = {name: getattr(old, name) for name in Manifest.model_fields}
    return Manifest(**{**fields, "format_version": 1, "image": image, "text": text})


class Bundle:
    """A verified model bundle on disk."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def load(cls, root: str | Path, *, verify_hashes: bool = True) -> Bundle:
        root = Path(root)
        manifest = read_manifest(root)
        unhashed = [rel for rel in manifest.referenced_files() if rel not in manifest.files]
        if unhashed:
            raise BundleError(f"{root / MANIFEST_NAME} lists no sha256 for {', '.join(unhashed)}")
        for rel, expected in manifest.files.items():
            path = root / rel
            if not path.is_file():
                raise BundleError(f"bundle {root} is incomplete: {rel} is missing")
            if verify_hashes and sha256_of(path) != expected:
                raise BundleError(
                    f"bundle {root}: {rel} does not match the sha256 in {MANIFEST_NAME} "
                    "(the file was modified or truncated); re-export or re-copy the bundle"
                )
        return cls(root, manifest)

    @property
    def model_name(self) -> str:
        return self.manifest.model_name

    @property
    def embed_dim(self) -> int:
        return self.manifest.embed_dim

    def precisions(self, tower: Tower) -> list[Precision]:
        return [p for p in PRECISIONS if p in self.manifest.towers.get(tower, {})]

    def file(self, tower: Tower, precision: Precision = "fp32") -> Path:
        try:
            return self.root / self.manifest.towers[tower][precision].path
        except KeyError:
            raise BundleError(
                f"bundle {self.root} has no {precision} {tower} graph (it has: {self.precisions(tower) or 'none'})"
            ) from None

    def tensorrt_engines(self, target: str) -> TensorRTEngines | None:
        """The engines built for ``target`` (``<gpu-name>-trt<version>``), if the bundle has them."""
        return self.manifest.tensorrt.get(target)

    @property
    def family(self) -> Family:
        return self.manifest.family

    def tokenizer(self) -> TextTokenizer:
        from service.preprocessing.text import ChineseTokenizer, TextTokenizer

        text = self.manifest.text
        if self.manifest.format_version == 1:  # format 1 shipped Chinese-CLIP's vocab.txt, not tokenizer.json
            return ChineseTokenizer.from_vocab(self.root / text.tokenizer, context_length=text.context_length)
        return TextTokenizer.from_file(
            self.root / text.tokenizer,
            context_length=text.context_length,
            pad_id=text.pad_id,
            normalizer=text.normalizer,
        )

    def image_spec(self) -> ImageSpec:
        return self.manifest.image.spec()

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r}, model={self.model_name!r}, family={self.family!r}, dim={self.embed_dim})"

"""The model bundle: the one contract between training and serving (the single definition of its format).

A bundle is a directory holding ``manifest.json``, the vocabulary and the engine files of the two towers.
The manifest records the sha256 of every file, so :meth:`Bundle.load` refuses a bundle whose files were
changed, truncated or lost instead of serving embeddings from the wrong weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from service.preprocessing.image import ImageSpec
    from service.preprocessing.text import ChineseTokenizer

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

Tower = Literal["image", "text"]
Precision = Literal["fp32", "fp16", "int8"]
TOWERS: tuple[Tower, ...] = ("image", "text")
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")


class BundleError(Exception):
    """A bundle that cannot be used: missing, tampered with, or of an unknown format."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImagePreprocessing(_Strict):
    size: int = Field(gt=0, description="square input resolution in pixels")
    resize: str = Field("bicubic", description="resampling filter used to squash the image to size x size")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class TextPreprocessing(_Strict):
    vocab_file: str = Field("vocab.txt", description="WordPiece vocabulary, relative to the bundle root")
    context_length: int = Field(52, gt=2)
    lowercase: bool = True


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
    format_version: int
    model_name: str
    family: str = "chinese-clip"
    arch: str
    embed_dim: int = Field(gt=0)
    logit_scale: float = Field(
        description="exp(logit_scale): the similarity temperature the model was trained with"
    )
    image: ImagePreprocessing
    text: TextPreprocessing
    towers: dict[Tower, dict[Precision, EngineFile]]
    tensorrt: dict[str, TensorRTEngines] = Field(
        default_factory=dict, description="keyed by the engines' directory name under trt/"
    )
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256 of every file")
    provenance: dict[str, Any] = Field(default_factory=dict, description="where the weights came from")

    def referenced_files(self) -> list[str]:
        """Every file the manifest points at (the ones that must be hashed)."""
        paths = [self.text.vocab_file]
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
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format version {version!r}; this Tuwen reads version {FORMAT_VERSION}. "
            "Re-export the model with this version's `tuwen export`, or upgrade Tuwen."
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{path} is not a valid version-{FORMAT_VERSION} manifest:\n{exc}") from exc


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

    def tokenizer(self) -> ChineseTokenizer:
        from service.preprocessing.text import ChineseTokenizer

        text = self.manifest.text
        return ChineseTokenizer.from_vocab(self.root / text.vocab_file, context_length=text.context_length)

    def image_spec(self) -> ImageSpec:
        from service.preprocessing.image import ImageSpec

        image = self.manifest.image
        return ImageSpec(size=image.size, mean=image.mean, std=image.std, resize=image.resize)

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r}, model={self.model_name!r}, dim={self.embed_dim})"

"""The TensorRT engine cache: where plans live, what they were built from, and whether they still fit.

Engines run only on the GPU model and TensorRT version that built them, and only answer for the graphs
they were built from. A cache directory therefore holds one ``<gpu>-trt<version>/`` directory per
target, each with the plans and an ``engines.json`` recording the bundle's identity (model name and the
sha256 of the source ONNX files), the precision, the largest batch, the verification figures and the
sha256 of each plan. ``engines.json`` is written last, so a half-built directory is never taken for a
valid one. This module does no TensorRT or CUDA work, so every rule here is checked on any machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.bundle import TOWERS, Bundle, Tower, Verification, sha256_of

RECORD_NAME = "engines.json"
RECORD_VERSION = 1
BUNDLE_ENGINE_DIR = "trt"  # the bundle's own cache, used when it is writable

EnginePrecision = Literal["fp32", "fp16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleIdentity(_Strict):
    """What the engines were built from: a different model or different graphs make them stale."""

    model_name: str
    sources: dict[str, str] = Field(description="bundle-relative ONNX file (and external data) -> sha256")


class PlanFile(_Strict):
    path: str = Field(description="relative to the engines' directory")
    sha256: str
    verification: Verification


class EngineRecord(_Strict):
    """The contents of ``engines.json``."""

    record_version: int = RECORD_VERSION
    bundle: BundleIdentity
    gpu: str
    tensorrt_version: str
    precision: EnginePrecision
    max_batch: int = Field(gt=0)
    towers: dict[Tower, PlanFile]


class EngineCacheError(Exception):
    """The engine cache cannot be used as asked (e.g. no writable place for it)."""


class StaleEngines(EngineCacheError):
    """A cached engine directory that must not be used (missing, for other graphs, tampered, too small)."""


@dataclass(frozen=True)
class CachedEngines:
    directory: Path
    record: EngineRecord

    def plan(self, tower: Tower) -> Path:
        return self.directory / self.record.towers[tower].path


def bundle_identity(bundle: Bundle) -> BundleIdentity:
    """The model name and the hashes of the fp32 graphs (the engines' sources), as the manifest lists them.

    ``Bundle.load`` has already checked those hashes against the files, so nothing is re-read here.
    """
    sources: dict[str, str] = {}
    for tower in TOWERS:
        graph = bundle.manifest.towers[tower]["fp32"]
        for rel in (graph.path, *graph.data_files):
            sources[rel] = bundle.manifest.files[rel]
    return BundleIdentity(model_name=bundle.model_name, sources=sources)


def read_record(directory: Path) -> EngineRecord:
    path = directory / RECORD_NAME
    if not path.is_file():
        raise StaleEngines(f"{directory} holds no {RECORD_NAME}")
    try:
        return EngineRecord.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise StaleEngines(f"{path} is not a valid engine record: {exc.errors()[0]['msg']}") from exc


def check_engines(
    directory: Path,
    identity: BundleIdentity,
    *,
    precision: EnginePrecision | None = None,
    min_batch: int = 1,
) -> CachedEngines:
    """The engines in ``directory`` if they were built from ``identity`` and their plans are intact.

    ``precision`` None accepts either; ``min_batch`` is the largest batch the caller will send.
    Raises :class:`StaleEngines` saying why they cannot be used.
    """
    record = read_record(directory)
    if record.bundle != identity:
        raise StaleEngines(
            f"{directory} was built for {record.bundle.model_name} with other ONNX graphs "
            f"than this bundle's {identity.model_name}"
        )
    if precision is not None and record.precision != precision:
        raise StaleEngines(f"{directory} holds {record.precision} engines, not {precision}")
    if record.max_batch < min_batch:
        raise StaleEngines(f"{directory} engines take batches up to {record.max_batch}, not {min_batch}")
    missing = [t for t in TOWERS if t not in record.towers]
    if missing:
        raise StaleEngines(f"{directory} has no engine for the {', '.join(missing)} tower")
    found = CachedEngines(directory, record)
    for tower in TOWERS:
        plan = found.plan(tower)
        if not plan.is_file():
            raise StaleEngines(f"{plan} is missing")
        if sha256_of(plan) != record.towers[tower].sha256:
            raise StaleEngines(f"{plan} does not match the sha256 in {RECORD_NAME} (modified or truncated)")
    return found


def find_engines(
    roots: list[Path],
    target: str,
    identity: BundleIdentity,
    *,
    precision: EnginePrecision | None = None,
    min_batch: int = 1,
) -> tuple[CachedEngines | None, list[str]]:
    """The first valid ``<root>/<target>/`` engines, and why each other candidate was refused."""
    refused: list[str] = []
    for root in roots:
        try:
            return check_engines(root / target, identity, precision=precision, min_batch=min_batch), refused
        except StaleEngines as exc:
            refused.append(str(exc))
    return None, refused


def search_roots(bundle: Bundle, cache_dir: Path | None) -> list[Path]:
    """Where engines are looked for: the configured cache first, then the bundle's own ``trt/``."""
    roots = [Path(cache_dir)] if cache_dir else []
    own = bundle.root / BUNDLE_ENGINE_DIR
    return roots + ([own] if own not in roots else [])


def build_root(bundle_root: Path, cache_dir: Path | None) -> Path:
    """Where `tuwen build-engines` writes: the given cache, else the bundle's ``trt/`` when writable."""
    if cache_dir:
        return Path(cache_dir)
    own = Path(bundle_root) / BUNDLE_ENGINE_DIR
    if os.access(own if own.exists() else bundle_root, os.W_OK):
        return own
    raise EngineCacheError(
        f"the bundle {bundle_root} is read-only, so engines cannot be cached inside it; "
        "pass --cache-dir DIR or set TUWEN_ENGINE_CACHE_DIR to a writable directory (a volume)"
    )


def plan_file(directory: Path, name: str, verification: Verification) -> PlanFile:
    return PlanFile(path=name, sha256=sha256_of(directory / name), verification=verification)


def write_record(directory: Path, record: EngineRecord) -> None:
    """Write ``engines.json`` atomically: it is what makes the directory's plans usable."""
    tmp = directory / f".{RECORD_NAME}.tmp"
    tmp.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(directory / RECORD_NAME)


def invalidate(directory: Path) -> None:
    """Drop the record before plans are rewritten, so an interrupted rebuild is never taken as valid."""
    (directory / RECORD_NAME).unlink(missing_ok=True)

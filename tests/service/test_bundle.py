"""The bundle format: manifests round-trip, and tampered, missing or unknown-version bundles are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.bundle import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Bundle,
    BundleError,
    EngineFile,
    ImagePreprocessing,
    Manifest,
    TextPreprocessing,
    Verification,
    write_manifest,
)


def _manifest() -> Manifest:
    check = Verification(reference="pytorch fp32", min_cosine=0.999999, max_abs_diff=1e-6, threshold=0.99999)
    return Manifest(
        format_version=FORMAT_VERSION,
        model_name="tiny-vit",
        arch="tiny-vit",
        embed_dim=32,
        logit_scale=100.0,
        image=ImagePreprocessing(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        text=TextPreprocessing(),
        towers={
            "image": {"fp32": EngineFile(path="image.onnx", verification=check)},
            "text": {"fp32": EngineFile(path="text.onnx", verification=check)},
        },
        provenance={"source": "random"},
    )


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    for name in ("vocab.txt", "image.onnx", "text.onnx"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    write_manifest(tmp_path, _manifest())
    return tmp_path


def test_round_trip_hashes_every_file(bundle_dir: Path) -> None:
    bundle = Bundle.load(bundle_dir)
    assert bundle.model_name == "tiny-vit"
    assert bundle.embed_dim == 32
    assert set(bundle.manifest.files) == {"vocab.txt", "image.onnx", "text.onnx"}
    assert bundle.file("text", "fp32") == bundle_dir / "text.onnx"
    assert bundle.manifest.towers["image"]["fp32"].verification.min_cosine == pytest.approx(0.999999)


def test_tampered_file_is_refused(bundle_dir: Path) -> None:
    with (bundle_dir / "image.onnx").open("ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match=r"image\.onnx does not match the sha256"):
        Bundle.load(bundle_dir)


def test_missing_file_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "text.onnx").unlink()
    with pytest.raises(BundleError, match=r"text\.onnx is missing"):
        Bundle.load(bundle_dir)


def test_unknown_format_version_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"format version 2; this Tuwen reads version 1"):
        Bundle.load(bundle_dir)


def test_unhashed_file_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / MANIFEST_NAME
    raw = json.loads(path.read_text())
    del raw["files"]["vocab.txt"]
    path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"no sha256 for vocab\.txt"):
        Bundle.load(bundle_dir)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        Bundle.load(tmp_path)


def test_absent_precision_names_what_exists(bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match=r"no int8 text graph \(it has: \['fp32'\]\)"):
        Bundle.load(bundle_dir).file("text", "int8")

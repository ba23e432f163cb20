"""The bundle format: manifests round-trip, describe their model's pipelines, format-1 bundles load
converted, and tampered, missing, invalid or unknown-version bundles are refused."""

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
    ImagePipeline,
    Manifest,
    MeanStd,
    Rescale,
    TextPipeline,
    Verification,
    write_manifest,
)
from service.preprocessing.image import CLIP_MEAN, CLIP_STD, ImageSpec
from service.preprocessing.text import DEFAULT_VOCAB, ChineseTokenizer, chinese_clip_tokenizer, read_vocab


def _manifest() -> Manifest:
    check = Verification(reference="pytorch fp32", min_cosine=0.999999, max_abs_diff=1e-6, threshold=0.99999)
    return Manifest(
        format_version=FORMAT_VERSION,
        model_name="tiny-vit",
        family="chinese-clip",
        arch="tiny-vit",
        embed_dim=32,
        logit_scale=100.0,
        image=ImagePipeline(
            resize="squash",
            resize_size=64,
            crop_size=64,
            resample="bicubic",
            normalize=MeanStd(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        ),
        text=TextPipeline(normalizer="cn-clip-bert", context_length=52, pad_id=0),
        towers={
            "image": {"fp32": EngineFile(path="image.onnx", verification=check)},
            "text": {"fp32": EngineFile(path="text.onnx", verification=check)},
        },
        provenance={"source": "random"},
    )


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    for name in ("image.onnx", "text.onnx"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    chinese_clip_tokenizer(read_vocab(DEFAULT_VOCAB)).save(str(tmp_path / "tokenizer.json"))
    write_manifest(tmp_path, _manifest())
    return tmp_path


def test_round_trip_hashes_every_file(bundle_dir: Path) -> None:
    bundle = Bundle.load(bundle_dir)
    assert bundle.model_name == "tiny-vit"
    assert bundle.embed_dim == 32
    assert bundle.family == "chinese-clip"
    assert set(bundle.manifest.files) == {"tokenizer.json", "image.onnx", "text.onnx"}
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
    with pytest.raises(BundleError, match=r"format version 3; this Tuwen reads versions 1, 2"):
        Bundle.load(bundle_dir)


def test_unhashed_file_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / MANIFEST_NAME
    raw = json.loads(path.read_text())
    del raw["files"]["tokenizer.json"]
    path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"no sha256 for tokenizer\.json"):
        Bundle.load(bundle_dir)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        Bundle.load(tmp_path)


def test_absent_precision_names_what_exists(bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match=r"no int8 text graph \(it has: \['fp32'\]\)"):
        Bundle.load(bundle_dir).file("text", "int8")


def test_v2_tokenizer_and_image_spec_come_from_the_manifest(bundle_dir: Path) -> None:
    bundle = Bundle.load(bundle_dir)
    tokenizer = bundle.tokenizer()
    texts = ["一只橘猫", "“UPPER” Quotes", "长" * 80]
    assert tokenizer.encode(texts) == ChineseTokenizer.from_vocab().encode(texts)
    assert (tokenizer.context_length, tokenizer.pad_id, tokenizer.normalizer) == (52, 0, "cn-clip-bert")
    spec = bundle.image_spec()
    assert spec == ImageSpec(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert bundle.manifest.image.size == 64 and spec.decode_min_side == 128


def test_other_families_pipelines_round_trip() -> None:
    align = ImagePipeline(
        resize="fixed",
        resize_size=(346, 346),
        crop_size=289,
        resample="bilinear",
        normalize=Rescale(scale=1 / 127.5, offset=-1.0),
    )
    altclip = ImagePipeline(
        resize="shortest_edge",
        resize_size=224,
        crop_size=224,
        resample="bicubic",
        normalize=MeanStd(mean=CLIP_MEAN, std=CLIP_STD),
    )
    for pipeline in (align, altclip):
        assert ImagePipeline.model_validate_json(pipeline.model_dump_json()) == pipeline
    spec = align.spec()
    assert (spec.resize, spec.resize_size, spec.size, spec.resample) == ("fixed", (346, 346), 289, "bilinear")
    assert spec.rescale is not None and spec.mean is None and spec.decode_min_side == 692
    assert altclip.spec().resized_size(640, 480) == (298, 224)
    text = TextPipeline(context_length=77, pad_id=1)
    assert text.tokenizer == "tokenizer.json" and text.inputs == ("input_ids", "attention_mask")


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        ("image", {"resize": "crop"}, "resize"),
        ("image", {"resize_size": 32}, "resize_size must be 64"),
        ("image", {"resize": "fixed", "resize_size": [300, 40]}, r"\(height, width\), each >= size"),
        ("image", {"resample": "lanczos"}, "resample"),
        ("image", {"normalize": {"kind": "rescale", "scale": 0.1}}, "offset"),
        ("image", {"colour": "srgb"}, "Extra inputs are not permitted"),
        ("text", {"inputs": ["attention_mask"]}, "must start with input_ids"),
        ("text", {"normalizer": "nfkc"}, "normalizer"),
        ("text", {"pad_id": -1}, "pad_id"),
        (None, {"family": "openclip"}, "family"),
        (None, {"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_v2_manifest_is_refused(
    bundle_dir: Path, section: str | None, change: dict[str, object], message: str
) -> None:
    path = bundle_dir / MANIFEST_NAME
    raw = json.loads(path.read_text())
    (raw if section is None else raw[section]).update(change)
    path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=message) as caught:
        Bundle.load(bundle_dir)
    assert "Re-export the model with `tuwen export`" in str(caught.value)


def _write_v1_bundle(root: Path) -> None:
    """A format-1 bundle as `tuwen export` wrote it before format 2: vocab.txt, a squash size, mean/std."""
    (root / "vocab.txt").write_bytes(DEFAULT_VOCAB.read_bytes())
    for name in ("image.onnx", "text.onnx"):
        (root / name).write_bytes(name.encode() * 100)
    check = {"reference": "pytorch fp32", "min_cosine": 0.999999, "max_abs_diff": 1e-6, "threshold": 0.99999}
    manifest = {
        "format_version": 1,
        "model_name": "tiny-vit",
        "family": "chinese-clip",
        "arch": "tiny-vit",
        "embed_dim": 32,
        "logit_scale": 100.0,
        "image": {"size": 64, "resize": "bicubic", "mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
        "text": {"vocab_file": "vocab.txt", "context_length": 24, "lowercase": True},
        "towers": {
            "image": {"fp32": {"path": "image.onnx", "data_files": [], "verification": check}},
            "text": {"fp32": {"path": "text.onnx", "data_files": [], "verification": check}},
        },
        "tensorrt": {},
        "files": {},
        "provenance": {"source": "random"},
    }
    from service.bundle import sha256_of

    manifest["files"] = {n: sha256_of(root / n) for n in ("vocab.txt", "image.onnx", "text.onnx")}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))


def test_v1_bundle_loads_converted(tmp_path: Path) -> None:
    _write_v1_bundle(tmp_path)
    bundle = Bundle.load(tmp_path)
    manifest = bundle.manifest
    assert (manifest.format_version, bundle.family, bundle.model_name) == (1, "chinese-clip", "tiny-vit")
    assert manifest.image == ImagePipeline(
        resize="squash",
        resize_size=64,
        crop_size=64,
        resample="bicubic",
        normalize=MeanStd(mean=CLIP_MEAN, std=CLIP_STD),
    )
    assert manifest.text == TextPipeline(
        tokenizer="vocab.txt", normalizer="cn-clip-bert", context_length=24, pad_id=0
    )
    assert bundle.image_spec() == ImageSpec(size=64)
    texts = ["一只橘猫", "“UPPER” Quotes", "长" * 80]
    tokenizer = bundle.tokenizer()
    assert tokenizer.encode(texts) == ChineseTokenizer.from_vocab(context_length=24).encode(texts)
    assert tokenizer.tokenize(texts).shape == (3, 24)
    # still hash-checked, and never rewritten as if it were format 2
    with pytest.raises(BundleError, match=r"format-1 bundle.*re-export it with `tuwen export`"):
        write_manifest(tmp_path, manifest)
    with (tmp_path / "vocab.txt").open("ab") as f:
        f.write(b"x\n")
    with pytest.raises(BundleError, match=r"vocab\.txt does not match the sha256"):
        Bundle.load(tmp_path)


def test_v1_bundle_with_what_format_2_cannot_say_is_refused(tmp_path: Path) -> None:
    _write_v1_bundle(tmp_path)
    path = tmp_path / MANIFEST_NAME
    raw = json.loads(path.read_text())
    raw["image"]["resize"] = "lanczos"
    path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"not a valid version-1 manifest(.|\n)*Re-export the model"):
        Bundle.load(tmp_path)

"""Export of tiny random models: ONNX vs PyTorch at many shapes, padding invariance, fp16/int8, failures, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bundles import make_tiny_bundle

from service.bundle import Bundle, sha256_of
from service.cli import main
from service.engines.verify import (
    VerificationFailed,
    cpu_session,
    image_cases,
    pad_ids,
    row_cosines,
    text_cases,
)
from service.preprocessing.image import ImageSpec
from service.preprocessing.text import ChineseTokenizer
from training.checkpoints import save_hf_directory
from training.export import writer
from training.models import build_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["tiny-vit", "tiny-rn"])
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[torch.nn.Module, Bundle]:
    arch = request.param
    root = make_tiny_bundle(tmp_path_factory.mktemp(arch), arch=arch, seed=3, fp16=True, int8=True)
    torch.manual_seed(3)
    return build_model(arch).eval(), Bundle.load(root)


def _torch_text(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return F.normalize(model.encode_text(torch.from_numpy(ids), torch.from_numpy(mask)), dim=-1).numpy()


def _torch_image(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return F.normalize(model.encode_image(torch.from_numpy(pixels)), dim=-1).numpy()


def test_fp32_matches_pytorch_at_every_batch_and_length(exported: tuple[torch.nn.Module, Bundle]) -> None:
    model, bundle = exported
    config = model.config
    text = cpu_session(bundle.file("text", "fp32"))
    for case in text_cases(config.context_length, config.vocab_size, batches=(1, 7, 64), seed=11):
        got = text.run(None, dict(case.feeds))[0]
        want = _torch_text(model, case.feeds["input_ids"], case.feeds["attention_mask"])
        assert got.shape == want.shape, case.name
        assert row_cosines(want, got).min() >= 0.99999, case.name
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5), (
            "outputs are L2-normalised in the graph"
        )
    image = cpu_session(bundle.file("image", "fp32"))
    for case in image_cases(config.image_resolution, batches=(1, 7, 64), seed=11):
        got = image.run(None, dict(case.feeds))[0]
        assert row_cosines(_torch_image(model, case.feeds["pixel_values"]), got).min() >= 0.99999, case.name


def test_padding_does_not_change_the_embedding(exported: tuple[torch.nn.Module, Bundle]) -> None:
    _, bundle = exported
    session = cpu_session(bundle.file("text", "fp32"))
    tokenizer = bundle.tokenizer()
    encoded = tokenizer.encode(["一只橘猫", "北京天安门广场上的人群，阳光明媚"])
    unpadded = [
        session.run(None, dict(zip(("input_ids", "attention_mask"), pad_ids([row]), strict=True)))[0]
        for row in encoded
    ]
    ids, mask = tokenizer.pad(encoded, length=tokenizer.context_length)
    padded = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert ids.shape[1] == 52
    assert row_cosines(np.concatenate(unpadded), padded).min() >= 0.99999


def test_manifest_records_verification_at_thresholds(exported: tuple[torch.nn.Module, Bundle]) -> None:
    model, bundle = exported
    manifest = bundle.manifest
    assert manifest.embed_dim == model.config.embed_dim
    assert manifest.image.size == model.config.image_resolution
    assert manifest.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    for tower in ("image", "text"):
        for precision, minimum in (("fp32", 0.99999), ("fp16", 0.999), ("int8", 0.99)):
            check = manifest.towers[tower][precision].verification
            assert check.reference == "pytorch fp32"
            assert check.min_cosine >= minimum == check.threshold
    agreement = manifest.towers["text"]["int8"].verification.extra["top10_agreement_text_to_image"]
    assert 0.0 <= agreement <= 1.0
    assert (manifest.family, manifest.format_version, manifest.text.tokenizer) == (
        "chinese-clip",
        2,
        "tokenizer.json",
    )
    assert manifest.image.spec() == ImageSpec(
        size=model.config.image_resolution
    )  # bicubic squash, CLIP mean/std
    assert (manifest.text.normalizer, manifest.text.pad_id) == ("cn-clip-bert", 0)
    texts = ["一只橘猫", "“UPPER” Quotes", "长" * 80]
    assert bundle.tokenizer().encode(texts) == ChineseTokenizer.from_vocab().encode(texts)
    assert not (bundle.root / "vocab.txt").exists()


def test_a_model_without_a_bundle_description_is_refused(tmp_path: Path) -> None:
    from training.export.writer import bundle_description

    class Mystery(torch.nn.Module):
        family = "openclip"

    with pytest.raises(ValueError, match=r"family 'openclip' has no bundle description.*DESCRIBERS"):
        bundle_description(Mystery())
    with pytest.raises(ValueError, match=r"family None"):
        writer.export_bundle(torch.nn.Linear(1, 1), tmp_path, provenance={})


def test_int8_weights_use_seven_bits(exported: tuple[torch.nn.Module, Bundle]) -> None:
    """reduce_range: full-range s8 weights saturate ONNX Runtime's u8×s8 kernel on CPUs without VNNI
    (training/export/onnx.py); 7-bit weights cannot."""
    import onnx
    from onnx import numpy_helper

    _, bundle = exported
    for tower in ("image", "text"):
        graph = onnx.load(str(bundle.file(tower, "int8"))).graph
        weights = [
            numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8
        ]
        assert weights, f"the {tower} int8 graph holds no int8 weights"
        assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64


def test_fp16_graph_keeps_float32_io(exported: tuple[torch.nn.Module, Bundle]) -> None:
    _, bundle = exported
    session = cpu_session(bundle.file("text", "fp16"))
    assert {i.type for i in session.get_inputs()} == {"tensor(int64)"}
    assert session.get_outputs()[0].type == "tensor(float)"


def test_export_below_threshold_fails_and_leaves_no_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(writer.THRESHOLDS, "fp32", 1.5)  # unreachable: every export must now fail
    with pytest.raises(
        VerificationFailed, match=r"image\.onnx: min cosine 1\.0000\d* vs pytorch fp32 is below 1\.5"
    ):
        make_tiny_bundle(tmp_path / "bundle")
    assert not (tmp_path / "bundle" / "manifest.json").exists()


def test_cli_exports_an_official_format_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(5)
    model = build_model("tiny-vit")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "step": 10, "name": "tiny", "state_dict": state}, tmp_path / "epoch1.pt")
    out = tmp_path / "bundle"
    assert main(["export", str(tmp_path / "epoch1.pt"), "--arch", "tiny-vit", "--out", str(out)]) == 0
    bundle = Bundle.load(out)
    assert bundle.precisions("image") == ["fp32"]
    pixels = image_cases(64, (3,), seed=1)[0].feeds["pixel_values"]
    got = cpu_session(bundle.file("image")).run(None, {"pixel_values": pixels})[0]
    assert row_cosines(_torch_image(model.eval(), pixels), got).min() >= 0.99999
    assert json.loads((out / "manifest.json").read_text())["provenance"]["checkpoint"].endswith("epoch1.pt")


def test_cli_export_of_a_missing_checkpoint_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["export", str(tmp_path / "nope.pt"), "--arch", "tiny-vit", "--out", str(tmp_path / "b")]) != 0
    )
    assert "nope.pt" in capsys.readouterr().err


def test_cli_exports_a_hugging_face_directory(tmp_path: Path) -> None:
    torch.manual_seed(6)
    model = build_model("tiny-vit").eval()
    save_hf_directory(model, tmp_path / "hf")
    out = tmp_path / "bundle"
    assert main(["export", str(tmp_path / "hf"), "--arch", "tiny-vit", "--out", str(out)]) == 0
    bundle = Bundle.load(out)
    ids, mask = pad_ids([[101, 2769, 4263, 102], [101, 102]])
    got = cpu_session(bundle.file("text")).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert row_cosines(_torch_text(model, ids, mask), got).min() >= 0.99999


def test_small_graphs_keep_their_weights_inline(exported: tuple[torch.nn.Module, Bundle]) -> None:
    _, bundle = exported
    assert all(f.data_files == [] for by in bundle.manifest.towers.values() for f in by.values())
    assert not list(bundle.root.glob("*.data"))


def test_graphs_over_the_size_limit_keep_hashed_external_data(tmp_path: Path) -> None:
    """The > 2 GB path (ViT-H-14's fp32 image tower), forced on a tiny model by a zero-byte limit."""
    from service.bundle import BundleError
    from service.engines import load_towers

    torch.manual_seed(5)
    model = build_model("tiny-vit").eval()
    root = tmp_path / "bundle"
    options = writer.ExportOptions(fp16=True, int8=True, batches=(1, 3), external_data_bytes=0)
    writer.export_bundle(model, root, provenance={"source": "random"}, options=options, log=lambda _: None)
    bundle = Bundle.load(root)
    for tower, by_precision in bundle.manifest.towers.items():
        for precision, entry in by_precision.items():
            assert entry.data_files == [f"{entry.path}.data"], (tower, precision)
            data = root / entry.data_files[0]
            assert data.stat().st_size > (root / entry.path).stat().st_size  # the weights are there
            assert bundle.manifest.files[entry.data_files[0]] == sha256_of(data)
            assert entry.verification.min_cosine >= writer.THRESHOLDS[precision]

    # ONNX Runtime reads the weights through the bundle and reproduces PyTorch
    towers = load_towers(bundle, backend="onnxruntime", precision="fp32", threads=1)
    pixels = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert row_cosines(towers.image.embed(pixels), _torch_image(model, pixels)).min() >= 0.99999
    ids, mask = bundle.tokenizer().pad(bundle.tokenizer().encode(["一只猫", "雪山"]))
    assert row_cosines(towers.text.embed(ids, mask), _torch_text(model, ids, mask)).min() >= 0.99999

    data = root / "image.onnx.data"
    data.write_bytes(data.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(BundleError, match=r"image\.onnx\.data does not match the sha256"):
        Bundle.load(root)
    data.unlink()
    with pytest.raises(BundleError, match=r"image\.onnx\.data is missing"):
        Bundle.load(root)

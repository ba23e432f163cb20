"""AltCLIP and ALIGN export: `tuwen export HF_DIR` writes a format-2 bundle whose embeddings, through
`tuwen embed --bundle` (ONNX Runtime, the bundle's own tokenizer and image pipeline), equal
``transformers``' ``get_text_features`` / ``get_image_features`` of the same directory, fed by transformers'
own tokenizer and image processor (cosine >= 0.99999, fp32).

The tiny models are random with every parameter and buffer perturbed, saved as Hugging Face directories
with a SentencePiece model / WordPiece vocab and a preprocessor_config.json made in the test
(tests/family_bundles.py; no downloads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from family_bundles import perturbed_model, random_images, save_hf_directory

from service.bundle import Bundle, sha256_of
from service.cli import main
from service.engines.verify import row_cosines
from service.preprocessing.image import CLIP_MEAN, CLIP_STD, ImageSpec, Rescale
from training.export import writer

pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")

FAMILIES = ("altclip", "align")
TEXTS = [
    "两个红色的大圆形在左边",
    "three small blue squares at the top",
    "一只橘猫 and a dog!",
    "图片的中间画着一个紫色小星形，" * 6,  # longer than ALIGN's 64 tokens: truncated the same way
]
FP32 = 0.99999


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    family = request.param
    root = tmp_path_factory.mktemp(family)
    model = perturbed_model(family, seed=3)
    directory = save_hf_directory(model, family, root / "hf")
    out = root / "bundle"
    assert main(["export", str(directory), "--out", str(out), "--fp16", "--int8"]) == 0
    return {"family": family, "model": model, "dir": directory, "bundle": Bundle.load(out), "root": root}


def _hf(family: str, directory: Path) -> tuple[Any, Any, Any]:
    """(model, tokenizer, image processor) as transformers loads the directory."""
    if family == "altclip":
        model = transformers.AltCLIPModel.from_pretrained(directory)
        tokenizer = transformers.XLMRobertaTokenizer.from_pretrained(directory)
        processor = transformers.CLIPImageProcessorPil.from_pretrained(directory)
    else:
        model = transformers.AlignModel.from_pretrained(directory)
        tokenizer = transformers.BertTokenizer.from_pretrained(directory)
        processor = transformers.EfficientNetImageProcessorPil.from_pretrained(directory)
    return model.eval(), tokenizer, processor


def _features(output: Any) -> np.ndarray:
    """transformers 5 returns a model output (the projected features in ``pooler_output``), 4.x a tensor."""
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    features: np.ndarray = torch.nn.functional.normalize(tensor, dim=-1).numpy()
    return features


def _embed(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["embed", *args]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@torch.no_grad()
def test_text_embeddings_equal_transformers(
    exported: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    family, bundle = exported["family"], exported["bundle"]
    model, tokenizer, _ = _hf(family, exported["dir"])
    context = bundle.manifest.text.context_length
    encoded = tokenizer(TEXTS, padding=True, truncation=True, max_length=context, return_tensors="pt")
    rows = zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
    ids = [row[row_mask.bool()].tolist() for row, row_mask in rows]
    assert bundle.tokenizer().encode(TEXTS) == ids
    theirs = _features(model.get_text_features(**encoded))
    ours = _embed(capsys, "--bundle", str(bundle.root), "--text", *TEXTS)
    assert (ours["model"], ours["family"], ours["dim"]) == (bundle.model_name, family, bundle.embed_dim)
    got = np.asarray(ours["embeddings"], dtype=np.float32)
    cosine, diff = row_cosines(theirs, got).min(), np.abs(theirs - got).max()
    print(f"{family} text: min cosine {cosine:.8f}, max |diff| {diff:.3g}")
    assert cosine >= FP32


@torch.no_grad()
def test_image_embeddings_equal_transformers(
    exported: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from PIL import Image

    family, bundle = exported["family"], exported["bundle"]
    model, _, processor = _hf(family, exported["dir"])
    paths = random_images(tmp_path, seed=4)
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")
    theirs = _features(model.get_image_features(pixel_values=pixels["pixel_values"]))
    ours = _embed(capsys, "--bundle", str(bundle.root), "--image", *map(str, paths))
    got = np.asarray(ours["embeddings"], dtype=np.float32)
    cosine, diff = row_cosines(theirs, got).min(), np.abs(theirs - got).max()
    print(f"{family} image: min cosine {cosine:.8f}, max |diff| {diff:.3g}")
    assert cosine >= FP32


def test_manifest_describes_the_family(exported: dict[str, Any]) -> None:
    family, model, bundle = exported["family"], exported["model"], exported["bundle"]
    manifest = bundle.manifest
    size = model.config.image_resolution
    assert (manifest.family, manifest.format_version, manifest.model_name) == (family, 2, model.config.name)
    assert manifest.logit_scale == pytest.approx(float(model.scale().detach()))
    assert manifest.provenance["format"] == "huggingface"
    if family == "altclip":
        assert (manifest.text.context_length, manifest.text.pad_id) == (77, 1)
        assert bundle.image_spec() == ImageSpec(
            size, resize="shortest_edge", resize_size=size, mean=CLIP_MEAN, std=CLIP_STD
        )
    else:
        assert (manifest.text.context_length, manifest.text.pad_id) == (64, 0)
        resize = round(size * 346 / 289)
        assert bundle.image_spec() == ImageSpec(
            size,
            resize="fixed",
            resize_size=(resize, resize),
            resample="bilinear",
            rescale=Rescale(1 / 127.5, -1.0),
        )
    assert manifest.text.normalizer is None
    for tower in ("image", "text"):
        for precision, minimum in writer.THRESHOLDS.items():
            check = manifest.towers[tower][precision].verification
            assert check is not None and check.min_cosine >= minimum == check.threshold, (tower, precision)
            print(f"{family} {tower} {precision}: min cosine {check.min_cosine:.6f}")
    cases = " ".join(manifest.towers["text"]["fp32"].verification.cases)  # type: ignore[union-attr]
    assert f"length {manifest.text.context_length}" in cases
    sizes = {p.name: p.stat().st_size for p in bundle.root.iterdir()}
    print(f"{family} bundle files: {sizes}")


def test_align_image_graph_has_no_average_pooling(exported: dict[str, Any]) -> None:
    """Ceil-mode average pooling exports with wrong divisors and oversize windows: the mean over H and W
    must reach the graph as a ReduceMean, at every precision."""
    import onnx

    if exported["family"] != "align":
        pytest.skip("ALIGN's pooling")
    bundle = exported["bundle"]
    for precision in bundle.precisions("image"):
        ops = {node.op_type for node in onnx.load(str(bundle.file("image", precision))).graph.node}
        assert not ops & {"AveragePool", "GlobalAveragePool"}, (precision, ops)
        assert "ReduceMean" in ops, precision


@pytest.mark.parametrize("family", FAMILIES)
def test_graphs_over_the_size_limit_keep_hashed_external_data(family: str, tmp_path: Path) -> None:
    """AltCLIP's fp32 text tower is over protobuf's 2 GB: forced here on the tiny model by a zero limit."""
    from service.engines import load_towers

    model = perturbed_model(family, seed=5)
    directory = save_hf_directory(model, family, tmp_path / "hf")
    root = tmp_path / "bundle"
    options = writer.ExportOptions(fp16=True, int8=True, batches=(1, 3), external_data_bytes=0)
    writer.export_bundle(
        model, root, provenance={}, options=options, log=lambda _: None, tokenizer_source=directory
    )
    bundle = Bundle.load(root)
    for tower, by_precision in bundle.manifest.towers.items():
        for precision, entry in by_precision.items():
            assert entry.data_files == [f"{entry.path}.data"], (tower, precision)
            assert bundle.manifest.files[entry.data_files[0]] == sha256_of(root / entry.data_files[0])
    towers = load_towers(bundle, backend="onnxruntime", precision="fp32", threads=1)
    tokenizer = bundle.tokenizer()
    ids, mask = tokenizer.pad(tokenizer.encode(TEXTS))
    with torch.no_grad():
        want = torch.nn.functional.normalize(
            model.encode_text(torch.from_numpy(ids), torch.from_numpy(mask)), dim=-1
        ).numpy()
    assert row_cosines(want, towers.text.embed(ids, mask)).min() >= FP32


def test_a_tuwen_checkpoint_exports_with_the_tokenizer_directory(
    exported: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A training checkpoint carries no tokenizer: --tokenizer names the directory; without it, the
    error says so."""
    from training.checkpoints import save_checkpoint

    family, model = exported["family"], exported["model"]
    checkpoint = save_checkpoint(tmp_path / "run" / "epoch1.pt", model, epoch=1, config={"model": "x"})
    out = tmp_path / "bundle"
    assert main(["export", str(checkpoint), "--out", str(out)]) != 0
    assert "--tokenizer" in capsys.readouterr().err
    args = ["export", str(checkpoint), "--tokenizer", str(exported["dir"]), "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    bundle = Bundle.load(out)
    assert bundle.family == family and bundle.manifest.provenance["format"] == "tuwen"
    assert (out / "tokenizer.json").read_bytes() == (exported["bundle"].root / "tokenizer.json").read_bytes()
    ours = _embed(capsys, "--bundle", str(out), "--text", *TEXTS)
    reference = _embed(capsys, "--bundle", str(exported["bundle"].root), "--text", *TEXTS)
    np.testing.assert_allclose(ours["embeddings"], reference["embeddings"], atol=1e-6)


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(exported: dict[str, Any], tmp_path: Path) -> None:
    if exported["family"] != "align":
        pytest.skip("one family is enough")
    vocab = (exported["dir"] / "vocab.txt").read_text().splitlines()
    (tmp_path / "vocab.txt").write_text("\n".join([*vocab[1:], "[PAD]"]) + "\n")
    with pytest.raises(ValueError, match=r"\[PAD\] is id .*pads with 0"):
        writer.bundle_description(exported["model"], tmp_path)


def test_a_preprocessor_config_that_does_not_fit_the_model_is_refused(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    """A checkpoint fine-tuned at another size must not be served with the family's default pixels."""
    import shutil

    directory = shutil.copytree(exported["dir"], tmp_path / "hf")
    path = directory / "preprocessor_config.json"
    raw = json.loads(path.read_text())
    assert writer.bundle_description(exported["model"], directory).family == exported["family"]
    path.write_text(json.dumps({**raw, "crop_size": {"height": 40, "width": 40}}))
    with pytest.raises(ValueError, match=r"another image pipeline.*crop_size 40 there"):
        writer.bundle_description(exported["model"], directory)

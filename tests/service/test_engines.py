"""Engines on a real tiny bundle: ONNX Runtime towers, provider reporting, backend choice, TensorRT refusal."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from bundles import make_tiny_bundle

from service.bundle import Bundle
from service.cli import main
from service.engines import load_towers
from service.engines.tensorrt import TensorRTUnavailable

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.load(make_tiny_bundle(tmp_path_factory.mktemp("tiny"), int8=True))


@pytest.mark.slow
def test_onnxruntime_towers_embed_normalised_vectors(bundle: Bundle) -> None:
    towers = load_towers(bundle, backend="auto", threads=1)
    towers.warmup()
    assert towers.backend == "onnxruntime"
    assert "CPUExecutionProvider" in towers.providers
    assert towers.precision == "fp32"  # CPU: fp16 would be slower and int8 is opt-in
    tokenizer = bundle.tokenizer()
    ids, mask = tokenizer.pad(tokenizer.encode(["猫", "一只在草地上奔跑的小狗"]))
    text = towers.text.embed(ids, mask)
    image = towers.image.embed(np.zeros((3, 3, 64, 64), np.float32))
    assert text.shape == (2, bundle.embed_dim) and image.shape == (3, bundle.embed_dim)
    assert text.dtype == np.float32 == image.dtype
    assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(image, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_int8_towers_stay_close_to_fp32(bundle: Bundle) -> None:
    fp32, int8 = load_towers(bundle, precision="fp32"), load_towers(bundle, precision="int8")
    assert int8.precision == "int8"
    tokenizer = bundle.tokenizer()
    ids, mask = tokenizer.pad(tokenizer.encode(["红色的连衣裙", "雪山下的湖泊"]))
    cosines = (fp32.text.embed(ids, mask) * int8.text.embed(ids, mask)).sum(axis=1)
    assert cosines.min() >= 0.99


@pytest.mark.slow
def test_tensorrt_backend_refuses_cleanly_without_tensorrt(bundle: Bundle) -> None:
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed here; this checks the refusal on machines without it")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        load_towers(bundle, backend="tensorrt")


@pytest.mark.slow
def test_build_engines_refuses_without_tensorrt_or_gpu(
    bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed here; this checks the refusal on machines without it")
    assert main(["build-engines", str(bundle.root), "--max-batch", "8"]) == 1
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert not (bundle.root / "trt").exists(), "no engine may be faked"
    assert Bundle.load(bundle.root).manifest.tensorrt == {}


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(
    not HAS_TENSORRT, reason="TensorRT is not installed (its wheels come from NVIDIA's index)"
)
def test_build_engines_and_run_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from service.engines import cache

    root = make_tiny_bundle(tmp_path / "b")
    manifest_before = (root / "manifest.json").read_bytes()
    cache_dir = tmp_path / "engines"
    build = ["build-engines", str(root), "--cache-dir", str(cache_dir), "--max-batch", "16", "--fp16"]
    assert main(build) == 0
    assert (root / "manifest.json").read_bytes() == manifest_before and not (root / "trt").exists()
    (target,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    record = cache.read_record(target)
    assert record.precision == "fp16" and record.max_batch == 16
    assert record.towers["text"].verification.min_cosine >= 0.999
    capsys.readouterr()
    assert main(build) == 0  # up to date: kept, not rebuilt
    assert "up to date" in capsys.readouterr().out
    bundle = Bundle.load(root)
    towers = load_towers(bundle, backend="auto", engine_cache_dir=cache_dir)
    assert towers.backend == "tensorrt"
    reference = load_towers(bundle, backend="onnxruntime", precision="fp32")
    pixels = np.random.default_rng(0).standard_normal((5, 3, 64, 64)).astype(np.float32)
    cos = (towers.image.embed(pixels) * reference.image.embed(pixels)).sum(axis=1)
    assert cos.min() >= 0.999


def test_gpu_providers_are_preferred_with_an_on_disk_trt_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.engines import onnx_runtime

    compiled_in = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnx_runtime.ort, "get_available_providers", lambda: compiled_in)
    trt, cuda, cpu = onnx_runtime.provider_list(True, tmp_path / "cache", trt_fp16=True)
    assert trt == (
        "TensorrtExecutionProvider",
        {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(tmp_path / "cache"),
            "trt_fp16_enable": True,
        },
    )
    assert (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert (tmp_path / "cache").is_dir()
    assert onnx_runtime.provider_list(False) == ["CPUExecutionProvider"]


# The engine cache (service.engines.cache): lookup, identity and staleness rules, checked without TensorRT.
# The plan files below are placeholder bytes: only their hashes matter to the cache.

TARGET = "NVIDIA-H100-80GB-HBM3-trt10.9.0"


def _cache_bundle(root: Path, text_graph: bytes = b"text graph") -> Bundle:
    """A bundle whose graph files are placeholders: the cache only reads the manifest's hashes."""
    from service.bundle import (
        FORMAT_VERSION,
        EngineFile,
        ImagePipeline,
        Manifest,
        MeanStd,
        TextPipeline,
        write_manifest,
    )

    root.mkdir(parents=True, exist_ok=True)
    for name, data in {
        "tokenizer.json": b"{}",
        "image.onnx": b"image graph",
        "text.onnx": text_graph,
    }.items():
        (root / name).write_bytes(data)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_name="tiny-vit",
        family="chinese-clip",
        arch="tiny-vit",
        embed_dim=8,
        logit_scale=100.0,
        image=ImagePipeline(
            resize="squash",
            resize_size=64,
            crop_size=64,
            resample="bicubic",
            normalize=MeanStd(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        ),
        text=TextPipeline(normalizer="cn-clip-bert", context_length=52, pad_id=0),
        towers={t: {"fp32": EngineFile(path=f"{t}.onnx")} for t in ("image", "text")},
    )
    write_manifest(root, manifest)
    return Bundle.load(root)


def _write_cached_engines(
    directory: Path, bundle: Bundle, *, precision: str = "fp16", max_batch: int = 64
) -> None:
    from service.bundle import Verification
    from service.engines import cache

    directory.mkdir(parents=True, exist_ok=True)
    check = Verification(reference="onnxruntime fp32", min_cosine=0.9995, max_abs_diff=1e-3, threshold=0.999)
    towers = {}
    for tower in ("image", "text"):
        (directory / f"{tower}.plan").write_bytes(f"{tower} plan bytes".encode())
        towers[tower] = cache.plan_file(directory, f"{tower}.plan", check)
    record = cache.EngineRecord(
        bundle=cache.bundle_identity(bundle),
        gpu="NVIDIA H100 80GB HBM3",
        tensorrt_version="10.9.0",
        precision=precision,
        max_batch=max_batch,
        towers=towers,
    )
    cache.write_record(directory, record)


def test_cached_engines_for_this_bundle_are_found_cache_dir_first(tmp_path: Path) -> None:
    from service.engines import cache

    bundle = _cache_bundle(tmp_path / "bundle")
    _write_cached_engines(tmp_path / "cache" / TARGET, bundle)
    _write_cached_engines(bundle.root / "trt" / TARGET, bundle)
    roots = cache.search_roots(bundle, tmp_path / "cache")
    assert roots == [tmp_path / "cache", bundle.root / "trt"]
    found, refused = cache.find_engines(roots, TARGET, cache.bundle_identity(bundle))
    assert found is not None and refused == []
    assert found.directory == tmp_path / "cache" / TARGET
    assert found.plan("image") == tmp_path / "cache" / TARGET / "image.plan"
    assert found.record.precision == "fp16" and found.record.max_batch == 64
    assert set(found.record.bundle.sources) == {"image.onnx", "text.onnx"}
    # no configured cache: the bundle's own trt/ is used
    found, _ = cache.find_engines(cache.search_roots(bundle, None), TARGET, cache.bundle_identity(bundle))
    assert found is not None and found.directory == bundle.root / "trt" / TARGET


def test_stale_or_tampered_engines_are_refused_with_the_reason(tmp_path: Path) -> None:
    from service.engines import cache

    bundle = _cache_bundle(tmp_path / "bundle")
    directory = tmp_path / "cache" / TARGET
    _write_cached_engines(directory, bundle, precision="fp16", max_batch=64)
    identity = cache.bundle_identity(bundle)
    cache.check_engines(directory, identity, precision="fp16", min_batch=64)

    with pytest.raises(cache.StaleEngines, match="holds fp16 engines, not fp32"):
        cache.check_engines(directory, identity, precision="fp32")
    with pytest.raises(cache.StaleEngines, match="batches up to 64, not 128"):
        cache.check_engines(directory, identity, min_batch=128)
    # the same model name re-exported with other weights: other graph hashes
    retrained = cache.bundle_identity(_cache_bundle(tmp_path / "retrained", text_graph=b"other weights"))
    assert retrained.model_name == identity.model_name and retrained != identity
    with pytest.raises(cache.StaleEngines, match="other ONNX graphs"):
        cache.check_engines(directory, retrained)
    found, refused = cache.find_engines([tmp_path / "cache", tmp_path / "none"], TARGET, retrained)
    assert found is None and len(refused) == 2 and "holds no engines.json" in refused[1]
    # another GPU or TensorRT version: another directory, nothing there
    with pytest.raises(cache.StaleEngines, match=r"holds no engines\.json"):
        cache.check_engines(tmp_path / "cache" / "Tesla-T4-trt10.9.0", identity)

    (directory / "text.plan").write_bytes(b"text plan bytes, truncated")
    with pytest.raises(cache.StaleEngines, match=r"text\.plan does not match the sha256"):
        cache.check_engines(directory, identity)
    (directory / "text.plan").unlink()
    with pytest.raises(cache.StaleEngines, match=r"text\.plan is missing"):
        cache.check_engines(directory, identity)
    (directory / "engines.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(cache.StaleEngines, match="not a valid engine record"):
        cache.check_engines(directory, identity)
    cache.invalidate(directory)
    assert not (directory / "engines.json").exists()


def test_build_root_defaults_to_the_bundle_only_when_it_is_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.engines import cache

    assert cache.build_root(tmp_path, tmp_path / "cache") == tmp_path / "cache"
    assert cache.build_root(tmp_path, None) == tmp_path / "trt"
    # a read-only mount (root ignores permission bits, so the filesystem's answer is simulated)
    monkeypatch.setattr(cache.os, "access", lambda path, mode: False)
    with pytest.raises(
        cache.EngineCacheError, match=r"read-only.*--cache-dir DIR or set TUWEN_ENGINE_CACHE_DIR"
    ):
        cache.build_root(tmp_path, None)
    assert cache.build_root(tmp_path, tmp_path / "cache") == tmp_path / "cache"


def test_build_engines_on_a_read_only_bundle_asks_for_a_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.engines import cache

    bundle = _cache_bundle(tmp_path / "bundle")
    monkeypatch.delenv("TUWEN_ENGINE_CACHE_DIR", raising=False)
    monkeypatch.setattr(cache.os, "access", lambda path, mode: False)  # as on a read-only mount
    assert main(["build-engines", str(bundle.root), "--fp16"]) == 1
    assert "read-only" in capsys.readouterr().err
    assert not (bundle.root / "trt").exists()


class _RecordedPlan:
    """Stands in for PlanTextEngine/PlanImageEngine (which need TensorRT and a GPU): records the path."""

    def __init__(self, plan_path: Path) -> None:
        self.plan_path = plan_path


@pytest.fixture
def pretend_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as an H100 with TensorRT 10.9.0, as far as the engine lookup can tell."""
    from service.engines import tensorrt

    monkeypatch.setattr(tensorrt, "engine_target", lambda: TARGET)
    monkeypatch.setattr(tensorrt, "PlanTextEngine", _RecordedPlan)
    monkeypatch.setattr(tensorrt, "PlanImageEngine", _RecordedPlan)


@pytest.mark.usefixtures("pretend_tensorrt")
def test_load_towers_takes_valid_cached_engines_and_refuses_stale_ones(tmp_path: Path) -> None:
    from service.bundle import BundleError

    bundle = _cache_bundle(tmp_path / "bundle")
    cache_dir = tmp_path / "cache"
    _write_cached_engines(cache_dir / TARGET, bundle)
    towers = load_towers(bundle, backend="tensorrt", engine_cache_dir=cache_dir)
    assert towers.backend == "tensorrt" and towers.precision == "fp16"
    assert towers.providers == ["TensorRT 10.9.0 on NVIDIA H100 80GB HBM3"]
    assert towers.text.engine.plan_path == cache_dir / TARGET / "text.plan"  # inside LengthGroupedText
    assert towers.image.plan_path == cache_dir / TARGET / "image.plan"

    with pytest.raises(BundleError, match="holds fp16 engines, not fp32"):
        load_towers(bundle, backend="tensorrt", precision="fp32", engine_cache_dir=cache_dir)
    # the service sends batches up to its largest TUWEN_MAX_BATCH_*: engines built for less are refused
    assert (
        load_towers(bundle, backend="tensorrt", engine_cache_dir=cache_dir, max_batch=64).backend
        == "tensorrt"
    )
    with pytest.raises(BundleError, match=r"take batches up to 64, not 65.*--max-batch 256"):
        load_towers(bundle, backend="tensorrt", engine_cache_dir=cache_dir, max_batch=65)
    (cache_dir / TARGET / "image.plan").write_bytes(b"tampered")
    with pytest.raises(
        BundleError, match=r"no usable TensorRT engines.*image.plan does not match.*build-engines"
    ):
        load_towers(bundle, backend="tensorrt", engine_cache_dir=cache_dir)


@pytest.mark.slow
@pytest.mark.usefixtures("pretend_tensorrt")
def test_auto_falls_back_to_onnxruntime_when_cached_engines_are_stale(
    bundle: Bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = _cache_bundle(tmp_path / "other-bundle")
    _write_cached_engines(tmp_path / "cache" / TARGET, other)  # engines of another model
    towers = load_towers(bundle, backend="auto", threads=1, engine_cache_dir=tmp_path / "cache")
    assert towers.backend == "onnxruntime"
    assert "falling back to ONNX Runtime" in caplog.text and "other ONNX graphs" in caplog.text


@pytest.mark.slow
def test_grouped_text_batches_match_each_text_embedded_alone(bundle: Bundle) -> None:
    """The real ONNX text tower through LengthGroupedText: batching changes no row beyond float noise."""
    towers = load_towers(bundle, precision="fp32", threads=1)
    tokenizer = bundle.tokenizer()
    texts = [
        "猫",
        "一只在草地上奔跑的小狗，背景是蓝天白云和远处的雪山",
        "红裙",
        "雪山下的湖泊在清晨的阳光里",
    ] * 4
    batch = towers.text.embed(*tokenizer.pad(tokenizer.encode(texts)))
    alone = np.concatenate([towers.text.embed(*tokenizer.pad(tokenizer.encode([t]))) for t in texts])
    plain = towers.text.engine.embed(*tokenizer.pad(tokenizer.encode(texts)))  # one padded call
    np.testing.assert_allclose(batch, alone, atol=1e-5)
    np.testing.assert_allclose(batch, plain, atol=1e-5)


@pytest.mark.slow
def test_spin_wait_off_reaches_both_onnxruntime_sessions(bundle: Bundle) -> None:
    def spinning(towers: object) -> list[str]:
        sessions = [towers.text.engine.session, towers.image.session]  # type: ignore[attr-defined]
        key = "session.intra_op.allow_spinning"
        return [s.session.get_session_options().get_session_config_entry(key) for s in sessions]

    assert spinning(load_towers(bundle, precision="fp32", threads=1, spin_wait=False)) == ["0", "0"]
    with pytest.raises(Exception, match="allow_spinning"):  # ORT's default: the entry is absent
        spinning(load_towers(bundle, precision="fp32", threads=1))

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
def test_build_engines_and_run_them(tmp_path: Path) -> None:
    root = make_tiny_bundle(tmp_path / "b")
    assert main(["build-engines", str(root), "--max-batch", "16", "--fp16"]) == 0
    bundle = Bundle.load(root)
    (target,) = bundle.manifest.tensorrt
    assert bundle.manifest.tensorrt[target].towers["text"].verification.min_cosine >= 0.999
    towers = load_towers(bundle, backend="auto")
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

"""Inference engines for a model bundle's two towers, and the choice between them.

``load_towers`` picks by what the machine has: the bundle's TensorRT engines for this GPU if they exist
and TensorRT is installed, else ONNX Runtime (CUDA/TensorRT providers where present, otherwise CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from service.bundle import Bundle, BundleError, Precision

Backend = Literal["auto", "onnxruntime", "tensorrt"]


class TextEngine(Protocol):
    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class ImageEngine(Protocol):
    def embed(self, pixel_values: np.ndarray) -> np.ndarray: ...


@dataclass
class Towers:
    text: TextEngine
    image: ImageEngine
    backend: str
    providers: list[str] = field(default_factory=list)
    precision: str = "fp32"
    image_size: int = 224

    def warmup(self) -> None:
        """Run each tower once so the first request does not pay for lazy initialisation."""
        self.text.embed(np.array([[101, 102]], np.int64), np.ones((1, 2), np.int64))
        self.image.embed(np.zeros((1, 3, self.image_size, self.image_size), np.float32))


def load_towers(
    bundle: Bundle,
    backend: Backend = "auto",
    precision: Precision | Literal["auto"] = "auto",
    threads: int | None = None,
) -> Towers:
    if backend == "tensorrt" or (backend == "auto" and _tensorrt_target(bundle) is not None):
        return _load_tensorrt(bundle)
    if backend not in ("auto", "onnxruntime"):
        raise ValueError(f"unknown backend {backend!r}; use auto, onnxruntime or tensorrt")
    return _load_onnxruntime(bundle, precision, threads)


def _tensorrt_target(bundle: Bundle) -> str | None:
    """The bundle's engine directory for this GPU and TensorRT, or None when either is missing."""
    from service.engines.tensorrt import TensorRTUnavailable, engine_target

    try:
        target = engine_target()
    except TensorRTUnavailable:
        return None
    return target if bundle.tensorrt_engines(target) is not None else None


def _load_tensorrt(bundle: Bundle) -> Towers:
    from service.engines.tensorrt import PlanImageEngine, PlanTextEngine, engine_target

    target = engine_target()
    engines = bundle.tensorrt_engines(target)
    if engines is None:
        built = ", ".join(bundle.manifest.tensorrt) or "none"
        raise BundleError(
            f"bundle {bundle.root} has no TensorRT engines for {target} (it has: {built}); "
            f"run `tuwen build-engines {bundle.root}` on this machine"
        )
    return Towers(
        text=PlanTextEngine(bundle.root / engines.towers["text"].path),
        image=PlanImageEngine(bundle.root / engines.towers["image"].path),
        backend="tensorrt",
        providers=[f"TensorRT {engines.tensorrt_version} on {engines.gpu}"],
        precision=engines.precision,
        image_size=bundle.manifest.image.size,
    )


def _load_onnxruntime(bundle: Bundle, precision: Precision | Literal["auto"], threads: int | None) -> Towers:
    from service.engines.onnx_runtime import OrtImageEngine, OrtSession, OrtTextEngine, gpu_available

    use_gpu = gpu_available()
    if precision == "auto":
        # fp16 halves memory traffic on GPUs; on CPUs it is slower than fp32 and int8 trades accuracy
        precision = "fp16" if use_gpu and "fp16" in bundle.precisions("text") else "fp32"
    # ONNX Runtime's TensorRT provider may run layers in fp16 only when fp16 was asked for
    options = {"use_gpu": use_gpu, "threads": threads, "trt_fp16": precision == "fp16"}
    text = OrtSession(bundle.file("text", precision), **options)
    image = OrtSession(bundle.file("image", precision), **options)
    return Towers(
        text=OrtTextEngine(text),
        image=OrtImageEngine(image),
        backend="onnxruntime",
        providers=list(dict.fromkeys(text.providers + image.providers)),
        precision=precision,
        image_size=bundle.manifest.image.size,
    )

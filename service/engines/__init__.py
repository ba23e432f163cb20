"""Inference engines for a model bundle's two towers, and the choice between them.

``load_towers`` picks by what the machine has: TensorRT engines built for this GPU and this bundle (in
the engine cache or the bundle's ``trt/``) if TensorRT is installed, else ONNX Runtime (CUDA/TensorRT
providers where present, otherwise CPU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from service.bundle import Bundle, BundleError, Precision
from service.engines.cache import CachedEngines, bundle_identity, find_engines, search_roots
from service.engines.length_groups import LengthGroupedText

log = logging.getLogger(__name__)

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
    engine_cache_dir: Path | None = None,
    spin_wait: bool = True,
    max_batch: int = 1,
) -> Towers:
    """The two towers on ``backend``; ``engine_cache_dir`` is searched for TensorRT engines before the
    bundle's own ``trt/`` (see :mod:`service.engines.cache`); ``spin_wait`` False stops ONNX Runtime's
    idle threads from spinning (a service sharing its cores wants that; a benchmark of one tower not);
    ``max_batch`` is the largest batch the caller will send: TensorRT engines built for less are refused."""
    if backend not in ("auto", "onnxruntime", "tensorrt"):
        raise ValueError(f"unknown backend {backend!r}; use auto, onnxruntime or tensorrt")
    if backend == "tensorrt":
        return _load_tensorrt(bundle, _find_tensorrt_engines(bundle, precision, engine_cache_dir, max_batch))
    if backend == "auto" and precision != "int8":  # int8 graphs are for ONNX Runtime on CPUs
        from service.engines.tensorrt import TensorRTUnavailable

        try:
            engines = _find_tensorrt_engines(bundle, precision, engine_cache_dir, max_batch)
        except TensorRTUnavailable:
            pass  # no TensorRT or no GPU: ONNX Runtime is the expected backend, nothing to report
        except BundleError as exc:
            log.warning("not using TensorRT engines, falling back to ONNX Runtime: %s", exc)
        else:
            return _load_tensorrt(bundle, engines)
    return _load_onnxruntime(bundle, precision, threads, spin_wait)


def _find_tensorrt_engines(
    bundle: Bundle, precision: Precision | Literal["auto"], engine_cache_dir: Path | None, max_batch: int
) -> CachedEngines:
    """Valid engines for this GPU, TensorRT and bundle; raises TensorRTUnavailable or BundleError."""
    from service.engines.tensorrt import engine_target

    if precision not in ("auto", "fp32", "fp16"):
        raise BundleError(f"TensorRT engines are built in fp32 or fp16, not {precision}")
    target = engine_target()
    roots = search_roots(bundle, engine_cache_dir)
    wanted = None if precision == "auto" else precision
    found, refused = find_engines(
        roots, target, bundle_identity(bundle), precision=wanted, min_batch=max_batch
    )
    if found is None:
        reasons = "; ".join(refused)
        raise BundleError(
            f"no usable TensorRT engines for {bundle.model_name} on {target} ({reasons}); "
            f"run `tuwen build-engines {bundle.root} --cache-dir {roots[0]} --max-batch {max(max_batch, 256)}`"
            " on this machine"
        )
    return found


def _load_tensorrt(bundle: Bundle, engines: CachedEngines) -> Towers:
    from service.engines.tensorrt import PlanImageEngine, PlanTextEngine

    record = engines.record
    return Towers(
        text=LengthGroupedText(PlanTextEngine(engines.plan("text"))),
        image=PlanImageEngine(engines.plan("image")),
        backend="tensorrt",
        providers=[f"TensorRT {record.tensorrt_version} on {record.gpu}"],
        precision=record.precision,
        image_size=bundle.manifest.image.size,
    )


def _load_onnxruntime(
    bundle: Bundle, precision: Precision | Literal["auto"], threads: int | None, spin_wait: bool
) -> Towers:
    from service.engines.onnx_runtime import OrtImageEngine, OrtSession, OrtTextEngine, gpu_available

    use_gpu = gpu_available()
    if precision == "auto":
        # fp16 halves memory traffic on GPUs; on CPUs it is slower than fp32 and int8 trades accuracy
        precision = "fp16" if use_gpu and "fp16" in bundle.precisions("text") else "fp32"
    # ONNX Runtime's TensorRT provider may run layers in fp16 only when fp16 was asked for
    open_session = partial(
        OrtSession, use_gpu=use_gpu, threads=threads, trt_fp16=precision == "fp16", spin_wait=spin_wait
    )
    text = open_session(bundle.file("text", precision))
    image = open_session(bundle.file("image", precision))
    return Towers(
        text=LengthGroupedText(OrtTextEngine(text)),
        image=OrtImageEngine(image),
        backend="onnxruntime",
        providers=list(dict.fromkeys(text.providers + image.providers)),
        precision=precision,
        image_size=bundle.manifest.image.size,
    )

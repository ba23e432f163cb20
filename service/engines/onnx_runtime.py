"""ONNX Runtime backend: one session per tower, on the best execution provider this machine has."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def default_trt_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tuwen" / "ort-tensorrt"


def provider_list(
    use_gpu: bool, trt_cache_dir: Path | None = None, *, trt_fp16: bool = False
) -> list[str | tuple[str, dict[str, Any]]]:
    """Providers in order of preference, limited to those compiled into this onnxruntime build."""
    available = set(ort.get_available_providers())
    providers: list[str | tuple[str, dict[str, Any]]] = []
    if use_gpu and "TensorrtExecutionProvider" in available:
        cache = Path(trt_cache_dir or default_trt_cache_dir())
        cache.mkdir(parents=True, exist_ok=True)
        # engines are cached on disk: building them takes minutes, loading a cached one seconds
        providers.append(
            (
                "TensorrtExecutionProvider",
                {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache),
                    "trt_fp16_enable": trt_fp16,
                },
            )
        )
    if use_gpu and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


def gpu_available() -> bool:
    return any(p in ort.get_available_providers() for p in GPU_PROVIDERS)


class OrtSession:
    """A thread-safe session (ONNX Runtime's ``run`` may be called concurrently)."""

    def __init__(
        self,
        path: Path,
        *,
        use_gpu: bool = False,
        threads: int | None = None,
        trt_cache_dir: Path | None = None,
        trt_fp16: bool = False,
        spin_wait: bool = True,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spin_wait:
            # Idle intra-op threads otherwise spin for a while after each run, burning the cores that the
            # event loop, the Milvus client and (embedded) server need between batches.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(path), options, providers=provider_list(use_gpu, trt_cache_dir, trt_fp16=trt_fp16)
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def providers(self) -> list[str]:
        """What the session really got: a provider that failed to load is silently dropped by ORT."""
        return list(self.session.get_providers())

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out: np.ndarray = self.session.run(None, {name: feeds[name] for name in self.input_names})[0]
        return out


class OrtTextEngine:
    def __init__(self, session: OrtSession) -> None:
        self.session = session

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {
            "input_ids": np.asarray(input_ids, np.int64),
            "attention_mask": np.asarray(attention_mask, np.int64),
        }
        return self.session.run(feeds).astype(np.float32, copy=False)


class OrtImageEngine:
    def __init__(self, session: OrtSession) -> None:
        self.session = session

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixel_values, np.float32)
        return self.session.run({"pixel_values": pixels}).astype(np.float32, copy=False)

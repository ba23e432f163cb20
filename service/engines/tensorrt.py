"""Native TensorRT backend: runs the serialized ``.plan`` engines that `tuwen build-engines` wrote.

Device memory and the stream come from NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``, or
``cuda.cudart`` before 12.6.1), as in the TensorRT Python samples, so the service still never imports
torch. Buffers are allocated per call: the engines are built for batches up to ``max_batch`` and shapes
change from call to call.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


class TensorRTUnavailable(RuntimeError):
    """TensorRT, cuda-python or a CUDA GPU is missing on this machine."""


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT is not installed (pip install tensorrt from NVIDIA's index, or use an NVIDIA CUDA image); "
            "no engine was built"
        ) from exc
    module: ModuleType = tensorrt
    return module


def _cudart() -> Any:
    # cuda-python 12.6.1 moved the runtime API to cuda.bindings.runtime; 13.0 removed the old cuda.cudart
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise TensorRTUnavailable(
                "cuda-python is not installed (pip install 'tuwen[gpu]' or pip install cuda-python)"
            ) from exc
    return cudart


def _check(result: tuple[Any, ...]) -> Any:
    err, *rest = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else rest


def cuda_device_name(device: int = 0) -> str:
    cudart = _cudart()
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise TensorRTUnavailable("no CUDA GPU is visible on this machine; TensorRT engines need one")
    props = _check(cudart.cudaGetDeviceProperties(device))
    name = props.name
    return (name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)).strip()


def target_name(gpu: str, tensorrt_version: str) -> str:
    """The engines' directory name under ``trt/``: engines only run on the GPU and TensorRT they were built with."""
    return f"{re.sub(r'[^A-Za-z0-9.]+', '-', gpu).strip('-')}-trt{tensorrt_version}"


def engine_target() -> str:
    trt = import_tensorrt()  # first: "TensorRT is not installed" is the message that tells users what to do
    return target_name(cuda_device_name(), trt.__version__)


class PlanEngine:
    """One deserialized engine; ``run`` takes and returns host numpy arrays. Calls are serialised."""

    def __init__(self, plan_path: Path) -> None:
        trt = import_tensorrt()
        self._cudart = _cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"{plan_path} could not be deserialized (built for another GPU or TensorRT version?)"
            )
        self.context = self.engine.create_execution_context()
        self._stream = _check(self._cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            allocations = []
            try:
                for name in self.inputs:
                    host = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
                    self.context.set_input_shape(name, host.shape)
                    ptr = _check(cudart.cudaMalloc(host.nbytes))
                    allocations.append(ptr)
                    _check(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self._stream))
                    self.context.set_tensor_address(name, int(ptr))
                name = self.outputs[0]
                out = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtypes[name])
                ptr = _check(cudart.cudaMalloc(out.nbytes))
                allocations.append(ptr)
                self.context.set_tensor_address(name, int(ptr))
                if not self.context.execute_async_v3(self._stream):
                    raise RuntimeError("TensorRT execution failed")
                _check(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h, self._stream))
                _check(cudart.cudaStreamSynchronize(self._stream))
            finally:
                for ptr in allocations:
                    cudart.cudaFree(ptr)
        return out.astype(np.float32, copy=False)


class PlanTextEngine:
    def __init__(self, plan_path: Path) -> None:
        self.engine = PlanEngine(plan_path)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.engine.run({"input_ids": input_ids, "attention_mask": attention_mask})


class PlanImageEngine:
    def __init__(self, plan_path: Path) -> None:
        self.engine = PlanEngine(plan_path)

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.engine.run({"pixel_values": pixel_values})

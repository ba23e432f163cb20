"""Build TensorRT engines from a bundle's fp32 ONNX graphs, with the documented TensorRT Python API.

Engines are tied to one GPU model and one TensorRT version, so they go under
``<cache>/<gpu-name>-trt<version>/`` with an ``engines.json`` (see :mod:`service.engines.cache`); the
bundle, often mounted read-only, is not modified. Each engine is checked against ONNX Runtime fp32 on
sample shapes before it is recorded; nothing is written where there is no CUDA GPU or no TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from service.bundle import TOWERS, Bundle, Tower
from service.engines.cache import (
    EnginePrecision,
    EngineRecord,
    PlanFile,
    StaleEngines,
    bundle_identity,
    check_engines,
    invalidate,
    plan_file,
    write_record,
)
from service.engines.tensorrt import (
    PlanEngine,
    TensorRTUnavailable,
    cuda_device_name,
    import_tensorrt,
    target_name,
)
from service.engines.verify import (
    Case,
    compare,
    cpu_session,
    image_cases,
    require,
    session_runner,
    text_cases,
    token_layout,
)

FP16_THRESHOLD, FP32_THRESHOLD = 0.999, 0.9999
WORKSPACE_BYTES = 4 << 30


class EngineBuildError(Exception):
    """TensorRT is missing, there is no GPU, or an engine failed to build or verify."""


def _profile_shapes(bundle: Bundle, tower: Tower, max_batch: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """min / opt / max shapes per input; opt is a mid-size batch (and a short query for text)."""
    opt_batch = min(max_batch, 32)
    if tower == "image":
        size = bundle.manifest.image.size
        return {"pixel_values": ((1, 3, size, size), (opt_batch, 3, size, size), (max_batch, 3, size, size))}
    length = bundle.manifest.text.context_length
    shapes = ((1, 1), (opt_batch, min(16, length)), (max_batch, length))
    return {"input_ids": shapes, "attention_mask": shapes}


def build_plan(onnx_path: Path, shapes: dict[str, tuple[tuple[int, ...], ...]], *, fp16: bool) -> bytes:
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(
            f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)"
        )
    return bytes(plan)


@dataclass(frozen=True)
class BuildResult:
    directory: Path
    built: bool  # False: valid engines were already there and were kept


def _run_plan(engine: PlanEngine, case: Case) -> np.ndarray:
    return engine.run(dict(case.feeds))


def build_engines(
    bundle: Bundle, cache_dir: Path, *, max_batch: int = 256, fp16: bool = False
) -> BuildResult:
    """Build and verify engines for this GPU under ``cache_dir/<gpu>-trt<version>/``, unless valid ones
    for this bundle, precision and a batch at least ``max_batch`` are already there. The bundle itself is
    never written."""
    try:
        trt = import_tensorrt()
        gpu = cuda_device_name()
    except TensorRTUnavailable as exc:
        raise EngineBuildError(str(exc)) from exc
    out_dir = Path(cache_dir) / target_name(gpu, trt.__version__)
    identity = bundle_identity(bundle)
    precision: EnginePrecision = "fp16" if fp16 else "fp32"
    try:
        check_engines(out_dir, identity, precision=precision, min_batch=max_batch)
        return BuildResult(out_dir, built=False)
    except StaleEngines:
        pass
    out_dir.mkdir(parents=True, exist_ok=True)
    invalidate(out_dir)
    manifest = bundle.manifest
    tokenizer = bundle.tokenizer()
    cases = {
        "image": image_cases(manifest.image.size, (1, 7, min(max_batch, 64))),
        "text": text_cases(
            manifest.text.context_length,
            tokenizer.vocab_size,
            (1, 7, min(max_batch, 64)),
            layout=token_layout(tokenizer),
        ),
    }
    plans: dict[Tower, PlanFile] = {}
    for tower in TOWERS:
        onnx_path = bundle.file(tower, "fp32")
        plan_path = out_dir / f"{tower}.plan"
        plan_path.write_bytes(build_plan(onnx_path, _profile_shapes(bundle, tower, max_batch), fp16=fp16))
        engine = PlanEngine(plan_path)
        check = compare(
            cases[tower],
            session_runner(cpu_session(onnx_path)),
            partial(_run_plan, engine),
            reference_name="onnxruntime fp32",
            threshold=FP16_THRESHOLD if fp16 else FP32_THRESHOLD,
        )
        require(check, str(plan_path))
        plans[tower] = plan_file(out_dir, plan_path.name, check)
    record = EngineRecord(
        bundle=identity,
        gpu=gpu,
        tensorrt_version=trt.__version__,
        precision=precision,
        max_batch=max_batch,
        towers=plans,
    )
    write_record(out_dir, record)
    return BuildResult(out_dir, built=True)

"""Turn a CLIP model's towers into ONNX graphs: fp32 with dynamic shapes, then fp16 and int8 variants.

Graph I/O is fixed by the bundle format: ``pixel_values`` -> ``image_embeds`` and ``input_ids`` +
``attention_mask`` -> ``text_embeds``, all float32 at the boundary, outputs L2-normalised in the graph.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

OPSET = 18
MAX_BATCH = 4096  # an upper bound the exporter needs; engines pick their own (build-engines --max-batch)

# Kept in fp32 by the fp16 conversion: reductions and exponentials overflow or lose all precision in
# half (LayerNorm variance, Softmax sums, the final L2 norm). ONNX Runtime inserts the casts around them.
FP16_KEEP_FP32_OPS = [
    "LayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "ReduceSumSquare",
    "Pow",
    "Sqrt",
    "Softmax",
    "Exp",
    "Erf",
]


class ImageTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixel_values), dim=-1)


class TextTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(input_ids, attention_mask), dim=-1)


def _export(
    module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], output: str, dynamic
) -> None:  # type: ignore[no-untyped-def]
    # eval(): a wrapper left in training mode would bake dropout into the graph.
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=[output],
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    onnx.checker.check_model(str(path))


def export_image_tower(model: nn.Module, resolution: int, path: Path) -> None:
    # sample batch 2: a size-1 dimension would be specialised to a constant by torch.export
    sample = torch.randn(2, 3, resolution, resolution)
    batch = Dim("batch", min=1, max=MAX_BATCH)
    _export(
        ImageTower(model), (sample,), path, ["pixel_values"], "image_embeds", {"pixel_values": {0: batch}}
    )


def export_text_tower(model: nn.Module, context_length: int, path: Path) -> None:
    ids = torch.randint(672, 21128, (2, 8))
    ids[:, 0], ids[:, -1] = 101, 102
    batch = Dim("batch", min=1, max=MAX_BATCH)
    seq = Dim("seq", min=1, max=context_length)
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    _export(
        TextTower(model),
        (ids, torch.ones_like(ids)),
        path,
        ["input_ids", "attention_mask"],
        "text_embeds",
        dynamic,
    )


def optimize_offline(src: Path, dst: Path) -> None:
    """Save ONNX Runtime's graph optimisations (constant folding, LayerNorm/GELU/MatMul+Add fusions).

    The basic level only emits standard ONNX ops, so the saved graph stays portable (CPU, CUDA, the
    TensorRT parser). Provider-specific fusions (fused Attention, SkipLayerNorm) are left to the session
    that loads it, which applies them for its own provider at load time.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def convert_fp16(src: Path, dst: Path) -> None:
    """Half-precision weights and compute, float32 inputs/outputs, numerically delicate ops kept in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = convert_float_to_float16(
        onnx.load(str(src)), keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FP32_OPS]
    )
    onnx.save(model, str(dst))


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the matrix products (weights per channel; activations per batch)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
    )

"""Turn a CLIP model's towers into ONNX graphs: fp32 with dynamic shapes, then fp16 and int8 variants.

Graph I/O is fixed by the bundle format: ``pixel_values`` -> ``image_embeds`` and ``input_ids`` +
``attention_mask`` -> ``text_embeds``, all float32 at the boundary, outputs L2-normalised in the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx.external_data_helper import uses_external_data
from torch import nn
from torch.export import Dim

from service.engines.verify import BERT_LAYOUT, TokenLayout, pad_ids, random_token_ids

OPSET = 18
MAX_BATCH = 4096  # an upper bound the exporter needs; engines pick their own (build-engines --max-batch)
# protobuf cannot serialise a message over 2 GiB (ViT-H-14's fp32 image tower is larger): graphs whose
# weights pass this size keep them in a `<graph>.data` file beside the graph; the margin is for the graph
EXTERNAL_DATA_BYTES = 1_500_000_000

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
            # weights beside the graph whatever the size: protobuf cannot hold an AltCLIP text tower (over
            # 2 GiB in fp32); optimize_offline decides by size whether the bundle's graph keeps them apart
            external_data=True,
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


def export_text_tower(
    model: nn.Module,
    context_length: int,
    path: Path,
    *,
    vocab_size: int,
    layout: TokenLayout = BERT_LAYOUT,
) -> None:
    """``layout``: the family's start, end and pad ids; the sample stays inside the model's vocab."""
    # sample batch 2 and length > 1: a size-1 dimension would be specialised to a constant by torch.export
    length = min(8, context_length)
    rows = [random_token_ids(np.random.default_rng(row), length, vocab_size, layout) for row in range(2)]
    ids, mask = (torch.from_numpy(a) for a in pad_ids(rows, layout.pad))
    batch = Dim("batch", min=1, max=MAX_BATCH)
    seq = Dim("seq", min=1, max=context_length)
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    _export(TextTower(model), (ids, mask), path, ["input_ids", "attention_mask"], "text_embeds", dynamic)


def external_data_name(graph: Path) -> str:
    return f"{graph.name}.data"


def external_data_files(graph: Path) -> list[str]:
    """The external data files a saved graph reads, relative to its directory (none for inline weights)."""
    model = onnx.load(str(graph), load_external_data=False)
    tensors = [*model.graph.initializer]
    tensors += [attr.t for node in model.graph.node for attr in node.attribute if attr.HasField("t")]
    locations = {
        entry.value
        for tensor in tensors
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(locations)


def graph_bytes(graph: Path) -> int:
    """The size of a saved graph with its external data."""
    return graph.stat().st_size + sum((graph.parent / f).stat().st_size for f in external_data_files(graph))


def _clear(dst: Path) -> None:
    """Remove an earlier export's graph and data file: ONNX Runtime's writer may append to a data file."""
    dst.unlink(missing_ok=True)
    (dst.parent / external_data_name(dst)).unlink(missing_ok=True)


def save_graph(model: onnx.ModelProto, dst: Path, *, external_data: bool) -> None:
    _clear(dst)
    if external_data:
        onnx.save(model, str(dst), save_as_external_data=True, location=external_data_name(dst))
    else:
        onnx.save(model, str(dst))


def optimize_offline(src: Path, dst: Path, *, external_data: bool = False) -> None:
    """Save ONNX Runtime's graph optimisations (constant folding, LayerNorm/GELU/MatMul+Add fusions).

    The basic level only emits standard ONNX ops, so the saved graph stays portable (CPU, CUDA, the
    TensorRT parser). Provider-specific fusions (fused Attention, SkipLayerNorm) are left to the session
    that loads it, which applies them for its own provider at load time.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    if external_data:
        _clear(dst)
        name = external_data_name(dst)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", name)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    else:
        # from memory: ONNX Runtime would keep pointing at the source's data file (the exporter always
        # writes one) instead of inlining the weights
        model = onnx.load(str(src)).SerializeToString()
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def convert_fp16(src: Path, dst: Path, *, external_data: bool = False) -> None:
    """Half-precision weights and compute, float32 inputs/outputs, numerically delicate ops kept in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # by path: shape inference then runs on the file (infer_shapes_path), which a graph over protobuf's 2 GiB
    # (AltCLIP's fp32 text tower) needs; an in-memory ModelProto would be serialised whole for it
    model = convert_float_to_float16(
        str(src), keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FP32_OPS]
    )
    save_graph(model, dst, external_data=external_data)


def quantize_int8(src: Path, dst: Path, *, external_data: bool = False) -> None:
    """Dynamic int8 quantisation of the matrix products (weights per channel; activations per batch).

    Weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI (AVX2-only, e.g. many AMD EPYC
    hosts) ONNX Runtime multiplies u8 activations by s8 weights with ``vpmaddubsw``, whose 16-bit pair
    sums saturate with full-range weights. Measured on a random ViT-B-16 image tower on such a CPU: min
    cosine vs fp32 0.987 with 8-bit weights (below the export's 0.99 gate), 0.9998 with 7-bit, at the
    same speed. A bundle is verified on the machine that exports it but served on others, so it must be
    accurate on both kinds of CPU.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _clear(dst)
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        op_types_to_quantize=["MatMul", "Gemm"],
        use_external_data_format=external_data,  # writes `<dst>.data`, like save_graph
    )

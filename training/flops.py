"""Model FLOPs utilisation: FLOPs per training sample measured once, over the device's peak.

FLOPs per sample come from torch.utils.flop_counter over one forward + backward of the actual model on a
two-sample batch of full-length texts (so a frozen image tower's skipped backward is not counted), divided by two. The contrastive
logits (B² · D per rank) are left out: they are negligible next to the towers for any real model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' datasheets.
_PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device: torch.device, configured: float | None) -> float | None:
    if configured is not None:
        return configured
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in _PEAK_BF16_TFLOPS.items() if key in name), None)


def training_flops_per_sample(model: nn.Module) -> float:
    """Forward + backward FLOPs of one sample (full-length text), leaving gradients, RNG and buffers untouched
    (a BatchNorm in train mode would otherwise fold the dummy batch into its running statistics)."""
    config = model.config
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    device = next(model.parameters()).device
    images = torch.zeros(2, 3, config.image_resolution, config.image_resolution, device=device)
    input_ids = torch.full((2, config.context_length), 101, dtype=torch.long, device=device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False) as counter:
        image_features, text_features, scale = model(images, input_ids)
        (scale * (image_features * text_features).sum()).backward()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return counter.get_total_flops() / images.shape[0]

"""The EfficientNet image tower of ALIGN, under Hugging Face ``AlignVisionModel``'s module names.

Built exactly as ``transformers`` builds it (stem, MBConv blocks, B7 scaling with ``round_filters`` /
``round_repeats``), without the top 1x1 conv and without an image projection: the image embedding is the
mean of the last feature map over H and W. Hugging Face pools with ``AvgPool2d(hidden_dim, ceil_mode=True)``,
the same numbers while the map is no larger than ``hidden_dim``; ceil-mode pooling exports badly to
ONNX / TensorRT (wrong divisors, window limits), a plain mean does not.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import model_validator
from torch import nn

from training.models.config import _Frozen


class EfficientNetConfig(_Frozen):
    """``AlignVisionConfig``'s architecture fields; the defaults are EfficientNet-B7 (kakaobrain/align-base)."""

    type: Literal["efficientnet"] = "efficientnet"
    image_resolution: int
    width_coefficient: float = 2.0
    depth_coefficient: float = 3.1
    depth_divisor: int = 8
    kernel_sizes: tuple[int, ...] = (3, 3, 5, 3, 5, 5, 3)
    in_channels: tuple[int, ...] = (32, 16, 24, 40, 80, 112, 192)
    out_channels: tuple[int, ...] = (16, 24, 40, 80, 112, 192, 320)
    strides: tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
    num_block_repeats: tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)
    expand_ratios: tuple[int, ...] = (1, 6, 6, 6, 6, 6, 6)
    depthwise_padding: tuple[int, ...] = ()  # block numbers with symmetric padding before a stride-2 conv
    squeeze_expansion_ratio: float = 0.25
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.99  # TensorFlow's convention, passed to PyTorch as is: see EfficientNet
    drop_connect_rate: float = 0.2

    @model_validator(mode="after")
    def _check(self) -> EfficientNetConfig:
        stages = len(self.in_channels)
        lists = ("kernel_sizes", "out_channels", "strides", "num_block_repeats", "expand_ratios")
        if any(len(getattr(self, name)) != stages for name in lists):
            raise ValueError(f"{', '.join(('in_channels', *lists))} must all have one entry per stage")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd (the padding assumes it), got {self.kernel_sizes}")
        if any(s not in (1, 2) for s in self.strides):
            raise ValueError(f"strides must be 1 or 2, got {self.strides}")
        widths = [self.round_filters(32), *(self.round_filters(c) for c in self.out_channels[:-1])]
        if [self.round_filters(c) for c in self.in_channels] != widths:
            raise ValueError(
                "in_channels must continue the stem (32) and each previous stage's out_channels, "
                f"got in {self.in_channels} / out {self.out_channels}"
            )
        return self

    def round_filters(self, channels: int) -> int:
        """Hugging Face's (and TF's) width scaling: a multiple of ``depth_divisor``, never 10% below."""
        divisor = self.depth_divisor
        scaled = channels * self.width_coefficient
        rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        if rounded < 0.9 * scaled:
            rounded += divisor
        return int(rounded)

    def round_repeats(self, repeats: int) -> int:
        return math.ceil(self.depth_coefficient * repeats)

    @property
    def width(self) -> int:
        """Channels of the last feature map: the image embedding's size (there is no projection)."""
        return self.round_filters(self.out_channels[-1])

    @property
    def feature_map_size(self) -> int:
        """Side of the last feature map for an ``image_resolution`` input."""
        size = (self.image_resolution + 1 - 3) // 2 + 1  # stem: pad right/bottom by 1, 3x3 stride 2
        first_block = 0
        for stage, (stride, kernel) in enumerate(zip(self.strides, self.kernel_sizes, strict=True)):
            if stride == 2:  # padded by k - 2 (k - 1 in depthwise_padding blocks), then a valid conv
                padding = kernel - 1 if first_block in self.depthwise_padding else kernel - 2
                size = (size + padding - kernel) // 2 + 1
            first_block += self.round_repeats(self.num_block_repeats[stage])
        return size


class _Stem(nn.Module):  # AlignVisionEmbeddings
    def __init__(self, config: EfficientNetConfig) -> None:
        super().__init__()
        width = config.round_filters(32)
        # one pixel right and bottom whatever the size, as Hugging Face (TF "SAME" only for even inputs)
        self.padding = nn.ZeroPad2d((0, 1, 0, 1))
        self.convolution = nn.Conv2d(3, width, kernel_size=3, stride=2, bias=False)
        self.batchnorm = nn.BatchNorm2d(width, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.activation = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.batchnorm(self.convolution(self.padding(x))))


class _Expansion(nn.Module):
    def __init__(self, config: EfficientNetConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.expand_conv = nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False)
        # Hugging Face passes no momentum here (PyTorch's 0.1), unlike every other BatchNorm of the tower
        self.expand_bn = nn.BatchNorm2d(out_dim, eps=config.batch_norm_eps)
        self.expand_act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand_act(self.expand_bn(self.expand_conv(x)))


class _Depthwise(nn.Module):
    def __init__(
        self, config: EfficientNetConfig, dim: int, stride: int, kernel_size: int, adjust_padding: bool
    ) -> None:
        super().__init__()
        half = kernel_size // 2
        # stride 2: TF "SAME" padding, one less on the top/left (unless the block is in depthwise_padding)
        self.depthwise_conv_pad = nn.ZeroPad2d(
            (half - 1, half, half - 1, half) if adjust_padding else (half, half, half, half)
        )
        self.stride = stride
        self.depthwise_conv = nn.Conv2d(
            dim,
            dim,
            kernel_size,
            stride=stride,
            padding=0 if stride == 2 else half,
            groups=dim,
            bias=False,
        )
        self.depthwise_norm = nn.BatchNorm2d(
            dim, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum
        )
        self.depthwise_act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = self.depthwise_conv_pad(x)
        return self.depthwise_act(self.depthwise_norm(self.depthwise_conv(x)))


class _SqueezeExcite(nn.Module):
    def __init__(self, config: EfficientNetConfig, in_dim: int, dim: int) -> None:
        super().__init__()
        squeezed = max(1, int(in_dim * config.squeeze_expansion_ratio))  # of the block's input width
        self.reduce = nn.Conv2d(dim, squeezed, kernel_size=1)
        self.expand = nn.Conv2d(squeezed, dim, kernel_size=1)
        self.act_reduce = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a mean rather than AdaptiveAvgPool2d(1): the same numbers, a simpler exported graph
        scale = self.expand(self.act_reduce(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class _Projection(nn.Module):  # AlignVisionFinalBlockLayer
    def __init__(self, config: EfficientNetConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.project_conv = nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False)
        self.project_bn = nn.BatchNorm2d(
            out_dim, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_bn(self.project_conv(x))


class MBConvBlock(nn.Module):  # AlignVisionBlock
    def __init__(
        self,
        config: EfficientNetConfig,
        in_dim: int,
        out_dim: int,
        stride: int,
        expand_ratio: int,
        kernel_size: int,
        drop_rate: float,
        residual: bool,
        adjust_padding: bool,
    ) -> None:
        super().__init__()
        dim = in_dim * expand_ratio
        if expand_ratio != 1:
            self.expansion = _Expansion(config, in_dim, dim)
        self.depthwise_conv = _Depthwise(config, dim, stride, kernel_size, adjust_padding)
        self.squeeze_excite = _SqueezeExcite(config, in_dim, dim)
        self.projection = _Projection(config, dim, out_dim)
        self.expand_ratio = expand_ratio
        self.residual = residual
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expansion(x) if self.expand_ratio != 1 else x
        h = self.projection(self.squeeze_excite(self.depthwise_conv(h)))
        if not self.residual:
            return h
        return x + _drop_connect(h, self.drop_rate, self.training)


def _drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth, as TF EfficientNet (which ALIGN was trained with): drop a sample's whole branch.

    Hugging Face applies an element-wise ``nn.Dropout`` here instead; both are the identity in eval mode.
    """
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class _Encoder(nn.Module):  # AlignVisionEncoder
    def __init__(self, config: EfficientNetConfig) -> None:
        super().__init__()
        total = sum(config.round_repeats(n) for n in config.num_block_repeats)
        blocks: list[MBConvBlock] = []
        for stage in range(len(config.in_channels)):
            in_dim = config.round_filters(config.in_channels[stage])
            out_dim = config.round_filters(config.out_channels[stage])
            for j in range(config.round_repeats(config.num_block_repeats[stage])):
                number = len(blocks)
                blocks.append(
                    MBConvBlock(
                        config,
                        in_dim=in_dim if j == 0 else out_dim,
                        out_dim=out_dim,
                        stride=config.strides[stage] if j == 0 else 1,
                        expand_ratio=config.expand_ratios[stage],
                        kernel_size=config.kernel_sizes[stage],
                        drop_rate=config.drop_connect_rate * number / total,
                        residual=j > 0,  # only repeats keep their shape
                        adjust_padding=number not in config.depthwise_padding,
                    )
                )
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class EfficientNet(nn.Module):
    """[N, 3, R, R] pixels -> [N, width] image embeddings (the mean of the last feature map).

    BatchNorm momentum: Hugging Face passes the config's TF-style 0.99 straight to ``nn.BatchNorm2d``, where
    it weights the *new* batch (TF's 0.99 weights the running value), so running statistics trained in
    train mode track the last batch. Kept as Hugging Face builds it, for equal modules and checkpoints;
    a training recipe must keep this tower's BatchNorm in eval mode or set momentum to 1 - 0.99.
    """

    def __init__(self, config: EfficientNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Stem(config)
        self.encoder = _Encoder(config)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # for training from scratch (loaded weights replace these): TF EfficientNet's fan-out normal init
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embeddings(pixels)).mean(dim=(2, 3))

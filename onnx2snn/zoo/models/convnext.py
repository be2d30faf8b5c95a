"""A small ConvNeXt for the 16x16 digits (our own code, after ConvNeXt's layout).

Patchify stem (a k x k conv, stride k, then LayerNorm over channels), stages of ConvNeXt
blocks (depthwise 7x7 conv -> permute to channels-last -> LayerNorm -> Linear 4x -> GELU ->
Linear -> layer scale -> permute back -> residual add), downsampling layers between stages
(LayerNorm over channels, 2x2 conv stride 2), global average pool, final LayerNorm, linear
head. LayerNorm over channels is written as permute -> nn.LayerNorm -> permute, so the ONNX
graph has Transpose + LayerNormalization nodes, and the pointwise layers are MatMuls on the
channels-last tensor, as in ConvNeXt.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...errors import ConfigError


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (permute to NHWC, normalize, permute back)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """x + permute_back(gamma * pw2(GELU(pw1(LN(permute(dwconv7x7(x)))))))."""

    def __init__(self, dim: int, mlp_ratio: int = 4, layer_scale: float = 1e-6, kernel: int = 7):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act = nn.Linear(dim, mlp_ratio * dim), nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # [B, H, W, C]
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class DigitsConvNeXt(nn.Module):
    """Stem, ``len(dims)`` stages of ``depths[i]`` blocks with downsampling between, GAP, LayerNorm, head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 16, patch: int = 2,
                 dims: Sequence[int] = (32, 64), depths: Sequence[int] = (2, 2), layer_scale: float = 1e-6):
        super().__init__()
        if len(dims) != len(depths) or not dims:
            raise ConfigError(f"dims={tuple(dims)} and depths={tuple(depths)} need the same non-zero length: "
                              "one width and one block count per stage", "depths")
        if input_size % (patch * 2 ** (len(dims) - 1)):
            raise ConfigError(f"input_size={input_size} is not divisible by patch={patch} times 2 per downsampling "
                              f"({len(dims) - 1} of them): pick a smaller patch or fewer stages", "patch")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, dims[0], patch, patch), ChannelNorm(dims[0]))
        self.downsample = nn.ModuleList(nn.Sequential(ChannelNorm(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, 2))
                                        for i in range(1, len(dims)))
        self.stages = nn.ModuleList(nn.Sequential(*(ConvNeXtBlock(d, layer_scale=layer_scale) for _ in range(n)))
                                    for d, n in zip(dims, depths))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages[0](self.stem(x))
        for down, stage in zip(self.downsample, self.stages[1:]):
            x = stage(down(x))
        return self.head(self.norm(x.mean((-2, -1))))

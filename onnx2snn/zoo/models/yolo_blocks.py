"""YOLO building blocks (our own code, after the published YOLOv8 / YOLO11 layouts).

One place for the pieces every YOLO-shaped model here shares: Conv-BN-act with the
activation as a parameter, Bottleneck, C2f, SPPF, YOLO11's C3k / C3k2 and its
position-sensitive attention (Attention, PSABlock, PSA, C2PSA), and the DFL head
(DFL, anchors, the decoupled Detect head whose ``decode`` ends like an Ultralytics
export: one ``[B, 4 + C, A]`` tensor).

:class:`Conv` keeps either of two state_dict layouts (``named``): ``conv/bn/act`` like
Ultralytics, or ``0/1/2`` like a plain ``nn.Sequential``; the zoo's committed weights use
both, and every block passes ``named`` down so their keys stay as they were.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from ... import checks
from ...errors import ConfigError

REG_MAX = 16
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU, "relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.1), "none": nn.Identity}


class Conv(nn.Sequential):
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d -> activation (``ACTIVATIONS`` key).

    named: children ``conv, bn, act`` (Ultralytics keys) or ``0, 1, 2`` (nn.Sequential keys).
    """

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, act: str = "silu", groups: int = 1,
                 named: bool = True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                  ACTIVATIONS[checks.choice("act", act, ACTIVATIONS)]()]
        super().__init__(OrderedDict(zip(("conv", "bn", "act"), layers)) if named else OrderedDict(
            (str(i), m) for i, m in enumerate(layers)))


class Bottleneck(nn.Module):
    """Two k x k convs, residual add when ``shortcut``."""

    def __init__(self, c: int, shortcut: bool = True, act: str = "silu", k: int = 3, named: bool = True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, k, act=act, named=named), Conv(c, c, k, act=act, named=named)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """1x1 conv, Split in two halves, n inner blocks chained on the second, Concat all, 1x1 conv.

    block: ``block(c)`` makes one inner block of width c (default: :class:`Bottleneck`);
    ``e``: hidden width as a fraction of ``cout`` (YOLO11's C3k2 uses 0.25 in early stages).
    """

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = False, act: str = "silu",
                 block: Callable[[int], nn.Module] | None = None, e: float = 0.5, named: bool = True):
        super().__init__()
        self.c = int(cout * e)
        self.cv1 = Conv(cin, 2 * self.c, 1, act=act, named=named)
        self.cv2 = Conv((2 + n) * self.c, cout, 1, act=act, named=named)
        block = block or (lambda c: Bottleneck(c, shortcut, act, named=named))
        self.m = nn.ModuleList(block(self.c) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """1x1 conv to cin/2, three chained MaxPool2d(k, 1, k//2), Concat the four, 1x1 conv."""

    def __init__(self, cin: int, cout: int, k: int = 5, act: str = "silu", named: bool = True):
        super().__init__()
        c = cin // 2
        self.cv1, self.cv2 = Conv(cin, c, 1, act=act, named=named), Conv(4 * c, cout, 1, act=act, named=named)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class C3k(nn.Module):
    """YOLO11's C3k: two 1x1 branches, n k x k bottlenecks on the first, Concat, 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int = 2, shortcut: bool = True, act: str = "silu", k: int = 3,
                 e: float = 0.5):
        super().__init__()
        c = int(cout * e)
        self.cv1, self.cv2 = Conv(cin, c, 1, act=act), Conv(cin, c, 1, act=act)
        self.cv3 = Conv(2 * c, cout, 1, act=act)
        self.m = nn.Sequential(*(Bottleneck(c, shortcut, act, k) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


def C3k2(cin: int, cout: int, n: int = 1, c3k: bool = False, e: float = 0.5, shortcut: bool = True,
         act: str = "silu") -> C2f:
    """YOLO11's C3k2: a C2f whose inner blocks are C3k (``c3k``) or Bottlenecks."""
    block = (lambda c: C3k(c, c, 2, shortcut, act)) if c3k else (lambda c: Bottleneck(c, shortcut, act))
    return C2f(cin, cout, n, shortcut, act, block, e)


class Attention(nn.Module):
    """YOLO11's position-sensitive attention on a [B, C, H, W] map (tokens = pixels).

    One 1x1 conv gives q, k, v per head (key width ``attn_ratio`` x head width); weights
    softmax(q^T k * scale) over the keys; output v @ attn^T plus a depthwise 3x3 conv of v
    (the positional term), then a 1x1 projection.
    """

    def __init__(self, dim: int, num_heads: int = 1, attn_ratio: float = 0.5):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"num_heads={num_heads} does not divide dim={dim}: pick a divisor of {dim}", "num_heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.key_dim = max(1, int(self.head_dim * attn_ratio))
        self.scale = self.key_dim ** -0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, 1, act="none")
        self.proj = Conv(dim, dim, 1, act="none")
        self.pe = Conv(dim, dim, 3, act="none", groups=dim)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w).split(
            (self.key_dim, self.key_dim, self.head_dim), 2)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(-1)
        y = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(y)


class PSABlock(nn.Module):
    """Residual attention then residual FFN (1x1 conv to 2c, act, 1x1 conv back)."""

    def __init__(self, c: int, num_heads: int = 1, attn_ratio: float = 0.5, act: str = "silu"):
        super().__init__()
        self.attn = Attention(c, num_heads, attn_ratio)
        self.ffn = nn.Sequential(Conv(c, 2 * c, 1, act=act), Conv(2 * c, c, 1, act="none"))

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    """YOLO11's C2PSA: 1x1 conv, Split, n PSABlocks on the second half, Concat, 1x1 conv.

    ``num_heads`` defaults to YOLO11's rule (hidden width / 64), at least one.
    """

    def __init__(self, cin: int, cout: int, n: int = 1, e: float = 0.5, act: str = "silu",
                 num_heads: int | None = None):
        super().__init__()
        if cin != cout:
            raise ConfigError(f"C2PSA keeps the width: cin={cin} != cout={cout}; add a 1x1 Conv to change it", "cout")
        self.c = int(cin * e)
        self.cv1, self.cv2 = Conv(cin, 2 * self.c, 1, act=act), Conv(2 * self.c, cin, 1, act=act)
        heads = num_heads or max(1, self.c // 64)
        self.m = nn.Sequential(*(PSABlock(self.c, heads, 0.5, act) for _ in range(n)))

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), 1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


def PSA(cin: int, cout: int, e: float = 0.5, act: str = "silu", num_heads: int | None = None) -> C2PSA:
    """YOLOv10's PSA: the C2PSA layout with exactly one attention + FFN block."""
    return C2PSA(cin, cout, 1, e, act, num_heads)


class DFL(nn.Module):
    """Distribution focal loss decode: softmax over ``reg_max`` bins, expectation by a fixed 1x1 conv."""

    def __init__(self, reg_max: int = REG_MAX):
        super().__init__()
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)
        self.reg_max = reg_max

    def forward(self, x):  # [B, 4 * reg_max, A] -> [B, 4, A]
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(shapes, strides, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points (cell centres, in grid units) [A, 2] and their strides [A, 1] for feature sizes (h, w)."""
    points, strs = [], []
    for (h, w), s in zip(shapes, strides):
        sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float, device=device) + 0.5,
                                torch.arange(w, dtype=torch.float, device=device) + 0.5, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        strs.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(points), torch.cat(strs)


class Detect(nn.Module):
    """Decoupled head per level + the export decode (DFL, dist2bbox, sigmoid) -> [B, 4 + C, A].

    Box branch: two 3x3 convs -> 4 x ``reg_max`` logits. Class branch: two 3x3 convs
    (YOLOv8), or with ``depthwise_cls`` two (depthwise 3x3, 1x1) pairs (YOLO11) -> C logits.
    """

    def __init__(self, num_classes: int, channels, strides, reg_max: int = REG_MAX, act: str = "silu",
                 depthwise_cls: bool = False):
        super().__init__()
        self.nc, self.reg_max, self.no = num_classes, reg_max, num_classes + 4 * reg_max
        self.strides = tuple(strides)
        c2, c3 = max(16, channels[0] // 4, 4 * reg_max), max(channels[0], min(num_classes, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(c, c2, 3, act=act), Conv(c2, c2, 3, act=act),
                                               nn.Conv2d(c2, 4 * reg_max, 1)) for c in channels)
        if depthwise_cls:
            def dw_pair(ci, co):
                return nn.Sequential(Conv(ci, ci, 3, act=act, groups=ci), Conv(ci, co, 1, act=act))
            self.cv3 = nn.ModuleList(nn.Sequential(dw_pair(c, c3), dw_pair(c3, c3), nn.Conv2d(c3, num_classes, 1))
                                     for c in channels)
        else:
            self.cv3 = nn.ModuleList(nn.Sequential(Conv(c, c3, 3, act=act), Conv(c3, c3, 3, act=act),
                                                   nn.Conv2d(c3, num_classes, 1)) for c in channels)
        self.dfl = DFL(reg_max)

    def init_bias(self, image_size: int = 64) -> None:
        """YOLOv8's prior: box logits 1, class logits for ~5 objects per image spread over the level's cells."""
        for a, b, s in zip(self.cv2, self.cv3, self.strides):
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[:] = math.log(5 / self.nc / (image_size / s) ** 2)

    def raw(self, feats) -> list[torch.Tensor]:
        """Per level [B, 4 * reg_max + C, H, W] (what the loss trains)."""
        return [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(feats)]

    def decode(self, maps) -> torch.Tensor:
        """Raw maps -> [B, 4 + C, A]: (cx, cy, w, h) in input pixels, class sigmoids."""
        b = maps[0].shape[0]
        anchors, strides = make_anchors([m.shape[-2:] for m in maps], self.strides, maps[0].device)
        x = torch.cat([m.view(b, self.no, -1) for m in maps], 2)
        box, cls = x.split((4 * self.reg_max, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        anchors = anchors.transpose(0, 1).unsqueeze(0)
        x1y1, x2y2 = anchors - lt, anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides.transpose(0, 1)
        return torch.cat((dbox, cls.sigmoid()), 1)

    def forward(self, feats):
        return self.decode(self.raw(feats))


__all__ = ["ACTIVATIONS", "REG_MAX", "Conv", "Bottleneck", "C2f", "SPPF", "C3k", "C3k2", "Attention", "PSABlock",
           "C2PSA", "PSA", "DFL", "make_anchors", "Detect"]

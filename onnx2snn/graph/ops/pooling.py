"""Pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool."""

from __future__ import annotations

import operator

import numpy as np
from torch import nn

from .. import dtypes
from .. import functional as OF
from ..builder import ConversionFailure, NodeContext
from ..registry import register
from .layers import _auto_pads, split_pads

_MAX = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def _pool_geometry(ctx: NodeContext):
    kernel = list(ctx.attr("kernel_shape"))
    nd = len(kernel)
    strides = list(ctx.attr("strides", [1] * nd))
    dil = list(ctx.attr("dilations", [1] * nd))
    pads = _auto_pads(ctx, kernel, strides, dil)
    return nd, kernel, strides, dil, pads


@register("MaxPool")
def maxpool(ctx: NodeContext):
    indices = len(ctx.node.output) > 1 and bool(ctx.node.output[1])
    nd, kernel, strides, dil, pads = _pool_geometry(ctx)
    sym, asym = split_pads(pads)
    x = ctx.inputs[0]
    if indices:
        if sym is None or any(p > k // 2 for p, k in zip(sym, kernel)) or ctx.attr("storage_order", 0):
            raise ConversionFailure("MaxPool with an Indices output is supported with symmetric pads of at most "
                                    "half the kernel and storage_order=0 only")
        m = _MAX[nd](tuple(kernel), stride=tuple(strides), padding=tuple(sym), dilation=tuple(dil),
                     ceil_mode=bool(ctx.attr("ceil_mode", 0)), return_indices=True)
        pair = ctx.module(m, x)
        return [ctx.function(operator.getitem, pair, 0),
                ctx.function(OF.flat_indices, ctx.function(operator.getitem, pair, 1), x)]
    if sym is None or any(p > k // 2 for p, k in zip(sym, kernel)):
        # torch allows padding <= kernel/2 only; pad explicitly with -inf otherwise
        torch_pads = []
        for i in reversed(range(nd)):
            torch_pads += [pads[i], pads[nd + i]]
        x = ctx.function(OF.pad_then, x, torch_pads, float("-inf"))
        sym = [0] * nd
    m = _MAX[nd](tuple(kernel), stride=tuple(strides), padding=tuple(sym), dilation=tuple(dil),
                 ceil_mode=bool(ctx.attr("ceil_mode", 0)))
    return [ctx.module(m, x)]


@register("AveragePool")
def avgpool(ctx: NodeContext):
    nd, kernel, strides, dil, pads = _pool_geometry(ctx)
    include = bool(ctx.attr("count_include_pad", 0))
    ceil = bool(ctx.attr("ceil_mode", 0))
    sym, _ = split_pads(pads)
    x = ctx.inputs[0]
    if sym is not None and all(d == 1 for d in dil) and all(p <= k // 2 for p, k in zip(sym, kernel)) \
            and (not ceil or include or not any(sym)):
        m = _AVG[nd](tuple(kernel), stride=tuple(strides), padding=tuple(sym), ceil_mode=ceil,
                     count_include_pad=include)
        return [ctx.module(m, x)]
    # the general case: window sums over the zero-padded input, divided by the number of
    # elements each window counts (inside the input, or inside input + pads)
    spatial = ctx.shape(0)[2:]
    torch_pads: list[int] = []
    counts = []
    for i in range(nd):
        n, k, s, d, p0, p1 = spatial[i], kernel[i], strides[i], dil[i], pads[i], pads[nd + i]
        span = (k - 1) * d + 1
        size = (n + p0 + p1 - span) / s + 1
        out = int(np.ceil(size)) if ceil else int(np.floor(size))
        if ceil and (out - 1) * s >= n + p0:
            out -= 1
        right = max(0, (out - 1) * s + span - (n + p0))
        lo, hi = (-p0, n + p1) if include else (0, n)
        starts = np.arange(out) * s - p0
        pos = starts[:, None] + np.arange(k)[None, :] * d
        counts.append(((pos >= lo) & (pos < hi)).sum(axis=1))
        torch_pads = [p0, right] + torch_pads
    divisor = counts[0]
    for c in counts[1:]:
        divisor = np.multiply.outer(divisor, c)
    if (divisor == 0).any():
        raise ConversionFailure("AveragePool with windows that hold no input element is not supported")
    dtype = dtypes.onnx_to_numpy(ctx.dtype(0))
    return [ctx.function(OF.pool_sum_div, x, kernel, strides, dil, torch_pads, divisor.astype(dtype))]


@register("GlobalAveragePool")
def global_avgpool(ctx: NodeContext):
    nd = ctx.rank(0) - 2
    cls = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[nd]
    return [ctx.module(cls(1), ctx.inputs[0])]


@register("GlobalMaxPool")
def global_maxpool(ctx: NodeContext):
    nd = ctx.rank(0) - 2
    cls = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}[nd]
    return [ctx.module(cls(1), ctx.inputs[0])]


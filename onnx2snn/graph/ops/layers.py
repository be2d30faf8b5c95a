"""Weighted layers: Conv, ConvTranspose, BatchNormalization, Gemm, MatMul."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..builder import ConversionFailure, NodeContext
from ..registry import register


def _param(a: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32).copy()))


def _auto_pads(ctx: NodeContext, kernel, strides, dilations) -> list[int]:
    """Explicit ONNX pads (begin..., end...) for auto_pad SAME_UPPER / SAME_LOWER / VALID."""
    mode = ctx.attr("auto_pad", "NOTSET")
    nd = len(kernel)
    if mode in ("NOTSET", ""):
        return list(ctx.attr("pads", [0] * (2 * nd)))
    if mode == "VALID":
        return [0] * (2 * nd)
    spatial = ctx.shape(0)[2:]
    begin, end = [], []
    for i in range(nd):
        out = -(-spatial[i] // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i])
        small, big = total // 2, total - total // 2
        if mode == "SAME_UPPER":
            begin.append(small), end.append(big)
        else:
            begin.append(big), end.append(small)
    return begin + end


def split_pads(pads: list[int]) -> tuple[list[int] | None, list[int]]:
    """(symmetric padding per dim, or None) and the torch F.pad list for asymmetric pads."""
    nd = len(pads) // 2
    begin, end = pads[:nd], pads[nd:]
    if begin == end:
        return list(begin), []
    torch_pads: list[int] = []
    for i in reversed(range(nd)):
        torch_pads += [begin[i], end[i]]
    return None, torch_pads


@register("Conv")
def conv(ctx: NodeContext):
    w = ctx.const(1, "weight")
    b = ctx.const_or_none(2)
    nd = w.ndim - 2
    if nd not in (1, 2, 3):
        raise ConversionFailure(f"{nd}-D convolution is not supported (1-D, 2-D and 3-D are)")
    kernel = list(ctx.attr("kernel_shape", w.shape[2:]))
    strides = list(ctx.attr("strides", [1] * nd))
    dil = list(ctx.attr("dilations", [1] * nd))
    groups = int(ctx.attr("group", 1))
    pads = _auto_pads(ctx, kernel, strides, dil)
    sym, asym = split_pads(pads)
    x = ctx.inputs[0]
    if sym is None:
        x = ctx.module(nn.ConstantPad1d(asym, 0.0) if nd == 1 else
                       nn.ConstantPad2d(asym, 0.0) if nd == 2 else nn.ConstantPad3d(asym, 0.0),
                       x, suffix="_pad")
        sym = [0] * nd
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
    m = cls(w.shape[1] * groups, w.shape[0], tuple(kernel), stride=tuple(strides), padding=tuple(sym),
            dilation=tuple(dil), groups=groups, bias=b is not None)
    m.weight = _param(w)
    if b is not None:
        m.bias = _param(b)
    return [ctx.module(m, x)]


@register("ConvTranspose")
def conv_transpose(ctx: NodeContext):
    w = ctx.const(1, "weight")
    b = ctx.const_or_none(2)
    nd = w.ndim - 2
    if nd not in (1, 2, 3):
        raise ConversionFailure(f"{nd}-D transposed convolution is not supported")
    if ctx.attr("output_shape") is not None or ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
        raise ConversionFailure("ConvTranspose with output_shape or SAME auto_pad is not supported; "
                                "export with explicit pads and output_padding")
    strides = list(ctx.attr("strides", [1] * nd))
    dil = list(ctx.attr("dilations", [1] * nd))
    groups = int(ctx.attr("group", 1))
    pads = list(ctx.attr("pads", [0] * (2 * nd)))
    out_pad = list(ctx.attr("output_padding", [0] * nd))
    begin, end = pads[:nd], pads[nd:]
    extra = [e - bb for bb, e in zip(begin, end)]
    if any(x < 0 for x in extra):
        raise ConversionFailure(f"ConvTranspose pads {pads} (end smaller than begin) are not supported")
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]
    m = cls(w.shape[0], w.shape[1] * groups, tuple(w.shape[2:]), stride=tuple(strides),
            padding=tuple(begin), output_padding=tuple(out_pad), groups=groups, bias=b is not None,
            dilation=tuple(dil))
    m.weight = _param(w)
    if b is not None:
        m.bias = _param(b)
    y = ctx.module(m, ctx.inputs[0])
    if any(extra):
        # pads larger at the end than at the beginning: crop the surplus at the end
        slices = (slice(None), slice(None)) + tuple(slice(0, -e if e else None) for e in extra)
        import operator
        y = ctx.function(operator.getitem, y, slices)
    return [y]


@register("BatchNormalization")
def batchnorm(ctx: NodeContext):
    scale, bias, mean, var = (ctx.const(i, n) for i, n in
                              zip(range(1, 5), ("scale", "bias", "mean", "var")))
    if ctx.attr("training_mode", 0):
        raise ConversionFailure("BatchNormalization in training mode is not supported; export in eval mode")
    rank = ctx.rank(0)
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
    if cls is None:
        raise ConversionFailure(f"BatchNormalization on a rank-{rank} tensor is not supported")
    m = cls(scale.shape[0], eps=float(ctx.attr("epsilon", 1e-5)),
            momentum=1.0 - float(ctx.attr("momentum", 0.9)))
    m.weight = _param(scale)
    m.bias = _param(bias)
    m.running_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    m.running_var.copy_(torch.from_numpy(var.astype(np.float32)))
    m.eval()
    return [ctx.module(m, ctx.inputs[0])]


@register("Gemm")
def gemm(ctx: NodeContext):
    alpha = float(ctx.attr("alpha", 1.0))
    beta = float(ctx.attr("beta", 1.0))
    ta, tb = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    a = ctx.inputs[0]
    if isinstance(ctx.inputs[1], np.ndarray) and not ta and not isinstance(a, np.ndarray):
        bmat = ctx.inputs[1]
        w = (bmat if tb else bmat.T) * alpha
        c = ctx.const_or_none(2)
        m = nn.Linear(w.shape[1], w.shape[0], bias=c is not None)
        m.weight = _param(w)
        if c is not None:
            m.bias = _param(np.broadcast_to(c * beta, (w.shape[0],)))
        return [ctx.module(m, a)]
    if ta:
        a = ctx.method("t", a)
    bv = ctx.inputs[1]
    if tb:
        bv = bv.T if isinstance(bv, np.ndarray) else ctx.method("t", bv)
    y = ctx.function(torch.matmul, a, bv)
    if alpha != 1.0:
        y = ctx.function(torch.mul, y, alpha)
    if ctx.has_input(2):
        c = ctx.inputs[2]
        y = ctx.function(torch.add, y, c * beta if isinstance(c, np.ndarray) else c)
    return [y]


@register("MatMul")
def matmul(ctx: NodeContext):
    a, b = ctx.inputs[0], ctx.inputs[1]
    if isinstance(b, np.ndarray) and b.ndim == 2 and not isinstance(a, np.ndarray):
        m = nn.Linear(b.shape[0], b.shape[1], bias=False)
        m.weight = _param(b.T)
        return [ctx.module(m, a)]
    return [ctx.function(torch.matmul, a, b)]


@register("Einsum")
def einsum(ctx: NodeContext):
    return [ctx.function(torch.einsum, ctx.attr("equation"), *ctx.inputs)]


"""Weighted layers: Conv, ConvTranspose, BatchNormalization, Gemm, MatMul."""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import nn

from .. import dtypes
from .. import functional as OF
from ..builder import ConversionFailure, NodeContext
from ..registry import register


def _param(a: np.ndarray) -> nn.Parameter:
    """A trainable parameter with the weight's own floating type (float32 for the rest)."""
    t = dtypes.to_tensor(np.asarray(a))
    return nn.Parameter(t if t.dtype.is_floating_point else t.float())


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
    b = ctx.const_or_none(2, "bias")
    nd = w.ndim - 2
    if nd not in (1, 2, 3):
        raise ConversionFailure(f"{nd}-D transposed convolution is not supported")
    in_sp = ctx.shape(0)[2:]
    kernel = list(w.shape[2:])
    strides = list(ctx.attr("strides", [1] * nd))
    dil = list(ctx.attr("dilations", [1] * nd))
    groups = int(ctx.attr("group", 1))
    out_pad = list(ctx.attr("output_padding", [0] * nd))[:nd]
    full = [s * (i - 1) + d * (k - 1) + 1 for s, i, d, k in zip(strides, in_sp, dil, kernel)]
    auto = ctx.attr("auto_pad", "NOTSET")
    out_shape = ctx.attr("output_shape")
    out_shape = None if out_shape is None else [int(v) for v in out_shape][-nd:]
    if auto in ("SAME_UPPER", "SAME_LOWER") and ctx.attr("pads") is None:
        want = out_shape or [i * s for i, s in zip(in_sp, strides)]
        total = [f + op - o for f, op, o in zip(full, out_pad, want)]
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    else:
        pads = list(ctx.attr("pads", [0] * (2 * nd)))
        begin = pads[:nd]
        want = out_shape or [f + op - p0 - p1 for f, op, p0, p1 in zip(full, out_pad, pads[:nd], pads[nd:])]
    # the output is positions [begin, begin + want) of the full transposed convolution, where
    # positions outside [0, full) receive no input (only the bias)
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]
    q = [2 * p + o - f for p, o, f in zip(begin, want, full)]  # torch output_padding for padding=begin
    if all(p >= 0 for p in begin) and all(0 <= v < max(s, d) for v, s, d in zip(q, strides, dil)):
        m = cls(w.shape[0], w.shape[1] * groups, tuple(kernel), stride=tuple(strides), padding=tuple(begin),
                output_padding=tuple(q), groups=groups, bias=b is not None, dilation=tuple(dil))
        _set(m, w, b)
        return [ctx.module(m, ctx.inputs[0])]
    inside = all(p >= 0 and p + o <= f for p, o, f in zip(begin, want, full))
    m = cls(w.shape[0], w.shape[1] * groups, tuple(kernel), stride=tuple(strides), groups=groups,
            bias=b is not None and inside, dilation=tuple(dil))
    _set(m, w, b if inside else None)
    y = ctx.module(m, ctx.inputs[0])
    if inside:
        slices = (slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in zip(begin, want))
        return [ctx.function(operator.getitem, y, slices)]
    torch_pads: list[int] = []
    for p, o, f in reversed(list(zip(begin, want, full))):
        torch_pads += [-p, p + o - f]
    y = ctx.function(OF.crop_pad, y, torch_pads)
    if b is not None:
        y = ctx.function(operator.add, y, b.reshape((-1,) + (1,) * nd))
    return [y]


def _set(m: nn.Module, w: np.ndarray, b: np.ndarray | None) -> None:
    m.weight = _param(w)
    if b is not None:
        m.bias = _param(b)


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
    a, bv = ctx.inputs[0], ctx.inputs[1]
    c = ctx.inputs[2] if ctx.has_input(2) else None
    if isinstance(bv, np.ndarray) and not ta and not isinstance(a, np.ndarray) and ctx.is_float(1):
        w = (bv if tb else bv.T) * np.asarray(alpha, dtype=bv.dtype)
        n = w.shape[0]
        bias = None
        if isinstance(c, np.ndarray) and c.size in (1, n) and (c.ndim < 2 or c.shape[-1] == n or c.size == 1):
            bias = np.broadcast_to(c.reshape(-1) * np.asarray(beta, dtype=c.dtype), (n,))
        if c is None or bias is not None:
            m = nn.Linear(w.shape[1], n, bias=bias is not None)
            m.weight = _param(w)
            if bias is not None:
                m.bias = _param(bias)
            return [ctx.module(m, a)]
    if ta:
        a = a.T if isinstance(a, np.ndarray) else ctx.method("t", a)
    if tb:
        bv = bv.T if isinstance(bv, np.ndarray) else ctx.method("t", bv)
    y = ctx.function(torch.matmul, ctx.tensor(a), ctx.tensor(bv))
    if alpha != 1.0:
        y = ctx.function(torch.mul, y, alpha)
    if c is not None:
        if isinstance(c, np.ndarray):
            c = c * np.asarray(beta, dtype=c.dtype)
        elif beta != 1.0:
            c = ctx.function(torch.mul, c, beta)
        y = ctx.function(torch.add, y, c)
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
    return [ctx.function(torch.einsum, ctx.attr("equation"), *[ctx.tensor(v) for v in ctx.inputs])]


# -- normalizations ---------------------------------------------------------------------------
def _broadcasts(src: tuple, dst: tuple) -> bool:
    """Whether an array of shape ``src`` broadcasts to ``dst`` (numpy's rule)."""
    if len(src) > len(dst):
        return False
    return all(a in (1, b) for a, b in zip(src[::-1], dst[::-1]))

def _norm_shape(ctx: NodeContext, axis: int) -> tuple[int, tuple]:
    """The axis and the normalized dims (from the axis on: the leading ones may stay unknown)."""
    rank = ctx.rank(0)
    axis = axis % rank
    known = ctx.input_shapes[0]
    if known is not None and all(isinstance(d, int) for d in known[axis:]):
        return axis, tuple(known[axis:])
    return axis, tuple(ctx.shape(0)[axis:])


@register("LayerNormalization", since=17)
def layer_norm(ctx: NodeContext):
    axis, shape = _norm_shape(ctx, int(ctx.attr("axis", -1)))
    eps = float(ctx.attr("epsilon", 1e-5))
    scale, bias = ctx.inputs[1], ctx.inputs[2] if ctx.has_input(2) else None
    x = ctx.inputs[0]
    if isinstance(scale, np.ndarray) and (bias is None or isinstance(bias, np.ndarray)) and ctx.is_float(0):
        for p in (scale, bias):
            if p is not None and not _broadcasts(p.shape, shape):
                raise ConversionFailure(f"scale / bias of shape {list(p.shape)} do not fit the normalized shape "
                                        f"{list(shape)} at the imported batch (axis {axis}: the norm spans the batch)")
        m = nn.LayerNorm(shape, eps=eps, elementwise_affine=True, bias=True)
        m.weight = _param(np.broadcast_to(scale, shape))
        m.bias = _param(np.broadcast_to(bias if bias is not None else np.zeros((), scale.dtype), shape))
        y = ctx.module(m, x)
    else:
        y = ctx.function(torch.nn.functional.layer_norm, x, shape, ctx.tensor(scale),
                         None if bias is None else ctx.tensor(bias), eps)
    outs = [y]
    if any(o for o in ctx.node.output[1:]):
        stats = ctx.function(OF.layer_norm_stats, x, axis, eps)
        outs += [ctx.function(operator.getitem, stats, 0), ctx.function(operator.getitem, stats, 1)]
    return outs


@register("RMSNormalization", since=23)
def rms_norm(ctx: NodeContext):
    axis, shape = _norm_shape(ctx, int(ctx.attr("axis", -1)))
    eps = float(ctx.attr("epsilon", 1e-5))
    return [ctx.function(OF.rms_norm, ctx.inputs[0], axis, eps, ctx.tensor(ctx.inputs[1]))]


@register("GroupNormalization", since=18)
def group_norm(ctx: NodeContext):
    groups = int(ctx.attr("num_groups"))
    eps = float(ctx.attr("epsilon", 1e-5))
    scale, bias = ctx.const(1, "scale"), ctx.const(2, "bias")
    c = ctx.shape(0)[1]
    if scale.size == groups and groups != c:  # opset 18: one scale per group
        scale, bias = np.repeat(scale, c // groups), np.repeat(bias, c // groups)
    if scale.size != c or c % groups:
        raise ConversionFailure(f"GroupNormalization with {groups} groups, {c} channels and a scale of "
                                f"{scale.size} values is not supported")
    m = nn.GroupNorm(groups, c, eps=eps)
    _set(m, scale, bias)
    return [ctx.module(m, ctx.inputs[0])]


@register("InstanceNormalization")
def instance_norm(ctx: NodeContext):
    scale, bias = ctx.const(1, "scale"), ctx.const(2, "bias")
    return [ctx.function(OF.instance_norm, ctx.inputs[0], ctx.tensor(scale), ctx.tensor(bias),
                         float(ctx.attr("epsilon", 1e-5)))]


@register("LpNormalization")
def lp_normalization(ctx: NodeContext):
    p = int(ctx.attr("p", 2))
    if p not in (1, 2):
        raise ConversionFailure(f"LpNormalization with p={p} is invalid (p is 1 or 2)")
    return [ctx.function(OF.lp_normalize, ctx.inputs[0], int(ctx.attr("axis", -1)), p)]


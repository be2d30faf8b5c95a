"""Activations become nn.Modules in the twin, so that analysis and the spiking rewrite
can find them by type: Relu, LeakyRelu, PRelu, Clip, Sigmoid, Tanh, HardSigmoid,
HardSwish, Softmax, and the rest of the element-wise non-linearities."""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import nn

from .. import functional as OF
from ..builder import NodeContext
from ..registry import register


def _simple(module_factory):
    def conv(ctx: NodeContext):
        return [ctx.module(module_factory(ctx), ctx.inputs[0])]
    return conv


register("Relu")(_simple(lambda c: nn.ReLU()))
register("Sigmoid")(_simple(lambda c: nn.Sigmoid()))
register("Tanh")(_simple(lambda c: nn.Tanh()))
register("HardSwish")(_simple(lambda c: nn.Hardswish()))
register("Softplus")(_simple(lambda c: nn.Softplus()))
register("Softsign")(_simple(lambda c: nn.Softsign()))
register("Mish")(_simple(lambda c: nn.Mish()))
register("LeakyRelu")(_simple(lambda c: nn.LeakyReLU(float(c.attr("alpha", 0.01)))))
register("Elu")(_simple(lambda c: nn.ELU(float(c.attr("alpha", 1.0)))))
register("Celu")(_simple(lambda c: nn.CELU(float(c.attr("alpha", 1.0)))))
register("Gelu", since=20)(_simple(
    lambda c: nn.GELU(approximate="tanh" if c.attr("approximate", "none") == "tanh" else "none")))


@register("Selu")
def selu(ctx: NodeContext):
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    if abs(alpha - 1.6732632) < 1e-6 and abs(gamma - 1.0507010) < 1e-6:
        return [ctx.module(nn.SELU(), ctx.inputs[0])]
    # gamma * ELU_alpha(x) is Selu with these parameters
    return [ctx.function(operator.mul, ctx.module(nn.ELU(alpha), ctx.inputs[0]), gamma)]


@register("Shrink")
def shrink(ctx: NodeContext):
    return [ctx.function(OF.shrink, ctx.inputs[0], float(ctx.attr("lambd", 0.5)), float(ctx.attr("bias", 0.0)))]


@register("Swish")
def swish(ctx: NodeContext):
    alpha = float(ctx.attr("alpha", 1.0))
    if alpha == 1.0:
        return [ctx.module(nn.SiLU(), ctx.inputs[0])]
    x = ctx.inputs[0]
    return [ctx.function(operator.mul, x, ctx.function(torch.sigmoid, ctx.function(operator.mul, x, alpha)))]


@register("Hardmax", since=13)
def hardmax(ctx: NodeContext):
    return [ctx.function(OF.hardmax, ctx.inputs[0], int(ctx.attr("axis", -1)) % ctx.rank(0))]


@register("ThresholdedRelu")
def thresholded_relu(ctx: NodeContext):
    a = float(ctx.attr("alpha", 1.0))
    return [ctx.module(nn.Threshold(a, 0.0), ctx.inputs[0])]


@register("HardSigmoid")
def hard_sigmoid(ctx: NodeContext):
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-7 and abs(beta - 0.5) < 1e-7:
        return [ctx.module(nn.Hardsigmoid(), ctx.inputs[0])]
    return [ctx.function(OF.hard_sigmoid, ctx.inputs[0], alpha, beta)]


@register("PRelu")
def prelu(ctx: NodeContext):
    slope = ctx.inputs[1]
    if isinstance(slope, np.ndarray):
        x_rank = ctx.rank(0)
        flat = slope.reshape(-1)
        per_channel = x_rank >= 2 and (slope.size == 1 or (
            slope.shape[0] == ctx.shape(0)[1] and slope.size == flat.size and
            slope.ndim == x_rank - 1 and all(d == 1 for d in slope.shape[1:])))
        if per_channel:
            m = nn.PReLU(num_parameters=flat.size)
            m.weight = nn.Parameter(torch.from_numpy(flat.astype(np.float32).copy()))
            return [ctx.module(m, ctx.inputs[0])]
    return [ctx.function(OF.prelu, ctx.inputs[0], slope)]


@register("Clip", since=11)
def clip(ctx: NodeContext):
    lo, hi = ctx.inputs[1] if ctx.has_input(1) else None, ctx.inputs[2] if ctx.has_input(2) else None
    if not all(v is None or isinstance(v, np.ndarray) for v in (lo, hi)):  # bounds computed at run time
        return [ctx.function(OF.clamp_tensors, ctx.inputs[0], lo, hi)]
    conv = int if ctx.is_int(0) else float
    return _clip(ctx, None if lo is None else conv(lo.reshape(-1)[0]), None if hi is None else conv(hi.reshape(-1)[0]))


@register("Clip", since=1)
def clip_v6(ctx: NodeContext):
    if ctx.opset >= 11:
        return clip(ctx)
    return _clip(ctx, float(ctx.attr("min", -3.4028234663852886e38)), float(ctx.attr("max", 3.4028234663852886e38)))


def _clip(ctx: NodeContext, lo, hi):
    x = ctx.inputs[0]
    if ctx.is_float(0):
        big = 3.0e38
        lo = None if lo is None or lo <= -big else lo
        hi = None if hi is None or hi >= big else hi
    if lo is None and hi is None:
        return [x]
    if not ctx.is_float(0) or (lo is not None and hi is not None and lo >= hi):
        # integers keep their type; min > max clips everything to max (as numpy and ONNX)
        return [ctx.function(OF.clamp_tensors, x, lo, hi)]
    if lo == 0.0 and hi == 6.0:
        return [ctx.module(nn.ReLU6(), x)]
    if lo == 0.0 and hi is None:
        return [ctx.module(nn.ReLU(), x)]
    if lo is not None and hi is not None:
        return [ctx.module(nn.Hardtanh(lo, hi), x)]
    return [ctx.function(OF.clip, x, lo, hi)]


@register("Softmax", since=13)
def softmax(ctx: NodeContext):
    axis = int(ctx.attr("axis", -1))
    return [ctx.module(nn.Softmax(dim=axis), ctx.inputs[0])]


@register("Softmax", since=1)
def softmax_v1(ctx: NodeContext):
    if ctx.opset >= 13:
        return softmax(ctx)
    axis = int(ctx.attr("axis", 1)) % ctx.rank(0)
    if axis == ctx.rank(0) - 1:
        return [ctx.module(nn.Softmax(dim=axis), ctx.inputs[0])]
    return [ctx.function(OF.softmax_2d, ctx.inputs[0], axis)]


@register("LogSoftmax", since=1)
def log_softmax(ctx: NodeContext):
    rank = ctx.rank(0)
    axis = int(ctx.attr("axis", -1 if ctx.opset >= 13 else 1)) % rank
    if ctx.opset >= 13 or axis == rank - 1:
        return [ctx.module(nn.LogSoftmax(dim=axis), ctx.inputs[0])]
    return [ctx.function(OF.log_softmax_2d, ctx.inputs[0], axis)]

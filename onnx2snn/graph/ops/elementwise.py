"""Element-wise arithmetic, comparison, bitwise and unary math ops, with ONNX broadcasting,
and the type conversions Cast / CastLike."""

from __future__ import annotations

import operator

import numpy as np
import onnx
import torch

from .. import dtypes
from .. import functional as OF
from ..builder import ConversionFailure, NodeContext, evaluate
from ..registry import register


def _binary(fn):
    def conv(ctx: NodeContext):
        a, b = ctx.inputs[0], ctx.inputs[1]
        if fn.__module__ != "_operator":  # torch functions take a constant first operand as a tensor only
            a = ctx.tensor(a)
        return [ctx.function(fn, a, b)]
    return conv


register("Add")(_binary(operator.add))
register("Sub")(_binary(operator.sub))
register("Mul")(_binary(operator.mul))
register("Equal")(_binary(torch.eq))
register("Less")(_binary(torch.lt))
register("LessOrEqual")(_binary(torch.le))
register("Greater")(_binary(torch.gt))
register("GreaterOrEqual")(_binary(torch.ge))
register("And")(_binary(torch.logical_and))
register("Or")(_binary(torch.logical_or))
register("Xor")(_binary(torch.logical_xor))
register("BitwiseAnd")(_binary(torch.bitwise_and))
register("BitwiseOr")(_binary(torch.bitwise_or))
register("BitwiseXor")(_binary(torch.bitwise_xor))


@register("BitwiseNot")
def bitwise_not(ctx: NodeContext):
    return [ctx.function(torch.bitwise_not, ctx.inputs[0])]


@register("BitShift")
def bit_shift(ctx: NodeContext):
    fn = torch.bitwise_left_shift if ctx.attr("direction") == "LEFT" else torch.bitwise_right_shift
    return [ctx.function(fn, ctx.tensor(ctx.inputs[0]), ctx.tensor(ctx.inputs[1]))]


@register("Pow")
def pow_(ctx: NodeContext):
    a, b = ctx.inputs[0], ctx.inputs[1]
    if ctx.dtype(0) is not None and ctx.dtype(1) is not None and ctx.dtype(0) != ctx.dtype(1):
        # ONNX: the result has the base's type (an integer base truncates)
        return [ctx.function(OF.pow_as_base, ctx.tensor(a), b)]
    return [ctx.function(torch.pow, a, b)]


@register("Div")
def div(ctx: NodeContext):
    a, b = ctx.inputs[0], ctx.inputs[1]
    if ctx.is_int(0):
        return [ctx.function(OF.int_div, ctx.tensor(a), b)]
    return [ctx.function(operator.truediv, a, b)]


@register("Mod")
def mod(ctx: NodeContext):
    fn = torch.fmod if int(ctx.attr("fmod", 0)) else torch.remainder  # fmod=0: the divisor's sign
    return [ctx.function(fn, ctx.tensor(ctx.inputs[0]), ctx.inputs[1])]


_UNARY = {
    "Neg": torch.neg, "Abs": torch.abs, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Erf": torch.erf, "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Asin": torch.asin,
    "Acos": torch.acos, "Atan": torch.atan, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh,
    "Acosh": torch.acosh, "Atanh": torch.atanh, "Sign": torch.sign, "Not": torch.logical_not,
    "IsNaN": torch.isnan,
}


def _unary(fn):
    def conv(ctx: NodeContext):
        return [ctx.function(fn, ctx.inputs[0])]
    return conv


for _op, _fn in _UNARY.items():
    register(_op)(_unary(_fn))


@register("IsInf")
def is_inf(ctx: NodeContext):
    neg, pos = int(ctx.attr("detect_negative", 1)), int(ctx.attr("detect_positive", 1))
    fn = torch.isinf if neg and pos else torch.isneginf if neg else torch.isposinf if pos else None
    if fn is None:
        return [ctx.function(torch.zeros_like, ctx.inputs[0], dtype=torch.bool)]
    return [ctx.function(fn, ctx.inputs[0])]


def _variadic(fn, mean=False):
    def conv(ctx: NodeContext):
        vals = [ctx.tensor(v) for v in ctx.inputs if v is not None]
        y = vals[0]
        for v in vals[1:]:
            y = ctx.function(fn, y, v)
        if mean and len(vals) > 1:
            y = ctx.function(operator.truediv, y, float(len(vals)))
        elif len(vals) == 1:
            y = ctx.function(torch.clone, y)
        return [y]
    return conv


register("Sum")(_variadic(operator.add))
register("Mean")(_variadic(operator.add, mean=True))
register("Max")(_variadic(torch.maximum))
register("Min")(_variadic(torch.minimum))


@register("Where")
def where(ctx: NodeContext):
    c, a, b = ctx.inputs[:3]
    return [ctx.function(torch.where, ctx.tensor(c), ctx.tensor(a), ctx.tensor(b))]


def _cast(ctx: NodeContext, x, to: int, saturate: bool):
    if to not in dtypes.TORCH:
        raise ConversionFailure(f"Cast to {dtypes.name(to)} is not supported ({dtypes.why_not(to)})")
    if isinstance(x, np.ndarray):  # a constant: cast it now, as ONNX does
        node = onnx.helper.make_node("Cast", ["x"], ["y"], to=to, saturate=int(saturate))
        return evaluate(node, [x], [onnx.helper.make_opsetid("", 21)])[0]
    if to in dtypes.FLOAT8:
        return ctx.function(OF.cast_float8, x, dtypes.TORCH[to], saturate)
    if ctx.dtype(0) in dtypes.FLOAT8 and to in dtypes.INTEGER | {onnx.TensorProto.BOOL}:
        x = ctx.method("to", x, torch.float32)
    return ctx.method("to", x, dtypes.TORCH[to])


@register("Cast")
def cast(ctx: NodeContext):
    if ctx.dtype(0) == onnx.TensorProto.STRING:
        raise ConversionFailure("Cast from strings is not supported")
    return [_cast(ctx, ctx.inputs[0], int(ctx.attr("to")), bool(ctx.attr("saturate", 1)))]


@register("CastLike")
def cast_like(ctx: NodeContext):
    to = ctx.dtype(1)
    if to is None:
        raise ConversionFailure("CastLike needs the type of its second input, which is unknown")
    return [_cast(ctx, ctx.inputs[0], to, bool(ctx.attr("saturate", 1)))]

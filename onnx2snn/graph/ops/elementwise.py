"""Element-wise arithmetic, comparison and unary math ops, with ONNX broadcasting."""

from __future__ import annotations

import operator

import numpy as np
import onnx
import torch

from .. import functional as OF
from ..builder import ConversionFailure, NodeContext
from ..registry import register

_INT_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32,
              onnx.TensorProto.INT64, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
              onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


def _binary(fn):
    def conv(ctx: NodeContext):
        a, b = ctx.inputs[0], ctx.inputs[1]
        return [ctx.function(fn, a, b)]
    return conv


register("Add")(_binary(operator.add))
register("Sub")(_binary(operator.sub))
register("Mul")(_binary(operator.mul))
register("Pow")(_binary(torch.pow))
register("Equal")(_binary(torch.eq))
register("Less")(_binary(torch.lt))
register("LessOrEqual")(_binary(torch.le))
register("Greater")(_binary(torch.gt))
register("GreaterOrEqual")(_binary(torch.ge))
register("And")(_binary(torch.logical_and))
register("Or")(_binary(torch.logical_or))
register("Xor")(_binary(torch.logical_xor))


@register("Div")
def div(ctx: NodeContext):
    a, b = ctx.inputs[0], ctx.inputs[1]
    if ctx.input_dtypes and ctx.input_dtypes[0] in _INT_TYPES:
        return [ctx.function(OF.int_div, a, b)]
    return [ctx.function(operator.truediv, a, b)]


@register("Mod")
def mod(ctx: NodeContext):
    fn = torch.fmod if int(ctx.attr("fmod", 0)) else torch.remainder
    return [ctx.function(fn, ctx.inputs[0], ctx.inputs[1])]


_UNARY = {
    "Neg": torch.neg, "Abs": torch.abs, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Erf": torch.erf, "Sin": torch.sin, "Cos": torch.cos, "Sign": torch.sign, "Not": torch.logical_not,
    "IsNaN": torch.isnan, "Atan": torch.atan, "Asin": torch.asin, "Acos": torch.acos, "Tan": torch.tan,
}


def _unary(fn):
    def conv(ctx: NodeContext):
        return [ctx.function(fn, ctx.inputs[0])]
    return conv


for _op, _fn in _UNARY.items():
    register(_op)(_unary(_fn))


def _variadic(fn, mean=False):
    def conv(ctx: NodeContext):
        vals = [v for v in ctx.inputs if v is not None]
        y = vals[0]
        for v in vals[1:]:
            y = ctx.function(fn, y, v)
        if mean and len(vals) > 1:
            y = ctx.function(operator.truediv, y, float(len(vals)))
        elif len(vals) == 1:
            y = ctx.function(torch.clone, y) if not isinstance(y, np.ndarray) else y
        return [y]
    return conv


register("Sum")(_variadic(operator.add))
register("Mean")(_variadic(operator.add, mean=True))
register("Max")(_variadic(torch.maximum))
register("Min")(_variadic(torch.minimum))


@register("Where")
def where(ctx: NodeContext):
    return [ctx.function(torch.where, *ctx.inputs[:3])]


_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT16: torch.int16, onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool,
}


@register("Cast")
def cast(ctx: NodeContext):
    to = int(ctx.attr("to"))
    if to not in _DTYPES:
        raise ConversionFailure(f"Cast to ONNX type {onnx.TensorProto.DataType.Name(to)} is not supported")
    return [ctx.method("to", ctx.inputs[0], _DTYPES[to])]


@register("CastLike")
def cast_like(ctx: NodeContext):
    return [ctx.method("type_as", ctx.inputs[0], ctx.inputs[1])]

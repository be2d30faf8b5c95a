"""Tensor layout and shape ops: Concat, Split, Slice, Reshape, Transpose, Squeeze,
Unsqueeze, Flatten, Pad, Gather, Range, Expand, Tile, reductions, and the pass-throughs
(Identity, Dropout). Shape arithmetic on constants is folded by the importer before a
converter sees it; what stays here computes at run time."""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import nn

from .. import functional as OF
from ..builder import ConversionFailure, NodeContext
from ..registry import register

INT64_MAX = np.iinfo(np.int64).max


def _axes(ctx: NodeContext, input_index: int, attr: str = "axes") -> list[int] | None:
    """Axes from the input (newer opsets) or the attribute (older ones)."""
    if ctx.has_input(input_index):
        return [int(a) for a in ctx.const(input_index, attr).reshape(-1)]
    v = ctx.attr(attr)
    return None if v is None else [int(a) for a in v]


@register("Identity")
def identity(ctx: NodeContext):
    return [ctx.inputs[0]]


@register("Dropout")
def dropout(ctx: NodeContext):
    """Identity in inference mode (the mask output is all true); training mode is random."""
    if ctx.opset >= 12:
        training = ctx.const_or_none(2, "training_mode")
        ratio = ctx.const_or_none(1, "ratio")
        train = training is not None and bool(training.reshape(-1)[0])
        ratio = 0.5 if ratio is None else float(ratio.reshape(-1)[0])
    else:
        train, ratio = not int(ctx.attr("is_test", 1 if ctx.opset >= 7 else 0)), float(ctx.attr("ratio", 0.5))
        train = train and ctx.opset < 7
    if train and ratio != 0.0:
        raise ConversionFailure(
            "Dropout in training mode (training_mode=True) drops random elements: the result cannot be "
            "reproduced. Export the model in eval mode (model.eval())")
    outs = [ctx.inputs[0]]
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        outs.append(ctx.function(torch.ones_like, ctx.inputs[0], dtype=torch.bool))
    return outs


@register("Constant")
def constant(ctx: NodeContext):
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key == "value" and key in ctx.attrs and not isinstance(ctx.attrs[key], np.ndarray):
            break
        if key in ctx.attrs:
            v = ctx.attrs[key]
            dtype = np.float32 if "float" in key else np.int64 if "int" in key else None
            return [np.asarray(v, dtype=dtype)]
    raise ConversionFailure(f"Constant with attributes {sorted(ctx.attrs)} is not supported")


@register("Concat")
def concat(ctx: NodeContext):
    vals = [v for v in ctx.inputs if v is not None]
    rank = ctx.rank(0) if ctx.input_shapes and ctx.input_shapes[0] is not None else None
    axis = int(ctx.attr("axis"))
    axis = axis % rank if rank else axis
    runtime = [v for v in vals if not isinstance(v, np.ndarray)]
    if ctx.builder.static_batch == 1 and axis != 0 and runtime:
        # a constant with batch 1 next to computed tensors (a class token): it follows their batch
        vals = [ctx.function(OF.expand_batch_like, v, runtime[0])
                if isinstance(v, np.ndarray) and v.ndim > 1 and v.shape[0] == 1 else v for v in vals]
    return [ctx.function(torch.cat, vals, dim=axis)]


@register("Split")
def split(ctx: NodeContext):
    axis = int(ctx.attr("axis", 0))
    n_out = len(ctx.node.output)
    sizes = None
    if ctx.has_input(1):
        sizes = [int(s) for s in ctx.const(1, "split")]
    elif ctx.attr("split") is not None:
        sizes = [int(s) for s in ctx.attr("split")]
    dim = ctx.shape(0)[axis]
    if sizes is None:
        chunk = -(-dim // n_out)
        sizes = [chunk] * (n_out - 1) + [dim - chunk * (n_out - 1)]
    parts = ctx.function(torch.split, ctx.inputs[0], sizes, dim=axis)
    return [ctx.function(operator.getitem, parts, i) for i in range(n_out)]


@register("Slice", since=10)
def slice_(ctx: NodeContext):
    starts = [int(s) for s in ctx.const(1, "starts")]
    ends = [int(e) for e in ctx.const(2, "ends")]
    rank = ctx.rank(0)
    axes = _axes(ctx, 3) or list(range(len(starts)))
    steps = [int(s) for s in ctx.const(4, "steps")] if ctx.has_input(4) else [1] * len(starts)
    return [_emit_slice(ctx, starts, ends, [a % rank for a in axes], steps)]


@register("Slice", since=1)
def slice_v1(ctx: NodeContext):
    if ctx.opset >= 10:
        return slice_(ctx)
    starts, ends = list(ctx.attr("starts")), list(ctx.attr("ends"))
    axes = list(ctx.attr("axes", range(len(starts))))
    rank = ctx.rank(0)
    return [_emit_slice(ctx, starts, ends, [a % rank for a in axes], [1] * len(starts))]


def _emit_slice(ctx: NodeContext, starts, ends, axes, steps):
    if any(s == 0 for s in steps):
        raise ConversionFailure("Slice with step 0 is invalid")
    if all(s > 0 for s in steps):
        index: list = [slice(None)] * (max(axes) + 1)
        for s, e, a, st in zip(starts, ends, axes, steps):
            e = None if e >= INT64_MAX // 2 else e
            s = 0 if s <= -(INT64_MAX // 2) else s
            index[a] = slice(s, e, st if st != 1 else None)
        return ctx.function(operator.getitem, ctx.inputs[0], tuple(index))
    return ctx.function(OF.onnx_slice, ctx.inputs[0], starts, ends, axes, steps)


def _batch_flexible(ctx: NodeContext, target: list[int]) -> bool:
    """Whether a target shape keeps the input's leading (batch) dim, as exporters write
    reshapes of a batch-1 graph: then the twin keeps whatever batch it is given."""
    in_shape = ctx.input_shapes[0]
    batch = ctx.builder.static_batch
    return (batch is not None and in_shape is not None and len(in_shape) > 0 and len(target) > 0
            and in_shape[0] == batch and target[0] == batch)


@register("Reshape", since=5)
def reshape(ctx: NodeContext):
    target = [int(s) for s in ctx.const(1, "shape")]
    allowzero = int(ctx.attr("allowzero", 0))
    in_shape = ctx.input_shapes[0]
    nxt = ctx.shadow(1)
    if nxt is not None and len(nxt) == len(target) and in_shape is not None \
            and all(isinstance(d, int) for d in in_shape) and ctx.builder.static_batch:
        # the target follows the batch: entry = base + slope * (B - B0), B read off the input's size
        slope = [int(b) - a for a, b in zip(target, nxt)]
        numel = int(np.prod(in_shape))
        if numel > 0:
            return [ctx.function(OF.reshape_affine, ctx.inputs[0], target, slope, numel,
                                 ctx.builder.static_batch, bool(allowzero))]
    if not allowzero and 0 in target:
        if in_shape is None:
            raise ConversionFailure("Reshape with 0 in the target shape needs the input shape")
        target = [in_shape[i] if d == 0 else d for i, d in enumerate(target)]
    if _batch_flexible(ctx, target):
        return [ctx.function(OF.reshape_keep_batch, ctx.inputs[0], tuple(target[1:]))]
    if ctx.builder.static_batch == 1 and len(target) > 1 and target[0] == 1 and -1 not in target \
            and not isinstance(ctx.inputs[0], np.ndarray):
        # the batch merged with other dims (e.g. [B*H*W, C] -> [B, H, W, C]): the batch follows
        target = [-1] + target[1:]
    return [ctx.method("reshape", ctx.inputs[0], tuple(target))]


@register("Reshape", since=1)
def reshape_v1(ctx: NodeContext):
    if ctx.opset >= 5:
        return reshape(ctx)
    return [ctx.method("reshape", ctx.inputs[0], tuple(int(s) for s in ctx.attr("shape")))]


@register("Flatten")
def flatten(ctx: NodeContext):
    axis = int(ctx.attr("axis", 1))
    rank = ctx.rank(0)
    axis = axis % rank if rank else 0
    if axis == 1:
        return [ctx.module(nn.Flatten(1), ctx.inputs[0])]
    return [ctx.function(OF.flatten_2d, ctx.inputs[0], axis)]


@register("Transpose")
def transpose(ctx: NodeContext):
    perm = ctx.attr("perm")
    rank = ctx.rank(0)
    perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
    return [ctx.method("permute", ctx.inputs[0], tuple(perm))]


@register("Squeeze")
def squeeze(ctx: NodeContext):
    axes = _axes(ctx, 1)
    if axes is None:
        shape = ctx.shape(0)
        axes = [i for i, d in enumerate(shape) if d == 1]
    rank = ctx.rank(0)
    return [ctx.method("squeeze", ctx.inputs[0], tuple(sorted(a % rank for a in axes)))]


@register("Unsqueeze")
def unsqueeze(ctx: NodeContext):
    axes = _axes(ctx, 1)
    out_rank = ctx.rank(0) + len(axes)
    y = ctx.inputs[0]
    for a in sorted(a % out_rank for a in axes):
        y = ctx.method("unsqueeze", y, a)
    return [y]


@register("Pad", since=11)
def pad(ctx: NodeContext):
    pads = [int(p) for p in ctx.const(1, "pads")]
    value = float(ctx.const(2).reshape(-1)[0]) if ctx.has_input(2) and ctx.const(2).size else 0.0
    rank = ctx.rank(0)
    axes = _axes(ctx, 3) if len(ctx.inputs) > 3 else None
    return [_emit_pad(ctx, pads, value, axes, rank)]


@register("Pad", since=1)
def pad_v2(ctx: NodeContext):
    if ctx.opset >= 11:
        return pad(ctx)
    pads = [int(p) for p in ctx.attr("pads")]
    return [_emit_pad(ctx, pads, float(ctx.attr("value", 0.0)), None, ctx.rank(0))]


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _emit_pad(ctx: NodeContext, pads, value, axes, rank):
    mode = ctx.attr("mode", "constant")
    if mode not in _PAD_MODES:
        raise ConversionFailure(f"Pad mode {mode!r} is not supported")
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    n = len(axes)
    begin, end = [0] * rank, [0] * rank
    for a, p0, p1 in zip(axes, pads[:n], pads[n:]):
        begin[a], end[a] = p0, p1
    padded = [a for a in range(rank) if begin[a] or end[a]]
    torch_pads: list[int] = []
    for a in range(rank - 1, (min(padded) if padded else rank) - 1, -1):
        torch_pads += [begin[a], end[a]]
    if not torch_pads:
        return ctx.inputs[0]
    tm = _PAD_MODES[mode]
    if tm != "constant" and len(torch_pads) // 2 > rank - 2:
        raise ConversionFailure(f"Pad mode {mode!r} on the batch or channel dim is not supported")
    if tm == "constant" and rank == 4 and len(torch_pads) == 4 and value == 0.0 and min(torch_pads) >= 0:
        return ctx.module(nn.ZeroPad2d(tuple(torch_pads)), ctx.inputs[0])
    return ctx.function(OF.pad_then, ctx.inputs[0], torch_pads, value, tm)


@register("Gather")
def gather(ctx: NodeContext):
    axis = int(ctx.attr("axis", 0))
    rank = ctx.rank(0)
    axis %= rank
    idx = ctx.inputs[1]
    if isinstance(idx, np.ndarray) and idx.ndim == 0:
        i = int(idx)
        return [ctx.method("select", ctx.inputs[0], axis, i)]
    if isinstance(idx, np.ndarray):
        idx = idx.astype(np.int64)
    return [ctx.function(OF.gather, ctx.inputs[0], idx, axis)]


@register("Shape")
def shape(ctx: NodeContext):
    start = int(ctx.attr("start", 0))
    end = ctx.attr("end")
    known = ctx.input_shapes[0]
    if known is not None and all(isinstance(d, int) for d in known):
        # static: a constant (the batch dim as imported); with its value at the next batch
        # size as a shadow, so that reshapes know how their targets follow the batch
        part = slice(start, None if end is None else int(end))
        nxt = ctx.builder.shadow_shapes.get(ctx.node.input[0])
        if nxt is not None and all(isinstance(d, int) for d in nxt) and list(nxt) != list(known):
            ctx.set_shadow(0, np.asarray(nxt, dtype=np.int64)[part])
        return [np.asarray(known, dtype=np.int64)[part]]
    s = ctx.function(torch._shape_as_tensor, ctx.inputs[0])
    if start or end is not None:
        s = ctx.function(operator.getitem, s, slice(start, None if end is None else int(end)))
    return [s]


@register("Range", since=11)
def range_(ctx: NodeContext):
    """Range on run-time scalars (on constants the importer folds it), e.g. the batch indices
    torch's dynamo exporter computes from the input's batch size."""
    return [ctx.function(OF.onnx_range, ctx.inputs[0], ctx.inputs[1], ctx.inputs[2], dtype=ctx.torch_dtype(0))]


@register("Expand")
def expand(ctx: NodeContext):
    target = [int(s) for s in ctx.const(1, "shape")]
    nxt = ctx.shadow(1)
    in_shape = ctx.input_shapes[0]
    if nxt is not None and len(nxt) == len(target) and not isinstance(ctx.inputs[0], np.ndarray) \
            and in_shape is not None and all(isinstance(d, int) for d in in_shape) and ctx.builder.static_batch:
        numel = int(np.prod(in_shape))
        if numel > 0:  # the target follows the batch, read off the input's size (see Reshape)
            return [ctx.function(OF.expand_affine, ctx.inputs[0], target, [int(b) - a for a, b in zip(target, nxt)],
                                 numel, ctx.builder.static_batch)]
    if _batch_flexible(ctx, target):
        return [ctx.function(OF.expand_keep_batch, ctx.inputs[0], tuple(target[1:]))]
    return [ctx.function(OF.onnx_expand, ctx.inputs[0], tuple(target))]


@register("Tile")
def tile(ctx: NodeContext):
    reps = [int(r) for r in ctx.const(1, "repeats")]
    return [ctx.method("repeat", ctx.inputs[0], tuple(reps))]


_EMPTY = {"mean": float("nan"), "sum": 0.0, "amax": float("-inf"), "amin": float("inf"), "prod": 1.0,
          "l1": 0.0, "l2": 0.0, "sumsquare": 0.0, "logsum": float("-inf"), "logsumexp": float("-inf")}


def _reduce(fn_name):
    def conv(ctx: NodeContext):
        keep = bool(ctx.attr("keepdims", 1))
        axes = _axes(ctx, 1)
        x = ctx.inputs[0]
        rank = ctx.rank(0)
        if axes is None or len(axes) == 0:
            if int(ctx.attr("noop_with_empty_axes", 0)):
                return [x]
            axes = list(range(rank))
        axes = tuple(sorted(a % rank for a in axes)) if rank else ()
        if rank == 0:
            return [x]
        shape = ctx.input_shapes[0]
        if shape is not None and any(shape[a] == 0 for a in axes):
            return [ctx.function(OF.reduce_empty, x, axes, keep, _EMPTY[fn_name])]
        if fn_name in ("amax", "amin", "mean", "sum"):
            if fn_name in ("mean",) and not ctx.is_float(0):
                raise ConversionFailure("ReduceMean of integers is not supported")
            return [ctx.function(getattr(torch, fn_name), x, dim=axes, keepdim=keep)]
        if fn_name == "prod":
            y = x
            for a in sorted(axes, reverse=True):
                y = ctx.function(torch.prod, y, dim=a, keepdim=keep)
            return [y]
        if not ctx.is_float(0):
            raise ConversionFailure(f"{ctx.node.op_type} of integers is not supported")
        if fn_name in ("l1", "l2"):
            return [ctx.function(torch.linalg.vector_norm, x, 1 if fn_name == "l1" else 2, dim=axes, keepdim=keep)]
        if fn_name == "sumsquare":
            return [ctx.function(torch.sum, ctx.function(torch.square, x), dim=axes, keepdim=keep)]
        if fn_name == "logsum":
            return [ctx.function(torch.log, ctx.function(torch.sum, x, dim=axes, keepdim=keep))]
        if fn_name == "logsumexp":
            return [ctx.function(torch.logsumexp, x, dim=axes, keepdim=keep)]
        raise ConversionFailure(fn_name)
    return conv


for _op, _fn in {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "amax", "ReduceMin": "amin",
                 "ReduceProd": "prod", "ReduceL1": "l1", "ReduceL2": "l2", "ReduceSumSquare": "sumsquare",
                 "ReduceLogSum": "logsum", "ReduceLogSumExp": "logsumexp"}.items():
    register(_op)(_reduce(_fn))


@register("ArgMax", "ArgMin")
def argmax(ctx: NodeContext):
    axis = int(ctx.attr("axis", 0)) % max(1, ctx.rank(0))
    keep = bool(ctx.attr("keepdims", 1))
    largest = ctx.node.op_type == "ArgMax"
    if int(ctx.attr("select_last_index", 0)):
        return [ctx.function(OF.arg_last, ctx.inputs[0], axis, keep, largest)]
    fn = torch.argmax if largest else torch.argmin
    return [ctx.function(fn, ctx.inputs[0], dim=axis, keepdim=keep)]


@register("DepthToSpace")
def depth_to_space(ctx: NodeContext):
    bs = int(ctx.attr("blocksize"))
    if ctx.rank(0) != 4:
        raise ConversionFailure("DepthToSpace on a tensor that is not 4-D is invalid")
    if ctx.attr("mode", "DCR") == "CRD":
        return [ctx.module(nn.PixelShuffle(bs), ctx.inputs[0])]
    return [ctx.function(OF.depth_to_space_dcr, ctx.inputs[0], bs)]


@register("SpaceToDepth")
def space_to_depth(ctx: NodeContext):
    if ctx.rank(0) != 4:
        raise ConversionFailure("SpaceToDepth on a tensor that is not 4-D is invalid")
    bs = int(ctx.attr("blocksize"))
    if ctx.attr("mode", "DCR") == "CRD":
        return [ctx.module(nn.PixelUnshuffle(bs), ctx.inputs[0])]
    return [ctx.function(OF.space_to_depth, ctx.inputs[0], bs)]


@register("GatherElements")
def gather_elements(ctx: NodeContext):
    axis = int(ctx.attr("axis", 0)) % ctx.rank(0)
    return [ctx.function(OF.gather_elements, ctx.tensor(ctx.inputs[0]), ctx.tensor(ctx.inputs[1]), axis)]


@register("GatherND")
def gather_nd(ctx: NodeContext):
    return [ctx.function(OF.gather_nd, ctx.tensor(ctx.inputs[0]), ctx.tensor(ctx.inputs[1]),
                         int(ctx.attr("batch_dims", 0)))]


@register("Size")
def size(ctx: NodeContext):
    shape = ctx.input_shapes[0]
    if shape is not None and all(isinstance(d, int) for d in shape) and (not shape or shape[0] != ctx.builder.static_batch):
        return [np.asarray(int(np.prod(shape)), dtype=np.int64)]
    return [ctx.function(torch.tensor, ctx.method("numel", ctx.inputs[0]), dtype=torch.int64)]


@register("Trilu")
def trilu(ctx: NodeContext):
    k = int(ctx.const(1, "k").reshape(-1)[0]) if ctx.has_input(1) else 0
    fn = torch.triu if int(ctx.attr("upper", 1)) else torch.tril
    return [ctx.function(fn, ctx.tensor(ctx.inputs[0]), k)]


@register("CumSum")
def cumsum(ctx: NodeContext):
    axis = int(ctx.const(1, "axis").reshape(-1)[0]) % ctx.rank(0)
    x = ctx.tensor(ctx.inputs[0])
    reverse, exclusive = int(ctx.attr("reverse", 0)), int(ctx.attr("exclusive", 0))
    if reverse:
        x = ctx.function(torch.flip, x, [axis])
    y = ctx.function(torch.cumsum, x, axis, dtype=ctx.torch_dtype(0))
    if exclusive:
        y = ctx.function(operator.sub, y, x)
    if reverse:
        y = ctx.function(torch.flip, y, [axis])
    return [y]

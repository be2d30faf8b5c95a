"""Float work of ops that do not run on spikes (time-averaged operators, the ANN's own ops),
counted on the aten calls they make, by kind (see :mod:`onnx2snn.verification.energy`).

Rule: matrix products and convolutions by torch's own formulas (:mod:`torch.utils.flop_counter`,
FLOPs / 2 multiply-adds, plus one add per output element for a bias); composite kernels by a
fixed recipe per input element (:data:`RECIPES`: softmax = max compare, subtract, exp, sum,
divide; LayerNorm = mean, centring, square, sum, scale, shift per element and a sqrt + divide
per row); reductions one add (or compare) per input element; element-wise calls by what they
do (:data:`ELEMENTWISE`), per output element; ``bucketize`` (a piecewise-linear fit's segment
lookup) a binary search, ceil(log2(boundaries + 1)) compares per element. Calls that only move or view data (reshape,
permute, copy, expand, ...) cost nothing. An aten call none of the tables name is charged one
multiply per output element and listed in :attr:`OpCounter.unknown` (never a silent zero).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

# composite kernels: operations by kind per input element
RECIPES = {
    "_softmax": {"cmp": 1, "add": 2, "exp": 1, "div": 1}, "_log_softmax": {"cmp": 1, "add": 3, "exp": 2},
    "logsumexp": {"cmp": 1, "add": 2, "exp": 2},
    "gelu": {"mul": 3, "add": 1, "exp": 1}, "silu": {"exp": 1, "add": 1, "div": 1, "mul": 1},
    "sigmoid": {"exp": 1, "add": 1, "div": 1}, "hardswish": {"add": 1, "cmp": 2, "mul": 2},
    "hardsigmoid": {"add": 1, "cmp": 2, "mul": 1}, "mish": {"exp": 3, "add": 3, "div": 1, "mul": 1},
    "softplus": {"exp": 2, "add": 1}, "elu": {"exp": 1, "add": 1, "mul": 1, "cmp": 1},
    "tanh": {"exp": 1, "add": 2, "div": 1}, "erf": {"exp": 1}, "exp": {"exp": 1}, "log": {"exp": 1},
    "rsqrt": {"sqrt": 1, "div": 1}, "sqrt": {"sqrt": 1}, "reciprocal": {"div": 1}, "div": {"div": 1},
    "leaky_relu": {"cmp": 1, "mul": 1}, "prelu": {"cmp": 1, "mul": 1}, "_prelu_kernel": {"cmp": 1, "mul": 1},
    "native_layer_norm": {"add": 4, "mul": 3}, "native_group_norm": {"add": 4, "mul": 3},
    "native_batch_norm": {"add": 1, "mul": 1}, "_native_batch_norm_legit_no_training": {"add": 1, "mul": 1},
}
# ops per row (normalised group) on top of the per-element recipe
PER_ROW = {"native_layer_norm": {"sqrt": 1, "div": 1}, "native_group_norm": {"sqrt": 1, "div": 1}}
ELEMENTWISE = {
    "add": "add", "sub": "add", "rsub": "add", "neg": "add", "abs": "cmp", "mul": "mul", "square": "mul",
    "relu": "cmp", "clamp": "cmp", "clamp_min": "cmp", "clamp_max": "cmp", "hardtanh": "cmp", "maximum": "cmp",
    "minimum": "cmp", "sign": "cmp", "floor": "cmp", "ceil": "cmp", "round": "cmp", "threshold": "cmp",
    "eq": "cmp", "ne": "cmp", "lt": "cmp", "le": "cmp", "gt": "cmp", "ge": "cmp", "pow": "mul", "lerp": "mul",
    "upsample_nearest1d": None, "upsample_nearest2d": None, "upsample_nearest3d": None,
    "upsample_bilinear2d": "mul", "upsample_linear1d": "mul", "upsample_trilinear3d": "mul",
    "max_pool2d_with_indices": "pool", "max_pool1d_with_indices": "pool", "max_pool3d_with_indices": "pool",
    "max_pool2d": "pool", "max_pool1d": "pool", "max_pool3d": "pool",
    "avg_pool2d": "pool", "avg_pool1d": "pool", "avg_pool3d": "pool",
    "_adaptive_avg_pool2d": "reduce", "adaptive_avg_pool2d": "reduce", "_adaptive_avg_pool3d": "reduce",
    "adaptive_max_pool2d": "reduce_cmp",
}
REDUCTIONS = {"sum": "add", "mean": "add", "amax": "cmp", "amin": "cmp", "max": "cmp", "min": "cmp", "var": "add",
              "std": "add", "var_mean": "add", "prod": "mul", "norm": "add", "linalg_vector_norm": "add",
              "argmax": "cmp", "argmin": "cmp", "cumsum": "add"}
FREE = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "clone", "copy_", "copy",
        "detach", "alias", "squeeze", "unsqueeze", "slice", "select", "cat", "stack", "split", "split_with_sizes",
        "unbind", "contiguous", "_to_copy", "empty_like", "zeros_like", "ones_like", "new_empty", "new_zeros",
        "lift_fresh", "index", "gather", "flatten", "unflatten", "as_strided", "repeat", "_reshape_alias",
        "empty", "zeros", "full", "arange", "scalar_tensor", "fill_", "constant_pad_nd", "view_as", "expand_as",
        "broadcast_to", "where", "masked_fill", "narrow", "chunk", "getitem", "sym_size", "sym_numel", "dim",
        "index_select", "flip", "roll", "pixel_shuffle", "pixel_unshuffle", "reflection_pad2d",
        "replication_pad2d", "reflection_pad1d", "replication_pad1d", "new_ones", "full_like", "_unsafe_index",
        "slice_scatter", "select_scatter", "index_put", "masked_fill_", "scatter", "ones", "bernoulli",
        "empty_strided", "new_full", "lift_fresh_copy", "movedim", "alias_copy", "split_copy", "logical_not",
        "logical_and", "logical_or", "isnan", "isinf", "nonzero", "sort", "topk", "_local_scalar_dense",
        "diagonal", "tril", "triu", "tile", "unfold"}
_MM = {"mm", "bmm", "addmm", "baddbmm", "convolution", "_convolution", "conv2d", "conv1d", "conv3d"}


def _numel(x: Any) -> int:
    return int(x.numel()) if isinstance(x, torch.Tensor) else 0


class OpCounter(TorchDispatchMode):
    """Counts operations by kind for every aten call made inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, float] = {}
        self.unknown: set[str] = set()

    def _add(self, kind: str, n: float) -> None:
        if n:
            self.counts[kind] = self.counts.get(kind, 0.0) + float(n)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        raw = packet.__name__
        name = raw.rstrip("_") if raw not in ("copy_", "fill_") else raw
        tensors = [a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)]
        first = tensors[0] if tensors else None
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        n_out = _numel(outs[0]) if outs else 0
        if packet in flop_registry:
            self._add("mac", float(flop_registry[packet](*args, **kwargs, out_val=out)) / 2)
            if name in ("addmm", "baddbmm") or (name in ("convolution", "_convolution") and len(args) > 2
                                                and isinstance(args[2], torch.Tensor)):
                self._add("ac", n_out)  # the bias
            return out
        if name in FREE or raw in FREE:
            return out
        if name == "bucketize":  # a binary search over the boundaries: ceil(log2(n + 1)) compares
            self._add("cmp", math.ceil(math.log2(_numel(args[1]) + 1)) * _numel(first))
            return out
        if name in RECIPES:
            for k, v in RECIPES[name].items():
                self._add(k, v * _numel(first))
            if name in PER_ROW and first is not None:
                shape = args[1] if name == "native_layer_norm" else None
                rows = _numel(first) // max(1, math.prod(shape)) if shape is not None else \
                    (int(args[1]) * int(args[6]) if len(args) > 6 else 1)
                for k, v in PER_ROW[name].items():
                    self._add(k, v * rows)
        elif name in REDUCTIONS:
            self._add(REDUCTIONS[name], _numel(first))
        elif name in ELEMENTWISE:
            kind = ELEMENTWISE[name]
            if kind == "pool":  # one compare / add per window tap of each output
                k = math.prod(args[1]) if len(args) > 1 and isinstance(args[1], (list, tuple)) else 1
                self._add("cmp" if name.startswith("max") else "add", k * n_out)
            elif kind in ("reduce", "reduce_cmp"):
                self._add("cmp" if kind == "reduce_cmp" else "add", _numel(first))
            elif kind is not None:
                self._add(kind, n_out)
        else:
            self.unknown.add(name)
            self._add("mul", n_out)
        return out


def count_ops(fn: Callable, *args, **kwargs) -> dict[str, float]:
    """Operations by kind of one call ``fn(*args, **kwargs)`` by the rule of this module (no grad)."""
    counter = OpCounter()
    with torch.no_grad(), counter:
        fn(*args, **kwargs)
    return counter.counts


def count_flops(fn: Callable, *args, **kwargs) -> float:
    """Float operations of one call (a multiply-add counts 2, as torch counts FLOPs)."""
    c = count_ops(fn, *args, **kwargs)
    return sum(v * (2 if k == "mac" else 1) for k, v in c.items())


__all__ = ["count_ops", "count_flops", "OpCounter", "RECIPES", "ELEMENTWISE"]

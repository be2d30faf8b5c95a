"""Float operations of the ops that do not run on spikes (time-averaged operators, the ANN's
own nonlinear ops), counted on the aten calls they make.

Rule: matrix products and convolutions by torch's own formulas (:mod:`torch.utils.flop_counter`,
2 per multiply-add); a few composite kernels by a fixed cost per element (:data:`PER_ELEMENT`);
reductions one per input element; every other aten call one per output element. Calls that
only move or view data (reshape, permute, copy, expand, ...) cost nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

aten = torch.ops.aten

# composite kernels: FLOPs per input element
PER_ELEMENT = {
    "native_layer_norm": 8, "native_group_norm": 8, "_softmax": 5, "_log_softmax": 5, "gelu": 8, "silu": 4,
    "sigmoid": 4, "hardswish": 4, "hardsigmoid": 3, "mish": 6, "softplus": 3, "elu": 3, "tanh": 4, "erf": 4,
    "exp": 4, "log": 4, "rsqrt": 2, "sqrt": 2, "pow": 4, "reciprocal": 1, "logsumexp": 5,
}
REDUCTIONS = {"sum", "mean", "amax", "amin", "max", "min", "var", "std", "var_mean", "prod", "norm",
              "linalg_vector_norm", "logsumexp", "argmax", "argmin"}
FREE = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "clone", "copy_", "copy",
        "detach", "alias", "squeeze", "unsqueeze", "slice", "select", "cat", "stack", "split", "split_with_sizes",
        "unbind", "contiguous", "_to_copy", "empty_like", "zeros_like", "ones_like", "new_empty", "new_zeros",
        "lift_fresh", "index", "gather", "flatten", "unflatten", "as_strided", "repeat", "_reshape_alias",
        "empty", "zeros", "full", "arange", "scalar_tensor", "fill_", "constant_pad_nd", "view_as", "expand_as",
        "broadcast_to", "where", "masked_fill", "narrow", "chunk", "getitem", "sym_size", "sym_numel", "dim"}


def _numel(x: Any) -> int:
    return int(x.numel()) if isinstance(x, torch.Tensor) else 0


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.flops = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        name = packet.__name__.rstrip("_") if packet.__name__ not in ("copy_", "fill_") else packet.__name__
        if packet in flop_registry:
            self.flops += float(flop_registry[packet](*args, **kwargs, out_val=out))
            return out
        if name in FREE or packet.__name__ in FREE:
            return out
        first = next((a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)), None)
        if name in PER_ELEMENT:
            self.flops += PER_ELEMENT[name] * _numel(first)
        elif name in REDUCTIONS:
            self.flops += _numel(first)
        else:
            outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
            self.flops += float(_numel(outs[0])) if outs else 0.0
        return out


def count_flops(fn: Callable, *args, **kwargs) -> float:
    """FLOPs of one call ``fn(*args, **kwargs)`` by the rule of this module (no grad)."""
    counter = _Counter()
    with torch.no_grad(), counter:
        fn(*args, **kwargs)
    return counter.flops


__all__ = ["count_flops", "PER_ELEMENT"]

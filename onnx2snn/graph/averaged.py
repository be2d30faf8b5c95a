"""Which nonlinear ops of the spiking part run as time-averaged operators, and where spikes
come back before weights.

An op that is neither a neuron nor linear (SiLU, GELU, HardSwish, sigmoid gates, Softmax,
LayerNorm and the other norms, a product of two computed tensors) does not commute with
averaging over time. It can still run exactly in the SNN as a *time-averaged operator*: at
step t it outputs ``y_t = t f(S_t / t) - (t-1) f(S_{t-1} / (t-1))`` (``S_t`` the running
sum of its inputs), so the running average of its output is ``f`` of the running average
of its input at every step (:mod:`onnx2snn.snn.averaged`). Its output is analog; before
it reaches a weight layer a :class:`Reencode` point turns it back into spikes (a signed,
two-sided neuron with per-channel thresholds, calibrated like the others).

This module only decides and marks: :func:`has_averaged_form` says whether a node can run
so, :func:`insert_reencoders` adds the :class:`Reencode` points (identity modules in the
twin: the twin still equals the source) that calibration observes and conversion turns
into neurons.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch import nn

from .. import settings
from . import functional as OF

# functions whose output is not a float tensor of a fixed shape (comparisons, logic, indices,
# integer arithmetic, shapes): an average of them over time means nothing
_NO_AVERAGE = {torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge, torch.logical_and, torch.logical_or,
               torch.logical_xor, torch.logical_not, torch.bitwise_and, torch.bitwise_or, torch.bitwise_xor,
               torch.bitwise_not, torch.isnan, torch.isinf, torch.isneginf, torch.isposinf, torch.argmax,
               torch.argmin, torch.nonzero, torch.zeros_like, torch.ones_like, OF.arg_last, OF.int_div,
               torch.bitwise_left_shift, torch.bitwise_right_shift, operator.eq, operator.lt, operator.gt,
               operator.floordiv, operator.mod, torch.fmod, torch.remainder, torch.topk, torch.sort}
_NO_AVERAGE_METHODS = {"size", "dim", "to", "type", "int", "long", "bool", "item", "tolist"}
_NO_AVERAGE_MODULES: tuple[type, ...] = (nn.Dropout,)


def has_averaged_form(gm: fx.GraphModule, n: fx.Node) -> tuple[bool, str]:
    """(whether node ``n`` can run as a time-averaged operator, why not when it cannot)."""
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        if isinstance(m, _NO_AVERAGE_MODULES):
            return False, f"{type(m).__name__} has no time-averaged form"
        if getattr(m, "return_indices", False):
            return False, f"{type(m).__name__} with an indices output has no time-averaged form"
        return True, ""
    if n.op == "call_method":
        if n.target in _NO_AVERAGE_METHODS:
            return False, f".{n.target}() gives a shape, dtype or Python value, not an activation to average"
        return True, ""
    if n.op == "call_function":
        name = getattr(n.target, "__name__", str(n.target))
        if n.target in _NO_AVERAGE:
            return False, f"{name} gives indices, booleans or integers: no time-averaged form"
        shape = n.meta.get("shape")
        if shape is not None and any(not isinstance(d, int) for d in shape[1:]):
            return False, f"{name} has a data-dependent output shape {list(shape)}: no time-averaged form"
        return True, ""
    return False, "not an op"


class Reencode(nn.Identity):
    """A point where a time-averaged operator's analog output becomes spikes again before a
    weight layer. The identity in the twin (so the twin equals the source); calibration
    observes its input, conversion puts a two-sided signed neuron in its place, firing up to
    ``levels`` spikes per step (its threshold is searched for that neuron). ``one_sided``: a
    signed IF neuron instead (no negative side), for an output that is almost never negative
    (chosen per layer by :mod:`onnx2snn.calibration.reencode_plan`)."""

    def __init__(self, levels: int = 7, one_sided: bool = False):
        super().__init__()
        self.levels = int(levels)
        self.one_sided = bool(one_sided)

    def extra_repr(self) -> str:
        return f"levels={self.levels}" + (", one-sided" if self.one_sided else "")


REENCODE_LEVELS = settings.REENCODE_LEVELS  # spikes per step of a re-encoding neuron (onnx2snn.settings)


REENCODE_PREFIX = "reencode_"


def add_reencode(gm: fx.GraphModule, x: fx.Node, target: str, levels: int, before: "fx.Node | None" = None) -> fx.Node:
    """A :class:`Reencode` module ``target`` reading ``x``, placed after ``x`` (or before the node
    ``before``), with ``x``'s shape and ONNX node; its readers are the caller's to set."""
    gm.add_submodule(target, Reencode(levels))
    with (gm.graph.inserting_before(before) if before is not None else gm.graph.inserting_after(x)):
        new = gm.graph.call_module(target, (x,))
    new.meta.update({k: v for k, v in x.meta.items() if k in ("shape", "onnx_node")})
    return new


def insert_reencoders(gm: fx.GraphModule, averaged: set[str], weight_reach: dict[str, bool],
                      levels: int = REENCODE_LEVELS) -> fx.GraphModule:
    """Add a :class:`Reencode` after every time-averaged node named in ``averaged`` whose
    output reaches a weight layer through weight-free ops (``weight_reach[name]``); its users
    read the re-encoded spikes, except other time-averaged ops, which keep the exact analog
    value. In place (returns ``gm``); a twin that has them already only takes ``levels``."""
    present = [m for m in gm.modules() if isinstance(m, Reencode)]
    for m in present:
        m.levels, m.one_sided = int(levels), False
    if present:
        return gm
    nodes = {n.name: n for n in gm.graph.nodes}
    for name in [n.name for n in gm.graph.nodes if n.name in averaged and weight_reach.get(n.name)]:
        node = nodes[name]
        new = add_reencode(gm, node, REENCODE_PREFIX + name, levels)
        for u in list(node.users):
            if u is not new and u.name not in averaged:
                u.replace_input_with(node, new)
    gm.recompile()
    return gm


PRODUCTS = (torch.matmul, operator.mul, torch.mul)  # bilinear: an increment product when both operands are spikes
OPERAND_PREFIX = "reencode_operand_"


def is_product(n: fx.Node) -> bool:
    """A product of two computed tensors (MatMul or element-wise multiply, no constant operand)."""
    return n.op == "call_function" and n.target in PRODUCTS and len(n.args) >= 2 and \
        all(isinstance(a, fx.Node) and a.op != "get_attr" for a in n.args[:2]) and n.args[0] is not n.args[1]


def insert_operand_reencoders(gm: fx.GraphModule, products: list[str], levels: int = REENCODE_LEVELS) -> fx.GraphModule:
    """Add a :class:`Reencode` before each operand of the product nodes named in ``products``
    (time-averaged products of two computed tensors), so both operands are spikes and the
    product runs as an increment product (:mod:`onnx2snn.snn.products`): its cost follows the
    operands' events instead of a dense float product per step. An approximation (the operands
    are quantised like every re-encoded value), switched by ``spike_products``. In place."""
    nodes = {n.name: n for n in gm.graph.nodes}
    for name in products:
        node = nodes[name]
        for i, a in enumerate(node.args[:2]):
            if a.op == "call_module" and isinstance(gm.get_submodule(a.target), Reencode):
                continue
            new = add_reencode(gm, a, f"{OPERAND_PREFIX}{name}_{i}", levels, before=node)
            node.args = tuple(new if j == i else b for j, b in enumerate(node.args))
    gm.recompile()
    return gm


def has_operand_reencoders(gm: fx.GraphModule) -> bool:
    return any(n.op == "call_module" and str(n.target).startswith(OPERAND_PREFIX) for n in gm.graph.nodes)


def drop_operand_reencoders(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` without the products' operand :class:`Reencode` points (exact products)."""
    import copy

    out = copy.deepcopy(gm)
    for n in [n for n in out.graph.nodes if n.op == "call_module" and str(n.target).startswith(OPERAND_PREFIX)]:
        n.replace_all_uses_with(n.args[0])
        out.graph.erase_node(n)
        out.delete_submodule(n.target)
    out.recompile()
    for k, v in vars(gm).items():  # what convert attached to the twin (onnx_info, ...)
        if k not in vars(out):
            setattr(out, k, v)
    return out


__all__ = ["has_averaged_form", "Reencode", "add_reencode", "insert_reencoders", "REENCODE_PREFIX", "REENCODE_LEVELS", "PRODUCTS",
           "is_product", "insert_operand_reencoders", "OPERAND_PREFIX", "has_operand_reencoders",
           "drop_operand_reencoders"]

"""What each node of the ANN twin is, and where the spiking part of the network ends.

Roles: ``activation`` (with a kind and the neuron it becomes), ``weighted`` (conv,
linear, BN, a MatMul with a constant weight), ``linear`` (weight-free but linear or affine: add, concat, reshape,
average pool, upsample, scaling by constants), ``maxpool`` (has an exact spiking form),
``averaged`` (a nonlinear op inside the spiking part that runs as a time-averaged operator:
SiLU, GELU, Softmax, LayerNorm, products of two computed tensors, ...; see
:mod:`onnx2snn.graph.averaged`), ``nonlinear`` (anything else).

The split:
- *spiking core*: every node that feeds, directly or not, a hidden activation, and
  those activations. It runs for T steps.
- *readout*: linear ops after the last activations (the last conv / linear layer and
  the reshapes after it). They run once on the time-averaged spikes, which equals
  averaging their output over T (membrane-potential readout).
- *post-processing*: what follows the first non-linear op after the readout
  (sigmoid, softmax, box decode). It stays non-spiking and runs once.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import NonSpikingActivationError
from . import functional as OF
from .averaged import REENCODE_LEVELS, Reencode, has_averaged_form, insert_operand_reencoders, insert_reencoders, \
    is_product
from .encoders import ENCODE_DEFAULT, drop_points, encoding_points, insert_encoders, pooled_reencoders

# activation kinds that sit between layers (a neuron takes their place) ...
_HIDDEN = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.GELU,
           nn.ELU, nn.CELU, nn.SELU, nn.Mish, nn.Softplus, nn.Tanh, nn.Softsign, nn.Threshold)
# ... and kinds that usually end a network (post-processing) but are nonlinear inside it
_OUTPUT_LIKE = (nn.Sigmoid, nn.Softmax, nn.LogSoftmax, nn.Hardsigmoid)

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
             nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LINEAR_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                   nn.AdaptiveAvgPool3d, nn.Flatten, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d,
                   nn.ConstantPad3d, nn.PixelShuffle, nn.PixelUnshuffle, nn.Identity, nn.Upsample)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d)
_LINEAR_FUNCTIONS = {operator.add, operator.sub, operator.neg, operator.getitem, torch.add, torch.cat, torch.split,
                     torch.neg, OF.reshape_keep_batch, OF.expand_keep_batch, OF.onnx_expand, OF.flatten_2d,
                     OF.onnx_slice, OF.gather, torch.mean, torch.sum, torch.matmul, OF.index_axes, OF.matmul_axes,
                     OF.pool_sum_div, OF.crop_pad, OF.depth_to_space_dcr, OF.space_to_depth,
                     OF.expand_batch_like, OF.reshape_affine, OF.expand_affine, OF.require_batch}
# functions that select entries of their input at places given by a constant argument (its position)
_SELECTIONS = {OF.gather_nd: 1, OF.gather_elements: 1, torch.where: 0, torch.index_select: 2}
_LINEAR_METHODS = {"reshape", "permute", "squeeze", "unsqueeze", "select", "t", "flatten", "view",
                   "transpose", "repeat", "expand", "contiguous"}


_PRODUCT = ("product of two computed tensors (a gate such as squeeze-excitation, or attention) has no "
            "rate-exact spiking form")


FORMS = {
    "static": "before the first neuron: computed once (direct encoding), MACs / FLOPs once",
    "neuron": "a spiking neuron",
    "spike-driven": "reads spike events (weight layers: one accumulate per event and synapse)",
    "time-averaged": "a time-averaged operator: float work at every step",
    "analog per step": "a weight layer reading an analog value at every step: MACs per step",
    "readout": "runs once on the time-averaged spikes (membrane-potential readout)",
    "post-processing": "runs once on the averaged outputs, non-spiking",
}


@dataclass
class NodeInfo:
    name: str
    op: str            # what the node computes, e.g. "Conv2d", "add", "ReLU"
    role: str          # activation | weighted | linear | maxpool | nonlinear | input | output | constant
    kind: str = ""     # activation kind, e.g. "LeakyReLU(0.1)"
    neuron: str = ""   # what it becomes in the SNN ("" when not an activation)
    reason: str = ""   # why it cannot be spiking, when that is so
    part: str = ""     # core | readout | post | input | output | constant
    form: str = ""     # how it runs in the SNN: see FORMS
    shape: tuple | None = None
    params: int = 0
    onnx_node: str = ""


@dataclass
class GraphAnalysis:
    nodes: list[NodeInfo]
    non_convertible: dict[str, list[str]] = field(default_factory=dict)  # kind -> node names

    def by_name(self) -> dict[str, NodeInfo]:
        return {n.name: n for n in self.nodes}

    def activations(self) -> list[NodeInfo]:
        return [n for n in self.nodes if n.role == "activation"]

    def part(self, part: str) -> list[NodeInfo]:
        return [n for n in self.nodes if n.part == part]

    def blockers(self) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str]]:
        """Everything that blocks spiking conversion, split in two: activation kinds with no
        spiking equivalent (replace_activations can swap them), and other ops with no spiking
        form (it cannot); each as kind -> node names, and the reason per kind."""
        info = self.by_name()
        acts: dict[str, list[str]] = {}
        ops: dict[str, list[str]] = {}
        reasons: dict[str, str] = {}
        for kind, names in self.non_convertible.items():
            target = acts if any(info[n].role == "activation" for n in names) else ops
            target[kind] = list(names)
            reasons[kind] = info[names[0]].reason
        return acts, ops, reasons

    def check_spiking(self) -> None:
        """Raise one :class:`NonSpikingActivationError` naming every blocker, if any."""
        acts, ops, reasons = self.blockers()
        if acts or ops:
            raise NonSpikingActivationError(acts, ops, {k: reasons[k] for k in ops})


def activation_kind(m: nn.Module) -> tuple[str, str, str]:
    """(kind, neuron it becomes, reason it cannot) for an activation module."""
    if isinstance(m, Reencode):
        return "re-encode", "signed IF neuron (one-sided)" if m.one_sided else "two-sided signed IF neuron", ""
    if isinstance(m, nn.ReLU):
        return "ReLU", "IF neuron", ""
    if isinstance(m, nn.LeakyReLU):
        a = m.negative_slope
        return f"LeakyReLU({a:g})", f"signed IBT neuron (alpha={a:g})", ""
    if isinstance(m, nn.PReLU):
        return "PReLU", "signed IBT neuron (per-channel alpha)", ""
    if isinstance(m, nn.ReLU6):
        return "ReLU6", "IF neuron (theta <= 6)", ""
    if isinstance(m, nn.Hardtanh):
        if m.min_val == 0.0:
            return f"Clip(0, {m.max_val:g})", f"IF neuron (theta <= {m.max_val:g})", ""
        return f"Clip({m.min_val:g}, {m.max_val:g})", "", "clip with a negative lower bound has no spiking form"
    name = {nn.SiLU: "SiLU", nn.Hardswish: "HardSwish", nn.GELU: "GELU", nn.Tanh: "Tanh", nn.ELU: "ELU",
            nn.Sigmoid: "Sigmoid", nn.Softmax: "Softmax", nn.Mish: "Mish", nn.Hardsigmoid: "HardSigmoid",
            nn.LogSoftmax: "LogSoftmax", nn.Softplus: "Softplus", nn.SELU: "SELU", nn.CELU: "CELU"}.get(type(m),
                                                                                                  type(m).__name__)
    return name, "", f"{name} has no spiking equivalent (replace_activations={{'{name}': 'ReLU'}} + fine-tune)"


# run-time sources of values that depend on the input's shape only, never on its data
_SHAPE_SOURCES = {OF.shape_of, torch._shape_as_tensor}


def _shape_only(nodes: list[fx.Node]) -> set[fx.Node]:
    """Nodes computed from tensor shapes (and constants) only: index arithmetic over the batch
    size. Data-independent, they count as constants."""
    found: set[fx.Node] = set()
    for n in nodes:
        if n.op not in ("call_function", "call_method"):
            continue
        if n.op == "call_function" and n.target in _SHAPE_SOURCES or \
                n.all_input_nodes and all(a in found or a.op == "get_attr" for a in n.all_input_nodes) \
                and any(a in found for a in n.all_input_nodes):
            found.add(n)
    return found


def _is_const(a, shape_only: set = frozenset()) -> bool:
    return not isinstance(a, fx.Node) or a.op == "get_attr" or a in shape_only


def _classify(gm: fx.GraphModule, n: fx.Node, shape_only: set = frozenset()) -> NodeInfo:
    info = NodeInfo(name=n.name, op=str(n.target), role="nonlinear", shape=n.meta.get("shape"),
                    onnx_node=n.meta.get("onnx_node", ""))
    if n.op == "placeholder":
        info.role = info.part = "input"
        return info
    if n.op == "output":
        info.role = info.part = "output"
        return info
    if n.op == "get_attr" or n in shape_only:
        info.role = info.part = "constant"
        if n.op != "get_attr":
            info.op = getattr(n.target, "__name__", str(n.target))
        return info
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        info.op = type(m).__name__
        info.params = sum(p.numel() for p in m.parameters())
        if isinstance(m, _HIDDEN + _OUTPUT_LIKE + (Reencode,)):
            info.role = "activation"
            info.kind, info.neuron, info.reason = activation_kind(m)
        elif isinstance(m, _WEIGHTED):
            info.role = "weighted"
        elif isinstance(m, _LINEAR_MODULES):
            info.role = "linear"
        elif isinstance(m, _MAXPOOL) and not getattr(m, "return_indices", False):
            info.role = "maxpool"
        return info
    target = n.target
    info.op = getattr(target, "__name__", str(target))
    if n.op == "call_method":
        info.role = "linear" if target in _LINEAR_METHODS else "nonlinear"
        return info
    if target in _SELECTIONS and len(n.args) > 1 and _is_const(n.args[_SELECTIONS[target]], shape_only):
        info.role = "linear"  # picking entries at fixed places (adaptive pooling, as dynamo writes it)
        return info
    if target in _LINEAR_FUNCTIONS:
        if target is torch.matmul and not any(_is_const(a, shape_only) for a in n.args[:2]):
            info.reason = _PRODUCT
            return info
        info.role = "weighted" if is_weight_matmul(n) else "linear"
    elif target in (operator.mul, operator.truediv, torch.mul):
        if any(_is_const(a, shape_only) for a in n.args[:2]) and \
                not (target is operator.truediv and not _is_const(n.args[1], shape_only)):
            info.role = "linear"
        else:
            info.reason = _PRODUCT
    elif target is F.interpolate:
        mode = n.kwargs.get("mode", "nearest")
        info.role = "linear" if mode in ("nearest", "bilinear", "linear", "trilinear", "nearest-exact") else "nonlinear"
    elif target is OF.pad_then:
        value = n.args[2] if len(n.args) > 2 else 0.0
        info.role = "maxpool" if value == float("-inf") else "linear"
    else:
        info.reason = f"{info.op} has no spiking form"
    return info


def is_weight_matmul(n: fx.Node) -> bool:
    """A MatMul with a constant weight tensor on one side (``x @ W`` with an N-D ``W``, or
    ``W @ x``): a weight layer like a Linear (the importer makes 2-D ``x @ W`` one already)."""
    if n.op != "call_function" or n.target is not torch.matmul or len(n.args) < 2:
        return False
    consts = [isinstance(a, fx.Node) and a.op == "get_attr" for a in n.args[:2]]
    return sum(consts) == 1 and all(isinstance(a, fx.Node) for a in n.args[:2])


def analyze(gm: fx.GraphModule) -> GraphAnalysis:
    """Classify every node of a twin and split it into core / readout / post parts."""
    nodes = list(gm.graph.nodes)
    shape_only = _shape_only(nodes)
    infos = {n: _classify(gm, n, shape_only) for n in nodes}
    hidden = {n for n in nodes if infos[n].role == "activation" and (
        isinstance(gm.get_submodule(n.target), _HIDDEN + (Reencode,)) or _feeds_hidden(n, gm, infos))}

    # core: hidden activations and everything upstream of them
    core: set[fx.Node] = set()
    stack = list(hidden)
    while stack:
        n = stack.pop()
        if n in core or infos[n].role in ("input", "constant"):
            continue
        core.add(n)
        stack.extend(a for a in n.all_input_nodes)
    for n in reversed(nodes):  # index arithmetic the core reads runs with it (before its first step)
        if n in shape_only and any(u in core for u in n.users):
            core.add(n)

    readout: set[fx.Node] = set()
    for n in nodes:  # topological order
        info = infos[n]
        if n in core or info.role in ("input", "constant", "output"):
            continue
        srcs = [a for a in n.all_input_nodes if infos[a].role not in ("constant",)]
        from_spiking = srcs and all(a in core or a in readout or infos[a].role == "input" for a in srcs) \
            and any(a in core or a in readout for a in srcs)
        if from_spiking and info.role in ("weighted", "linear", "maxpool"):
            readout.add(n)
    for n in nodes:
        info = infos[n]
        if n in shape_only and n in core:
            info.part = "core"
        if info.role in ("input", "constant", "output"):
            continue
        info.part = "core" if n in core else "readout" if n in readout else "post"

    non_convertible: dict[str, list[str]] = {}
    for n in core:
        info = infos[n]
        if (info.role == "activation" and not info.neuron) or info.role == "nonlinear":
            ok, why = has_averaged_form(gm, n)
            if ok:
                info.role, info.reason = "averaged", ""
                info.neuron = f"time-averaged {info.kind or info.op}"
                continue
            info.reason = why or info.reason or f"{info.op} has no spiking form"
            non_convertible.setdefault(info.kind or info.op, []).append(n.name)
    for v in non_convertible.values():
        v.sort(key=lambda name: [i.name for i in infos.values()].index(name))
    _forms(nodes, infos, core)
    return GraphAnalysis(nodes=[infos[n] for n in nodes], non_convertible=non_convertible)


def _forms(nodes: list[fx.Node], infos: dict, core: set) -> None:
    """Set each node's ``form`` (see :data:`FORMS`), assuming direct encoding: core nodes with
    no neuron upstream are static; a weight layer of the core reads spikes unless a path
    through weight-free ops reaches an analog value computed at every step."""
    dynamic: set[fx.Node] = set()
    for n in nodes:
        info = infos[n]
        if n in core and (info.role == "activation" or any(a in dynamic for a in n.all_input_nodes)):
            dynamic.add(n)
    for n in nodes:
        info = infos[n]
        if info.part in ("input", "constant", "output"):
            info.form = info.part
        elif info.part == "post":
            info.form = "post-processing"
        elif info.part == "readout":
            info.form = "readout"
        elif n not in dynamic:
            info.form = "static"
        elif info.role == "activation":
            info.form = "neuron"
        elif info.role == "averaged":
            info.form = "time-averaged"
        elif info.role == "weighted" and reads_analog(n, infos, dynamic):
            info.form = "analog per step"
        else:
            info.form = "spike-driven"


def reads_analog(n: fx.Node, infos: dict, dynamic: set) -> bool:
    """Whether a weight layer's input, traced back through weight-free ops, reaches a value
    computed at every step that is not spikes (a weight layer's or a time-averaged op's output)."""
    seen, stack = set(), list(n.all_input_nodes)
    while stack:
        a = stack.pop()
        if a in seen or a not in dynamic:
            continue
        seen.add(a)
        role = infos[a].role
        if role in ("weighted", "averaged", "nonlinear"):
            return True
        if role in ("linear", "maxpool"):
            stack.extend(a.all_input_nodes)
    return False


def weight_reach(gm: fx.GraphModule, analysis: "GraphAnalysis") -> dict[str, bool]:
    """For every time-averaged node: whether its output reaches a weight layer through
    weight-free ops (then it needs re-encoding into spikes)."""
    info = analysis.by_name()
    nodes = {n.name: n for n in gm.graph.nodes}
    out = {}
    for a in analysis.nodes:
        if a.role != "averaged":
            continue
        found, seen, stack = False, set(), list(nodes[a.name].users)
        while stack and not found:
            u = stack.pop()
            if u in seen or u.op == "output":
                continue
            seen.add(u)
            role = info[u.name].role
            found = role == "weighted"
            if role in ("linear", "maxpool"):
                stack.extend(u.users)
        out[a.name] = found
    return out


def prepare_averaged(gm: fx.GraphModule, levels: int = REENCODE_LEVELS, encode_analog: str = ENCODE_DEFAULT,
                     spike_products: bool = False) -> fx.GraphModule:
    """The twin with a :class:`Reencode` point (firing up to ``levels`` spikes per step) after
    every time-averaged op whose output reaches a weight layer; with ``spike_products``, also
    before both operands of every time-averaged product of two computed tensors (they then run
    as increment products, :mod:`onnx2snn.snn.products`); with ``encode_analog`` ("auto") one
    before the weight layers that would read an analog value at every step, a re-encoder before
    a global pool moved after it (:mod:`onnx2snn.graph.encoders`). In place; a twin that has
    them already only takes ``levels``."""
    analysis = analyze(gm)
    averaged = {a.name for a in analysis.nodes if a.role == "averaged"}
    fresh = not any(isinstance(m, Reencode) for m in gm.modules())
    if averaged:
        insert_reencoders(gm, averaged, weight_reach(gm, analysis), levels)
        if spike_products and fresh:
            products = [n.name for n in gm.graph.nodes if n.name in averaged and is_product(n)]
            insert_operand_reencoders(gm, products, levels)
    else:
        for m in gm.modules():
            if isinstance(m, Reencode):
                m.levels = int(levels)
    if encode_analog != "off":  # a re-encoder before a global pool: encoded after it instead
        drop_points(gm, pooled_reencoders(gm, analyze(gm)))
    points = encoding_points(gm, analyze(gm), encode_analog)
    return insert_encoders(gm, points, levels) if points else gm


def _feeds_hidden(n: fx.Node, gm: fx.GraphModule, infos) -> bool:
    """Whether a hidden-kind activation lies downstream of ``n``: then an output-like
    activation (a sigmoid gate, a softmax) is inside the network, not after it."""
    seen, stack = set(), list(n.users)
    while stack:
        u = stack.pop()
        if u in seen:
            continue
        seen.add(u)
        if u.op == "call_module" and isinstance(gm.get_submodule(u.target), _HIDDEN):
            return True
        stack.extend(u.users)
    return False

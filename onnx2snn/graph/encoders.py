"""Spike encoders before weight layers that would read an analog value at every step.

Inside the spiking core a weight layer's output is analog (a weighted sum of spikes, plus a
bias); when, through weight-free ops only (a residual add, a reshape, a pool), it reaches
another weight layer, that layer does dense MACs at every step: MobileNetV3's 1x1 expand
convs after a linear bottleneck, ConvNeXt's depthwise convs on the residual stream. An
encoding point there (a :class:`~onnx2snn.graph.averaged.Reencode`: identity in the twin,
a two-sided signed multi-level neuron in the SNN, thresholds per channel calibrated like the
others) turns the value into spikes for the weight layers only; other readers (the residual
add's skip path) keep the exact analog value they read before. A re-encoder after a
time-averaged op that only a global average pool reads moves after the pool
(:func:`pooled_reencoders`): one encoder per pooled value instead of one per pixel.

Whether it pays (costs of :mod:`onnx2snn.verification.energy`): per input element and step a
MAC per synapse, ``F x 4.6`` pJ in FP32 (``F`` synapses per input element), against a neuron
update and one accumulate per event and synapse, ``2.7 + e x F x 0.9`` pJ. The encoders fire
``e`` of about one event per element and step (digits_mobilenetv3: 1.0, from verify's counts),
so it pays from ``F = 1`` (INT8: ``0.3 F`` against ``0.3 + 0.1 e F``, from ``F = 2``);
``"auto"`` encodes where ``F >= MIN_FANOUT`` (2), ``"off"`` nowhere (as before issue #32).
Quality: measured on the zoo (issue #32's report); the encoders' error falls with T like
every neuron's.
"""

from __future__ import annotations

import math

import torch.fx as fx
from torch import nn

from .. import settings
from .averaged import Reencode, add_reencode

ENCODE_ANALOG = settings.ENCODE_ANALOG
ENCODE_DEFAULT = settings.CONVERT.defaults.encode_analog
ENCODE_PREFIX = "encode_"
MIN_FANOUT = 2.0  # synapses per input element from which "auto" encodes (see the module's docstring)


def fanout(gm: fx.GraphModule, n: fx.Node) -> float:
    """Synapses per element of a weight node's data input (from its shapes, no data): a conv's
    output channels per group x kernel taps / stride taps, a Linear's outputs, a MatMul's other
    weight dimension, 1 for a norm."""
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        if isinstance(m, nn.modules.conv._ConvNd):
            k, s = math.prod(m.kernel_size), math.prod(m.stride)
            return float(m.out_channels // m.groups * k) / (1 if m.transposed else s)
        if isinstance(m, nn.Linear):
            return float(m.out_features)
        return 1.0
    w = next((a for a in n.args[:2] if isinstance(a, fx.Node) and a.op == "get_attr"), None)
    shape = w.meta.get("shape") if w is not None else None
    if shape is None and w is not None:
        obj = gm
        for part in w.target.split("."):
            obj = getattr(obj, part)
        shape = tuple(obj.shape)
    if not shape:
        return 1.0
    return float(shape[-1] if n.args[1] is w else shape[-2] if len(shape) > 1 else 1)


def data_input(n: fx.Node) -> fx.Node:
    """The computed (non-weight) input of a weight node."""
    if n.op == "call_module":
        return n.args[0]
    return next(a for a in n.args[:2] if isinstance(a, fx.Node) and a.op != "get_attr")


_STILL = ("static", "input", "constant", "output", "post-processing", "readout")  # forms computed once


def _analog(n: fx.Node, info: dict) -> bool:
    """Whether node ``n`` of the core carries an analog value at every step (a weight layer's,
    a time-averaged op's or an element-wise op's output, or routing of one), not spikes."""
    i = info[n.name]
    if i.form in _STILL:
        return False
    if i.role in ("weighted", "averaged", "nonlinear"):
        return True
    if i.role in ("linear", "maxpool"):
        return any(_analog(a, info) for a in n.all_input_nodes)
    return False


_ROUTING = ("cat",)  # weight-free ops that only place their inputs side by side


def encoding_points(gm: fx.GraphModule, analysis, mode: str = "auto") -> dict[str, list[str]]:
    """Node to encode -> the nodes to read it encoded, for ``mode`` (see :data:`ENCODE_ANALOG`):
    the data input of each weight layer of form ``analog per step``, read encoded by those
    layers, when their total fan-out reaches :data:`MIN_FANOUT`. A concatenation that only
    those layers read is encoded input by input, its analog inputs only (its spike inputs
    stay as they are)."""
    if mode == "off":
        return {}
    nodes = {n.name: n for n in gm.graph.nodes}
    info = analysis.by_name()
    readers: dict[str, list[str]] = {}
    fans: dict[str, float] = {}
    for a in analysis.nodes:
        if a.form != "analog per step":
            continue
        w = nodes[a.name]
        x = data_input(w)
        readers.setdefault(x.name, []).append(w.name)
        fans[x.name] = fans.get(x.name, 0.0) + fanout(gm, w)
    points: dict[str, list[str]] = {}
    for x, ws in readers.items():
        if fans[x] < MIN_FANOUT:
            continue
        node = nodes[x]
        if info[x].op in _ROUTING and {u.name for u in node.users} == set(ws):
            for a in dict.fromkeys(node.all_input_nodes):
                if _analog(a, info):
                    points.setdefault(a.name, []).append(x)
        else:
            points.setdefault(x, []).extend(ws)
    return points


_POOLS = ("AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
          "mean", "pool_sum_div")
MIN_SHRINK = 2  # elements in per element out from which a pool is worth encoding after rather than before


def pooled_reencoders(gm: fx.GraphModule, analysis) -> list[str]:
    """Re-encoding points after time-averaged ops that only average pools read, each shrinking
    the tensor at least :data:`MIN_SHRINK`-fold (a squeeze-excitation or a classifier's global
    pool): encoded after the pool instead (by :func:`encoding_points`, at the weight layer),
    ``k`` times fewer neurons fire about ``k`` times fewer events into the same synapses, for an
    add per pooled element and step."""
    info = analysis.by_name()
    out = []
    for n in gm.graph.nodes:
        if n.op != "call_module" or n.name.startswith(ENCODE_PREFIX) or \
                not isinstance(gm.get_submodule(n.target), Reencode) or not n.users:
            continue
        size = n.meta.get("shape")
        if all(info[u.name].op in _POOLS and u.meta.get("shape") and size and
               math.prod(size) >= MIN_SHRINK * math.prod(u.meta["shape"]) for u in n.users):
            out.append(n.name)
    return out


def drop_points(gm: fx.GraphModule, names: list[str]) -> fx.GraphModule:
    """Remove the named encoding points (their readers read the value itself). In place."""
    for n in [n for n in gm.graph.nodes if n.name in set(names)]:
        n.replace_all_uses_with(n.args[0])
        gm.graph.erase_node(n)
        gm.delete_submodule(n.target)
    gm.recompile()
    return gm


def insert_encoders(gm: fx.GraphModule, points: dict[str, list[str]], levels: int) -> fx.GraphModule:
    """Add one :class:`Reencode` (``levels`` spikes per step) per input of ``points`` and make
    the listed weight nodes read it; every other reader keeps the analog value. In place."""
    nodes = {n.name: n for n in gm.graph.nodes}
    for x_name, readers in points.items():
        x = nodes[x_name]
        new = add_reencode(gm, x, ENCODE_PREFIX + x_name, levels)
        for w in readers:
            nodes[w].replace_input_with(x, new)
    gm.recompile()
    return gm


__all__ = ["ENCODE_ANALOG", "ENCODE_DEFAULT", "ENCODE_PREFIX", "MIN_FANOUT", "MIN_SHRINK", "fanout", "data_input",
           "encoding_points", "insert_encoders", "pooled_reencoders", "drop_points"]

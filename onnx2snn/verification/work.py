"""The work of every node of the ANN twin for one sample, by kind, and how the SNN repeats it.

:func:`node_work` runs the twin once on one sample and records, per node, its operations by
kind (:mod:`onnx2snn.verification.flops`; a weight layer: one MAC per synapse, padding taps
excluded, plus one bias add per output element), its output shape and the sizes of its
computed inputs. :func:`compose` turns them, with the events the monitor measured, into the
SNN's and the ANN's counts by the rules of :mod:`onnx2snn.verification.energy`:

=================  ======================  ==========================================
node (its form)     ANN (once)              SNN
=================  ======================  ==========================================
static prefix       its work                its work, once (direct encoding)
neuron              the activation's work   one ``neuron`` update per neuron per step
spike-driven layer  MACs (+ bias)           one ``ac`` per event per synapse (+ bias per step)
analog-per-step     MACs (+ bias)           MACs (+ bias) every step
readout on spikes   MACs (+ bias)           ``ac`` per event per synapse, bias once
readout on analog   MACs (+ bias)           one ``add`` per input element per step + MACs once
time-averaged op    its work                its work per step + compensation (add + mul per
                                            averaged input and output element) per step
                                            after the first (at t = 1 the output is f(x_1))
increment product   its work (MACs)         per operand event: one ac per partner element it
                                            meets + one for its running sum; per step after
                                            the first: an add + mul per output element
spiking max-pool    its compares            compares + running sum + difference per step
weight-free op      its work (adds, ...)    on events: routing (free); on analog: its work per step
post-processing     weight layers' MACs     the same, once (other post ops: in neither)
=================  ======================  ==========================================
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .energy import add_counts, check_counts
from .events import fanout
from .flops import OpCounter


def weight_fn(gm: fx.GraphModule, n: fx.Node):
    """(data input index, the layer as a function of its data input with all-ones weights and
    no bias) for a weight node: a weight module, or a MatMul with a constant weight."""
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm,)):
            return 0, lambda x: x
        ones = copy.copy(m)
        ones._parameters = {"weight": torch.ones_like(m.weight), "bias": None}
        ones._forward_hooks, ones._forward_pre_hooks = {}, {}
        return 0, ones.forward
    i = 1 if isinstance(n.args[0], fx.Node) and n.args[0].op == "get_attr" else 0
    w = _attr(gm, n.args[1 - i].target)
    ones = torch.ones_like(w)
    return i, (lambda x: torch.matmul(ones, x)) if i == 1 else (lambda x: torch.matmul(x, ones))


def _attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def has_bias(gm: fx.GraphModule, n: fx.Node) -> bool:
    return n.op == "call_module" and getattr(gm.get_submodule(n.target), "bias", None) is not None


class NodeWork:
    """Per node of the twin (for one sample): ``counts`` kind -> operations, ``out_numel``,
    ``in_numels`` (its computed inputs, in ``all_input_nodes`` order), and for weight nodes
    ``fan`` (synapses per element of the data input, in its shape at batch 1) and ``in_shape``."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, float]] = {}
        self.out_numel: dict[str, int] = {}
        self.in_numels: dict[str, list[int]] = {}
        self.fan: dict[str, torch.Tensor] = {}
        self.in_shape: dict[str, tuple] = {}
        self.unknown: set[str] = set()
        self.operand_fan: dict[str, list[torch.Tensor]] = {}  # increment products: per operand, per element
        # nodes running an approximation (a piecewise-linear SiLU / GELU): the counts of the exact
        # op, which the ANN runs
        self.exact: dict[str, dict[str, float]] = {}


def product_fans(fn, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """Per element of each operand of a bilinear ``fn(a, b)`` (one sample): the accumulates one of
    its events costs in an increment product, its partner elements (the output elements it
    reaches) plus one for the operand's own running sum."""
    ones_a, ones_b = torch.ones(a.shape), torch.ones(b.shape)
    return [fanout(lambda x: fn(x, ones_b), a.shape) + 1.0, fanout(lambda y: fn(ones_a, y), b.shape) + 1.0]


def node_work(gm: fx.GraphModule, inputs: list[torch.Tensor], weight_nodes: set[str],
              products: "set[str]" = frozenset()) -> NodeWork:
    """Run ``gm`` on ``inputs`` (one sample) and measure every node (see :class:`NodeWork`);
    for the ``products`` (increment products), each operand's per-event fan-out too."""
    res = NodeWork()

    class Measuring(fx.Interpreter):
        def run_node(self, n):
            if n.op in ("placeholder", "get_attr", "output"):
                return super().run_node(n)
            vals = [self.env[a] for a in n.all_input_nodes]
            res.in_numels[n.name] = [int(v.numel()) if isinstance(v, torch.Tensor) and a.op != "get_attr" else 0
                                     for a, v in zip(n.all_input_nodes, vals)]
            counter = OpCounter()
            with counter:
                y = super().run_node(n)
            res.unknown |= counter.unknown
            res.out_numel[n.name] = int(y.numel()) if isinstance(y, torch.Tensor) else 0
            if n.name in weight_nodes:
                i, fn = weight_fn(gm, n)
                x = self.env[n.args[i]]
                res.in_shape[n.name] = tuple(x.shape)
                res.fan[n.name] = fanout(fn, x.shape)
                c = {"mac": float(res.fan[n.name].sum())}
                if has_bias(gm, n):
                    c["ac"] = float(res.out_numel[n.name])
                res.counts[n.name] = c
            else:
                if n.name in products:
                    a, b = (self.env[x] for x in n.args[:2])
                    res.operand_fan[n.name] = product_fans(lambda x, y: n.target(x, y), a, b)
                res.counts[n.name] = dict(counter.counts)
                exact = getattr(gm.get_submodule(n.target), "exact", None) if n.op == "call_module" else None
                if exact is not None:
                    original = OpCounter()
                    with original:
                        exact(*vals)
                    res.exact[n.name] = dict(original.counts)
            return y

    with torch.no_grad():
        Measuring(gm).run(*inputs)
    for name, c in list(res.counts.items()) + list(res.exact.items()):
        check_counts(c, f"node {name}")
    return res


def compensation(work: NodeWork, name: str, kinds: list[str] | None, sum_domain: "int | None" = None
                 ) -> dict[str, float]:
    """Per step, the running sums / averages and the differences of a time-averaged op: an add
    and a multiply per element of each averaged input and per output element. ``sum_domain``
    (an op run on the sums, a piecewise-linear fit: no averaging, no scaling by t): an add per
    element (running sum, difference) and that many multiplies per step (its knots and
    intercepts scaled by t)."""
    numels = work.in_numels.get(name, [])
    if kinds is not None and len(kinds) == len(numels):
        numels = [k for k, d in zip(numels, kinds) if d == "dynamic"]
    n = float(sum(numels) + work.out_numel.get(name, 0))
    return {"add": n, "mul": n} if sum_domain is None else {"add": n, "mul": float(sum_domain)}


def scaled(counts: dict[str, float], s: float) -> dict[str, float]:
    return {k: v * s for k, v in counts.items()}


def total(parts: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in parts:
        add_counts(out, p)
    return out


__all__ = ["NodeWork", "node_work", "product_fans", "weight_fn", "has_bias", "compensation", "scaled", "total"]

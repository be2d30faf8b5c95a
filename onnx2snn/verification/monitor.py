"""Per-layer measurements of a spiking run, taken with forward hooks (no engine changes).

For every neuron (named by its module target) at every checkpoint T:

- relative error ``||mean_{t<=T} s_t - r|| / ||a||`` over the data set, where ``s_t`` are
  its spikes, ``a`` the output of the activation it replaced, taken from the ANN twin
  (``snn.ann``) run on the same batch, and ``r`` what the neuron is built to compute: its
  ideal rate function, ``a`` clipped to the range the neuron can represent (``levels *
  theta`` above; 0, ``-theta`` or ``-levels * theta`` below). It is the spiking error and
  falls with T; the clipping itself is reported apart, as ``clip_error`` = ``||r - a|| /
  ||a||`` (a conversion choice, the same at every T);
- firing rate: spikes (either sign; a multi-level output ``k * theta`` counts k) per
  neuron per step.

For every weight layer (conv, linear, batch norm, a MatMul with a constant weight) and every
other node, the work of one inference by kind, ANN and SNN by the same rules
(:mod:`onnx2snn.verification.energy`, :mod:`onnx2snn.verification.work`). Events are counted
where they are consumed: the neurons' event counts (a k-spike is k events, popcount(k) when
binary-weighted) are carried through the weight-free ops to each weight layer's input by
:class:`onnx2snn.verification.events.EventFlow`, once per chunk of time, on the core's own graph
(and on the readout's per-step input, recomputed from the core's per-step outputs); time x batch
is taken apart on each tensor's own batch axis (its layout, recorded by the engine).
"""

from __future__ import annotations

import copy
import math
import warnings
from contextlib import contextmanager
from typing import Sequence

import torch
import torch.fx as fx
from torch import nn

from ..graph.analysis import analyze
from ..snn.network import batch_layout
from ..graph.layout import per_channel as _per_channel
from ..snn.neurons import time_major
from ..snn.partition import extract
from ..snn.products import IncrementProduct
from .energy import FP32
from .events import EventFlow, fanout
from .tally import METHOD, compose
from .work import node_work

ENERGY_AC_PJ = FP32["ac"]    # one 32-bit float accumulate, 45 nm (Horowitz, ISSCC 2014)
ENERGY_MAC_PJ = FP32["mac"]  # one 32-bit float multiply-accumulate, 45 nm


def fanout_map(module: nn.Module, sample_shape: Sequence[int]) -> torch.Tensor:
    """Synapses driven by each input element of ``module`` for one sample (float64, flat)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return torch.ones(math.prod(sample_shape), dtype=torch.float64)
    m = copy.copy(module)
    m._parameters = {"weight": torch.ones(module.weight.shape), "bias": None}
    m._forward_hooks, m._forward_pre_hooks = {}, {}
    return fanout(m.forward, (1,) + tuple(sample_shape)).reshape(-1)


def _spike_counts(s: torch.Tensor, theta: torch.Tensor, binary: bool = False, axis: "int | None" = 1) -> torch.Tensor:
    """Spikes per element of a multi-level output (k * theta per step -> k events; a neuron
    with binary-weighted thresholds sends k as its binary digits: popcount(k) events);
    ``theta`` varies along channel ``axis`` of ``s``."""
    k = (s.abs() / _per_channel(theta, s, axis).to(s)).round()
    if not binary:
        return k
    k = k.long()
    ones = torch.zeros_like(k)
    while bool(k.any()):
        ones += k & 1
        k = k >> 1
    return ones.to(s.dtype)


def _events(s: torch.Tensor, neuron) -> torch.Tensor:
    """Events per element of a neuron's output ``s``."""
    if getattr(neuron, "levels", 1) == 1:
        return s != 0
    return _spike_counts(s, neuron.theta, getattr(neuron, "binary_events", False), getattr(neuron, "channel_axis", 1))


def _per_sample(x: torch.Tensor, T: int, layout: "tuple[int, int] | None") -> torch.Tensor:
    """``x`` (time x batch on its batch axis, see :func:`onnx2snn.snn.neurons.time_major`) as
    ``[T, B, elements per sample]``, whatever its layout and strides."""
    layout = layout or (0, 1)
    xs = time_major(x, T, layout)
    outer = layout[1]
    if outer > 1:
        xs = xs.reshape((T, outer, xs.shape[1] // outer) + tuple(xs.shape[2:])).transpose(1, 2)
    return xs.reshape(T, xs.shape[1], -1)


def _keys(gm: fx.GraphModule) -> set[str]:
    """Module targets and the names of function nodes of a graph (how layers are keyed)."""
    return {n.target if n.op == "call_module" else n.name for n in gm.graph.nodes
            if n.op in ("call_module", "call_function", "call_method")}


class LayerMonitor:
    """Hooks on the twin and on the SNN; call :meth:`batch` around each batch's runs."""

    def __init__(self, snn, checkpoints: Sequence[int]):
        self.snn = snn
        self.checkpoints = sorted(set(int(t) for t in checkpoints))
        self.T = self.checkpoints[-1]
        self.neurons = snn.neurons()
        ann = snn.ann
        self.analysis = analyze(ann)
        nodes = {n.name: n for n in ann.graph.nodes}
        in_prefix, in_core = _keys(snn.prefix), _keys(snn.core)
        self.weighted: dict[str, str] = {}  # layer key -> analog | analog per step | spiking | readout | post
        self.node_of: dict[str, str] = {}   # layer key (module target, or node name) -> node name
        self.data_arg: dict[str, int] = {}  # layer key -> which argument is its data input
        for a in self.analysis.nodes:
            if a.role != "weighted":
                continue
            n = nodes[a.name]
            t = n.target if n.op == "call_module" else n.name
            self.node_of[t] = a.name
            self.data_arg[t] = 0 if n.op == "call_module" or not (
                isinstance(n.args[0], fx.Node) and n.args[0].op == "get_attr") else 1
            self.weighted[t] = ("analog" if t in in_prefix else
                                "analog per step" if t in in_core and a.form == "analog per step" else
                                "spiking" if t in in_core else "readout" if a.part == "readout" else "post")
        self.work = None        # per-node work of one sample (work.NodeWork), measured on the first batch
        self._counting = False
        self.op = {t: type(ann.get_submodule(t)).__name__ if nodes[self.node_of[t]].op == "call_module" else "MatMul"
                   for t in self.weighted}
        # the batch (time x batch) layout of every node, and of each weight layer's data input
        self.layout = {n.name: batch_layout(n) for n in snn.rewritten.graph.nodes}
        rw = {n.name: n for n in snn.rewritten.graph.nodes}
        self.in_layout = {}
        for t, name in self.node_of.items():
            arg = rw[name].args[self.data_arg[t]] if name in rw and len(rw[name].args) > self.data_arg[t] else None
            if isinstance(arg, fx.Node):
                self.in_layout[t] = self.layout[arg.name]
        # increment products (module target -> node name, and their operands' layouts): work per event
        self.products = {n.target: n.name for n in snn.rewritten.graph.nodes if n.op == "call_module" and
                         isinstance(snn.rewritten.get_submodule(n.target), IncrementProduct)}
        self.operand_layout = {t: [self.layout[a.name] for a in rw[name].args[:2]] for t, name in self.products.items()}
        self.kind = {n: m.extra_repr().split(",")[0] for n, m in self.neurons.items()}
        self.sources = self._sources()
        # a network in binary-spike form (thresholds folded into the weights) fires 0/1:
        # its spikes compare with the activation after scaling by the original thresholds
        unfolded = getattr(snn, "unfolded_from", None)
        self.scale = {n: unfolded.neurons()[n].theta.detach().clone() if unfolded is not None and
                      n in unfolded.neurons() else None for n in self.neurons}
        self.ranged = {n: unfolded.neurons()[n] if unfolded is not None and n in unfolded.neurons() else m
                       for n, m in self.neurons.items()}  # the neuron whose theta sets the range
        self.clip = {n: 0.0 for n in self.neurons}
        # accumulators
        T = self.T
        self.samples = 0
        self.size = {n: 0 for n in self.neurons}                     # neurons per sample
        self.spikes = {n: torch.zeros(T, dtype=torch.float64) for n in self.neurons}
        self.err = {n: {t: 0.0 for t in self.checkpoints} for n in self.neurons}
        self.ref = {n: 0.0 for n in self.neurons}
        self._batch: dict[str, dict] = {}  # this batch's error terms per neuron, kept for merging over ranks
        self._terms: list[tuple[int, dict]] = []
        spiking = [t for t, k in self.weighted.items() if k in ("spiking", "readout")] + list(self.products)
        self.synops = {t: torch.zeros(T, dtype=torch.float64) for t in spiking}
        self.events = {t: torch.zeros(T, dtype=torch.float64) for t in spiking}
        self.readout_analog: set[str] = set()  # readout layers whose per-step input is analog
        self.analog_nodes: set[str] = set()    # core nodes computing analog values at every step
        self._acts: dict[str, torch.Tensor] = {}
        self._run_acc: dict[str, torch.Tensor] = {}  # running spike sums of a batch, across chunks of time
        self._static: dict[str, torch.Tensor] = {}
        self._ev: dict[str, torch.Tensor] = {}       # this chunk's events per neuron (for the event flow)
        self._shapes: dict[str, tuple] = {}          # output shapes of the core's other modules, this chunk
        self._pool_state: dict[str, tuple] = {}
        self._fan_dev: dict[str, torch.Tensor] = {}
        self.notes: list[str] = []
        self.probe, self.probe_targets = self._readout_probe()

    # -- graph helpers ---------------------------------------------------------------
    def _sources(self) -> dict[str, list[str]]:
        """For each weighted layer, the neurons whose spikes reach it through weight-free ops."""
        g = self.snn.rewritten
        out = {}
        def key(n):
            return n.target if n.op == "call_module" else n.name
        for n in g.graph.nodes:
            if n.op not in ("call_module", "call_function") or key(n) not in self.weighted:
                continue
            found, seen, stack = [], set(), list(n.all_input_nodes)
            while stack:
                a = stack.pop()
                if a in seen:
                    continue
                seen.add(a)
                if a.op == "call_module" and a.target in self.neurons:
                    found.append(a.target)
                elif key(a) not in self.weighted:
                    stack.extend(a.all_input_nodes)
            out[key(n)] = sorted(set(found), key=list(self.neurons).index)
        return out

    def _readout_probe(self):
        """A GraphModule giving the per-step inputs of the readout layers from the core's
        per-step outputs (and the static prefix values, repeated over time)."""
        readout = [t for t, k in self.weighted.items() if k == "readout"]
        if not readout:
            return None, []
        g = self.snn.rewritten
        head_in = set(self.snn.wiring["head_in"])
        calls = [n for n in g.graph.nodes if (n.target if n.op == "call_module" else n.name) in readout]
        outs = [n.args[self.data_arg[n.target if n.op == "call_module" else n.name]] for n in calls]
        need, inputs, seen, stack = set(), [], set(), list(outs)
        while stack:
            n = stack.pop()
            if n in seen or not isinstance(n, fx.Node):
                continue
            seen.add(n)
            if n.name in head_in:
                inputs.append(n)
            elif n.op != "get_attr":
                need.add(n)
                stack.extend(n.all_input_nodes)
        try:
            order = [n for n in g.graph.nodes if n in need]
            inputs = [n for n in g.graph.nodes if n in inputs]
            probe = extract(g, order, inputs, outs, "ReadoutProbe")
            return (probe, [n.name for n in inputs]), [n.target if n.op == "call_module" else n.name for n in calls]
        except Exception as e:  # noqa: BLE001 - an unusual head: say so, count what we can
            warnings.warn(f"verify: cannot trace the readout's per-step input ({e}); its SynOps are not counted",
                          stacklevel=2)
            self.notes.append("readout layers' SynOps not counted (their per-step input could not be traced)")
            return None, []

    # -- hooks -----------------------------------------------------------------------
    @contextmanager
    def attached(self):
        handles = []
        ann = self.snn.ann
        handles.append(ann.register_forward_pre_hook(self._measure))
        for name in self.neurons:
            handles.append(ann.get_submodule(name).register_forward_hook(self._twin_act(name)))
        for name, m in self.neurons.items():
            handles.append(m.register_forward_hook(self._neuron(name)))
        core = self.snn.core
        for n in core.graph.nodes:  # the output shapes of the core's analog modules, for the event flow
            if n.op == "call_module" and n.target not in self.neurons:
                handles.append(core.get_submodule(n.target).register_forward_hook(self._shape(n.target)))
        handles.append(self.snn.prefix.register_forward_hook(self._prefix_out))
        handles.append(core.register_forward_hook(self._core_out))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._acts.clear()
            self._static.clear()
            self._run_acc.clear()
            self._ev.clear()
            self._pool_state.clear()

    def _measure(self, mod, inputs):
        """The work of every node for one sample (once, on the first batch's first sample)."""
        if self.work is not None or self._counting:
            return
        self._counting = True
        try:
            self.work = node_work(self.snn.ann, [x[:1] for x in inputs], set(self.node_of.values()),
                                  set(self.products.values()))
        finally:
            self._counting = False
        if self.work.unknown:
            self.notes.append("ops without a counting rule, charged one multiply per output element: "
                              + ", ".join(sorted(self.work.unknown)))

    def _twin_act(self, name):
        def hook(mod, inp, out):
            if not self._counting:
                self._acts[name] = out.detach()
        return hook

    def _shape(self, target):
        def hook(mod, inp, out):
            if isinstance(out, torch.Tensor):
                self._shapes[target] = tuple(out.shape)
        return hook

    def _fanout(self, t: str, device) -> torch.Tensor:
        """Fan-out per element of one sample of layer ``t``'s input, in the order of
        :func:`_per_sample` (the fan-out map of a batch of one, taken apart the same way)."""
        f = self._fan_dev.get(t)
        if f is None or f.device != device:
            fan = self.work.fan[self.node_of[t]]
            f = self._fan_dev[t] = _per_sample(fan, 1, self.in_layout.get(t))[0, 0].to(device=device)
        return f

    def _window(self) -> tuple[int, int]:
        """(first step, steps) of the chunk of time the engine is running."""
        return self.snn.time_window or (0, self.T)

    def _consume(self, t: str, counts: torch.Tensor, analog: bool) -> None:
        """Events reaching weight layer ``t`` in this chunk: each costs one accumulate per synapse."""
        if t in self.products:
            return self._consume_product(t, counts)
        kind = self.weighted[t]
        if kind == "readout" and analog:
            self.readout_analog.add(t)
            return
        if kind not in ("spiking", "readout") or self.work is None:
            return
        if analog and kind == "spiking":
            note = (f"{t}: spike-driven, but its input passes through an op the event count cannot follow; "
                    "only the events that reach it around that op are counted")
            if note not in self.notes:
                self.notes.append(note)
                warnings.warn(f"verify: {note}", stacklevel=2)
        t0, T = self._window()
        e = _per_sample(counts.detach().double(), T, self.in_layout.get(t)).sum(1)  # [T, elements]
        self.synops[t][t0:t0 + T] += (e @ self._fanout(t, e.device)).cpu()
        self.events[t][t0:t0 + T] += e.sum(1).cpu()

    def _consume_product(self, t: str, counts: tuple) -> None:
        """Events of both operands of increment product ``t`` in this chunk: each costs one
        accumulate per partner element it meets and one for its operand's running sum."""
        if self.work is None:
            return
        t0, T = self._window()
        fans = self.work.operand_fan[self.products[t]]
        for c, fan, layout in zip(counts, fans, self.operand_layout[t]):
            e = _per_sample(c.detach().double(), T, layout).sum(1)  # [T, elements]
            f = _per_sample(fan, 1, layout)[0, 0].to(e.device)
            self.synops[t][t0:t0 + T] += (e @ f).cpu()
            self.events[t][t0:t0 + T] += e.sum(1).cpu()

    def _prefix_out(self, mod, inp, out):
        self._static = dict(zip(self.snn.wiring["prefix_out"], out))

    def _core_out(self, mod, inp, out):
        """Carry this chunk's events through the core (and the readout's per-step input)."""
        t0, T = self._window()
        if t0 == 0:
            self._pool_state.clear()
        w = self.snn.wiring
        poisson = self.snn.config.get("encoding") == "poisson"
        args = [(x != 0).float() if poisson and name in w["inputs"] else
                torch.zeros((), device=x.device).expand(x.shape) for name, x in zip(w["core_in"], inp)]
        layers = {t: self.data_arg[t] for t, k in self.weighted.items() if k in ("spiking", "analog per step")}
        layers.update({t: (lambda args: (args[0], args[1])) for t in self.products})
        flow = EventFlow(self.snn.core, {k: v for k, v in self._ev.items()}, self._shapes, layers, self._consume,
                         self._pool_state, T, layouts=self.layout)
        outs = flow.run(*args)
        self.analog_nodes |= flow.analog
        self._ev.clear()
        if self.probe is None:
            return
        vals = dict(zip(w["core_out"], outs if isinstance(outs, (tuple, list)) else (outs,)))
        probe, names = self.probe
        pargs = []
        for n in names:
            if n in vals:
                pargs.append(vals[n])
            else:  # a static value: the same at every step, no events
                v = self._static[n]
                layout = self.layout.get(n)
                shape = list(v.shape)
                if layout is not None:  # the engine repeats it over time on its batch axis
                    shape[layout[0]] *= T
                pargs.append(torch.zeros((), device=v.device).expand(shape))
        rflow = EventFlow(probe, {}, {}, {}, self._consume, self._pool_state, T,
                          analog_inputs={n for n in names if n in flow.analog}, layouts=self.layout)
        counts = rflow.run(*pargs)  # the per-step inputs of the readout layers
        outs = next(n for n in probe.graph.nodes if n.op == "output").args[0]
        for t, c, node in zip(self.probe_targets, counts, outs):
            self._consume(t, c, isinstance(node, fx.Node) and node.name in rflow.analog)

    def _neuron(self, name):
        cps = set(self.checkpoints)

        def hook(mod, inp, out):
            t0, T = self._window()
            out = out.detach()
            ev = _events(out, mod)
            self._ev[name] = ev.to(torch.float32)
            layout = mod.time_layout
            self.spikes[name][t0:t0 + T] += time_major(ev, T, layout).reshape(T, -1).sum(1).double().cpu()
            batch = out.shape[layout[0]] // (layout[1] * T)  # samples in this run
            self.size[name] = out.numel() // (T * max(1, batch))
            a = self._acts.get(name)
            if a is None:
                return
            lam = self.scale[name]
            if lam is not None:
                out = out * _per_channel(lam, out, mod.channel_axis).to(out)
            s = _per_sample(out, T, layout)
            lo, hi = self.ranged[name].clip_range(a)
            r = _per_sample(torch.minimum(torch.maximum(a, lo), hi), 1, layout)[0].to(s.dtype)
            a = _per_sample(a, 1, layout)[0].to(s.dtype)
            acc = self._run_acc.get(name) if t0 > 0 else None
            acc = torch.zeros_like(a) if acc is None else acc
            for t in range(T):
                acc += s[t]
                if t0 + t + 1 in cps:
                    e = float(((acc / (t0 + t + 1) - r) ** 2).sum(dtype=torch.float64))
                    self.err[name][t0 + t + 1] += e
                    self._batch.setdefault(name, {"err": {}, "ref": 0.0})["err"][t0 + t + 1] = e
            self._run_acc[name] = acc
            if t0 == 0:
                ref = float((a ** 2).sum(dtype=torch.float64))
                clip = float(((r - a) ** 2).sum(dtype=torch.float64))
                self.ref[name] += ref
                self.clip[name] += clip
                b = self._batch.setdefault(name, {"err": {}, "ref": 0.0})
                b["ref"], b["clip"] = ref, clip
        return hook

    def batch_done(self, n: int, index: int | None = None) -> None:
        """End of a batch of ``n`` samples; ``index``: its place in the one-process stream."""
        self.samples += n
        self._terms.append((len(self._terms) if index is None else index, self._batch))
        self._batch = {}
        self._acts.clear()
        self._static.clear()
        self._run_acc.clear()

    def merge_ranks(self, shard) -> None:
        """Combine the measurements of all ranks (each on its share of the batches) on every
        rank: counts all-reduced (integers: exact), the error sums re-added in batch order,
        so the results equal one process's."""
        from .. import distributed as dist

        if not shard.active:
            return
        self.samples = sum(dist.all_gather(self.samples, shard))
        for acc in (self.spikes, self.synops, self.events):
            for k in acc:
                acc[k] = dist.all_reduce(acc[k], "sum", shard)
        sizes = dist.all_gather(self.size, shard)
        self.size = {n: max(s[n] for s in sizes) for n in self.size}
        works = [r for r in dist.all_gather(self.work, shard) if r is not None]
        if works:
            self.work = works[0]
        for part in dist.all_gather((self.readout_analog, self.analog_nodes), shard):
            self.readout_analog |= part[0]
            self.analog_nodes |= part[1]
        terms = dist.gather_batches(self._terms, shard)
        self.err = {n: {t: 0.0 for t in self.checkpoints} for n in self.neurons}
        self.ref = {n: 0.0 for n in self.neurons}
        self.clip = {n: 0.0 for n in self.neurons}
        for batch in terms:
            for name, b in batch.items():
                for t, e in b["err"].items():
                    self.err[name][t] += e
                self.ref[name] += b["ref"]
                self.clip[name] += b.get("clip", 0.0)

    # -- results -----------------------------------------------------------------------
    def results(self) -> dict:
        """Per neuron, per weighted layer and in total, at each checkpoint (per sample)."""
        cps, N = self.checkpoints, max(self.samples, 1)
        layers = []
        for name in self.neurons:
            cum = self.spikes[name].cumsum(0)
            size = self.size[name]
            layers.append({
                "name": name, "kind": self.kind[name], "neurons": size,
                "firing_rate": {t: float(cum[t - 1]) / (N * size * t) if size else 0.0 for t in cps},
                "spikes_per_sample": {t: float(cum[t - 1]) / N for t in cps},
                "rel_error": {t: math.sqrt(self.err[name][t] / self.ref[name]) if self.ref[name] > 0 else
                              (0.0 if self.err[name][t] == 0 else float("inf")) for t in cps},
                "clip_error": math.sqrt(self.clip[name] / self.ref[name]) if self.ref[name] > 0 else 0.0,
            })
        weighted = []
        work = self.work
        for t, kind in self.weighted.items():
            name = self.node_of[t]
            macs = work.counts[name]["mac"] if work is not None and name in work.counts else 0.0
            row = {"name": t, "op": self.op[t], "input": "readout (analog)" if t in self.readout_analog else kind,
                   "sources": self.sources.get(t, []), "macs": macs}
            if t in self.synops and t not in self.readout_analog:
                syn, ev = self.synops[t].cumsum(0), self.events[t].cumsum(0)
                size = math.prod(work.in_shape[name]) if work is not None and name in work.in_shape else 1
                row["synops"] = {c: float(syn[c - 1]) / N for c in cps}
                row["input_density"] = {c: float(ev[c - 1]) / (N * size * c) for c in cps}
            weighted.append(row)
        ops, per_layer = compose(self)
        return {"neurons": layers, "weighted": weighted, "energy": per_layer, "ops": ops}


__all__ = ["LayerMonitor", "fanout_map", "ENERGY_AC_PJ", "ENERGY_MAC_PJ", "METHOD"]

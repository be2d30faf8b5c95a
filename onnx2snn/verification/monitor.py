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

For every weighted layer (conv, linear, batch norm) the cost of one inference:

- ANN MACs: ``sum_i fanout(i)`` over the layer's input elements, where ``fanout(i)`` is
  the number of synapses input element ``i`` drives: (output, weight) pairs that read
  it, padding taps not counted. It is computed exactly per position, once per layer,
  as the input gradient of ``sum(layer_with_all_ones_weights(x))``.
- SynOps of a spike-driven layer (spiking core and readout): every nonzero input
  element at every step is one event costing ``fanout(i)`` accumulates,
  ``SynOps = sum_t sum_i [x_t,i != 0] * fanout(i)``, with ``x_t`` the tensor the layer
  receives at step t (spikes, or what weight-free ops made of them; a layer reading a
  multi-level neuron directly counts its k-spike outputs as k events). Consequences,
  stated in the report: the accumulations of the weight-free ops between neurons and
  the layer (residual adds, average / max pools, upsampling, concatenation) are not
  counted; two spike trains merged by an add count one event where both fire at the
  same element and step; a readout layer, which the engine runs once on time-averaged
  spikes, is charged for its per-step input, recomputed from the spiking core's
  per-step outputs.
- A weight layer of the spiking core whose input is not spikes (it reads a weight layer's or a
  time-averaged operator's output through weight-free ops: ``analog per step``) costs its
  MACs at every step.
- Non-spiking float work (:mod:`onnx2snn.verification.flops`): every time-averaged operator
  computes its op on the running averages at every step, plus 2 FLOPs per input element
  (running sum, division by t) and 2 per output element (times t, difference); those before
  the first neuron run once. The ANN is charged its own work for the same ops, once.
  Post-processing ops run once in both and are left out of both. ``nonspiking_flops`` per
  sample and T, at ``ENERGY_FLOP_PJ`` each.
- Layers before the first neuron (direct encoding) see the same analog input at every step:
  the engine computes them once (its static prefix) and feeds the result to the first
  neurons as a constant current, so their MACs count once, as in the field's estimates
  (first layer x E_MAC, the rest x E_AC per event). Layers after the readout
  (post-processing): MACs once. With Poisson encoding the input is spikes and the first
  layer is spike-driven like the others.
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
from ..snn.neurons import _per_channel, time_folded, time_major
from ..snn.partition import extract
from .flops import count_flops

ENERGY_AC_PJ = 0.9   # one 32-bit float accumulate, 45 nm (Horowitz, ISSCC 2014)
ENERGY_MAC_PJ = 4.6  # one 32-bit float multiply-accumulate, 45 nm
ENERGY_FLOP_PJ = 3.7  # one 32-bit float operation of a non-spiking op, at the cost of a multiply, 45 nm


def fanout_map(module: nn.Module, sample_shape: Sequence[int]) -> torch.Tensor:
    """Synapses driven by each input element of ``module`` for one sample (float64, flat)."""
    numel = math.prod(sample_shape)
    if isinstance(module, nn.Linear):
        return torch.full((numel,), float(module.out_features), dtype=torch.float64)
    if isinstance(module, nn.modules.conv._ConvNd):
        # a shallow copy with all-ones weights and no bias, run through forward() itself
        # (not __call__: the original's hooks must not fire)
        m = copy.copy(module)
        dev = module.weight.device
        m._parameters = {"weight": torch.ones(module.weight.shape, device=dev), "bias": None}
        with torch.enable_grad():
            x = torch.ones((1,) + tuple(sample_shape), device=dev, requires_grad=True)
            m.forward(x).sum().backward()
        return x.grad.reshape(-1).double().cpu()
    return torch.ones(numel, dtype=torch.float64)  # batch norm: one multiply-add per element


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


def _targets(gm: fx.GraphModule) -> set[str]:
    return {n.target for n in gm.graph.nodes if n.op == "call_module"}


class LayerMonitor:
    """Hooks on the twin and on the SNN; call :meth:`batch` around each batch's runs."""

    def __init__(self, snn, checkpoints: Sequence[int]):
        self.snn = snn
        self.checkpoints = sorted(set(int(t) for t in checkpoints))
        self.T = self.checkpoints[-1]
        self.neurons = snn.neurons()
        ann = snn.ann
        info = analyze(ann)
        targets = {n.name: n.target for n in ann.graph.nodes}
        in_prefix, in_core = _targets(snn.prefix), _targets(snn.core)
        self.weighted: dict[str, str] = {}  # target -> analog | spiking | readout | post
        for a in info.nodes:
            if a.role != "weighted":
                continue
            t = targets[a.name]
            self.weighted[t] = ("analog" if t in in_prefix else
                                "analog per step" if t in in_core and a.form == "analog per step" else
                                "spiking" if t in in_core else "readout" if a.part == "readout" else "post")
        # non-spiking ops outside post-processing: FLOPs per sample, measured on the first batch
        self.float_ops = {a.name: a.form for a in info.nodes
                          if a.role in ("averaged", "nonlinear") and a.part in ("core", "readout")}
        self.flops: dict[str, float] | None = None
        self.overhead: dict[str, float] = {}
        self._counting = False
        self.op = {t: type(ann.get_submodule(t)).__name__ for t in self.weighted}
        # the batch (time x batch) layout of each weighted layer's input, and of every node
        self.layout = {n.name: batch_layout(n) for n in snn.rewritten.graph.nodes}
        self.in_layout = {n.target: self.layout[n.args[0].name] for n in snn.rewritten.graph.nodes
                          if n.op == "call_module" and n.target in self.weighted and n.args
                          and isinstance(n.args[0], fx.Node)}
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
        # layers reading a multi-level neuron directly: a k * theta output is k events
        self.graded = {}
        for n in snn.rewritten.graph.nodes:
            a = n.args[0] if n.op == "call_module" and n.target in self.weighted and n.args else None
            if isinstance(a, fx.Node) and a.op == "call_module" and a.target in self.neurons and \
                    getattr(self.neurons[a.target], "levels", 1) > 1:
                self.graded[n.target] = self.neurons[a.target]
        # accumulators
        T = self.T
        self.samples = 0
        self.size = {n: 0 for n in self.neurons}                     # neurons per sample
        self.spikes = {n: torch.zeros(T, dtype=torch.float64) for n in self.neurons}
        self.err = {n: {t: 0.0 for t in self.checkpoints} for n in self.neurons}
        self.ref = {n: 0.0 for n in self.neurons}
        self._batch: dict[str, dict] = {}  # this batch's error terms per neuron, kept for merging over ranks
        self._terms: list[tuple[int, dict]] = []
        self.macs: dict[str, float] = {}
        self.in_size: dict[str, int] = {}
        self.fan: dict[str, torch.Tensor] = {}
        spiking = [t for t, k in self.weighted.items() if k in ("spiking", "readout")]
        self.synops = {t: torch.zeros(T, dtype=torch.float64) for t in spiking}
        self.events = {t: torch.zeros(T, dtype=torch.float64) for t in spiking}
        self._acts: dict[str, torch.Tensor] = {}
        self._run_acc: dict[str, torch.Tensor] = {}  # running spike sums of a batch, across chunks of time
        self._static: dict[str, torch.Tensor] = {}
        self._fan_dev: dict[str, torch.Tensor] = {}
        self.notes: list[str] = []
        self.probe, self.probe_targets = self._readout_probe()

    # -- graph helpers ---------------------------------------------------------------
    def _sources(self) -> dict[str, list[str]]:
        """For each weighted layer, the neurons whose spikes reach it through weight-free ops."""
        g = self.snn.rewritten
        out = {}
        for n in g.graph.nodes:
            if n.op != "call_module" or n.target not in self.weighted:
                continue
            found, seen, stack = [], set(), list(n.all_input_nodes)
            while stack:
                a = stack.pop()
                if a in seen:
                    continue
                seen.add(a)
                if a.op == "call_module" and a.target in self.neurons:
                    found.append(a.target)
                elif not (a.op == "call_module" and a.target in self.weighted):
                    stack.extend(a.all_input_nodes)
            out[n.target] = sorted(set(found), key=list(self.neurons).index)
        return out

    def _readout_probe(self):
        """A GraphModule giving the per-step inputs of the readout layers from the core's
        per-step outputs (and the static prefix values, repeated over time)."""
        readout = [t for t, k in self.weighted.items() if k == "readout"]
        if not readout:
            return None, []
        g = self.snn.rewritten
        head_in = set(self.snn.wiring["head_in"])
        calls = [n for n in g.graph.nodes if n.op == "call_module" and n.target in readout]
        outs = [n.args[0] for n in calls]
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
            return (probe, [n.name for n in inputs]), [n.target for n in calls]
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
        if self.float_ops:
            handles.append(ann.register_forward_pre_hook(self._count_flops))
        for name in self.neurons:
            handles.append(ann.get_submodule(name).register_forward_hook(self._twin_act(name)))
        for t in self.weighted:
            handles.append(ann.get_submodule(t).register_forward_hook(self._twin_weighted(t)))
        for name, m in self.neurons.items():
            handles.append(m.register_forward_hook(self._neuron(name)))
        rw = self.snn.rewritten
        for t, k in self.weighted.items():
            if k == "spiking":
                handles.append(rw.get_submodule(t).register_forward_hook(self._spiking_layer(t)))
        if self.probe is not None:
            handles.append(self.snn.prefix.register_forward_hook(self._prefix_out))
            handles.append(self.snn.core.register_forward_hook(self._core_out))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._acts.clear()
            self._static.clear()
            self._run_acc.clear()

    def _count_flops(self, mod, inputs):
        """FLOPs per sample of every non-spiking op (once, on the first batch's first sample)."""
        if self.flops is not None or self._counting:
            return
        self._counting = True
        try:
            self.flops, self.overhead = _node_flops(self.snn.ann, [x[:1] for x in inputs], set(self.float_ops))
        finally:
            self._counting = False

    def _twin_act(self, name):
        def hook(mod, inp, out):
            if not self._counting:
                self._acts[name] = out.detach()
        return hook

    def _twin_weighted(self, t):
        def hook(mod, inp, out):
            if t not in self.fan and not self._counting:
                layout = self.in_layout.get(t) or (0, 1)
                xm = time_major(inp[0], 1, layout)  # [1, outer * B, rest]: one sample is (outer, *rest)
                shape = ((layout[1],) if layout[1] > 1 else ()) + tuple(xm.shape[2:])
                self.fan[t] = fanout_map(mod, shape)
                self.macs[t] = float(self.fan[t].sum())
                self.in_size[t] = math.prod(shape)
        return hook

    def _fanout(self, t: str, device) -> torch.Tensor:
        f = self._fan_dev.get(t)
        if f is None or f.device != device:
            f = self._fan_dev[t] = self.fan[t].to(device=device, dtype=torch.float32)
        return f

    def _window(self) -> tuple[int, int]:
        """(first step, steps) of the chunk of time the engine is running."""
        return self.snn.time_window or (0, self.T)

    def _count(self, t: str, x: torch.Tensor) -> None:
        t0, T = self._window()
        x = x.detach()
        graded = self.graded.get(t)
        ev = (x != 0) if graded is None else _events(x, graded)
        nz = _per_sample(ev, T, self.in_layout.get(t)).sum(1).float()  # [T, N] events per element
        self.synops[t][t0:t0 + T] += (nz.double() @ self._fanout(t, x.device).double()).cpu()
        self.events[t][t0:t0 + T] += nz.sum(1).double().cpu()

    def _spiking_layer(self, t):
        def hook(mod, inp, out):
            self._count(t, inp[0])
        return hook

    def _prefix_out(self, mod, inp, out):
        self._static = dict(zip(self.snn.wiring["prefix_out"], out))

    def _core_out(self, mod, inp, out):
        vals = dict(zip(self.snn.wiring["core_out"], out))
        probe, names = self.probe
        T = self._window()[1]
        args = []
        for n in names:
            if n in vals:
                args.append(vals[n])
            else:  # a static value: the same at every step
                v = self._static[n]
                layout = self.layout.get(n)
                if layout is not None:  # repeated over time on its batch axis, as the engine does
                    vm = time_major(v, 1, layout)
                    v = time_folded(vm.expand((T,) + tuple(vm.shape[1:])), layout)
                args.append(v)
        for t, x in zip(self.probe_targets, probe(*args)):
            self._count(t, x)

    def _neuron(self, name):
        cps = set(self.checkpoints)

        def hook(mod, inp, out):
            t0, T = self._window()
            out = out.detach()
            ev = _events(out, mod)
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
        shapes = [r for r in dist.all_gather((self.fan, self.macs, self.in_size), shard) if r[0]]
        if shapes:
            self.fan, self.macs, self.in_size = shapes[0]
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
        flops = [r for r in dist.all_gather((self.flops, self.overhead), shard) if r[0] is not None]
        if flops:
            self.flops, self.overhead = flops[0]

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
        for t, kind in self.weighted.items():
            macs = self.macs.get(t, 0.0)
            row = {"name": t, "op": self.op[t], "input": kind, "sources": self.sources.get(t, []), "macs": macs}
            if t in self.synops:
                syn, ev = self.synops[t].cumsum(0), self.events[t].cumsum(0)
                row["synops"] = {c: float(syn[c - 1]) / N for c in cps}
                row["input_density"] = {c: float(ev[c - 1]) / (N * self.in_size.get(t, 1) * c) for c in cps}
            weighted.append(row)
        ann_macs = sum(self.macs.values())
        analog = sum(self.macs.get(t, 0.0) for t, k in self.weighted.items() if k == "analog")
        post = sum(self.macs.get(t, 0.0) for t, k in self.weighted.items() if k == "post")
        per_step = sum(self.macs.get(t, 0.0) for t, k in self.weighted.items() if k == "analog per step")
        flops = self.flops or {}
        ann_flops = sum(flops.values())
        once = sum(f for n, f in flops.items() if self.float_ops.get(n) != "time-averaged")
        stepped = sum(f + self.overhead.get(n, 0.0) for n, f in flops.items()
                      if self.float_ops.get(n) == "time-averaged")
        float_ops = [{"name": n, "form": self.float_ops[n], "flops": f, "overhead_per_step": self.overhead.get(n, 0.0)}
                     for n, f in flops.items()]
        totals = {}
        for c in cps:
            syn = sum(r["synops"][c] for r in weighted if "synops" in r)
            mac = analog + post + c * per_step  # the static prefix and post-processing run once, whatever T
            nsf = once + c * stepped
            totals[c] = {"synops": syn, "macs": mac, "nonspiking_flops": nsf,
                         "synops_over_ann_macs": syn / ann_macs if ann_macs else 0.0,
                         "energy_pj": ENERGY_AC_PJ * syn + ENERGY_MAC_PJ * mac + ENERGY_FLOP_PJ * nsf}
        ann_pj = ENERGY_MAC_PJ * ann_macs + ENERGY_FLOP_PJ * ann_flops
        for c in cps:
            totals[c]["energy_ratio_vs_ann"] = totals[c]["energy_pj"] / ann_pj if ann_pj else 0.0
        return {
            "neurons": layers, "weighted": weighted,
            "float_ops": float_ops,
            "ops": {"ann_macs": ann_macs, "ann_nonspiking_flops": ann_flops, "ann_energy_pj": ann_pj,
                    "analog_macs": analog, "post_macs": post, "analog_per_step_macs": per_step, "snn": totals,
                    "constants": {"accumulate_pj": ENERGY_AC_PJ, "multiply_accumulate_pj": ENERGY_MAC_PJ,
                                  "float_op_pj": ENERGY_FLOP_PJ,
                                  "process": "45 nm, 32-bit float (Horowitz, ISSCC 2014)"},
                    "method": METHOD, "notes": list(self.notes)},
        }


METHOD = ("Per sample. ANN MACs of a layer = sum over its input elements of their fan-out (synapses driven, "
          "padding taps excluded). SynOps of a spike-driven layer = sum over steps and input elements of "
          "[input != 0] * fan-out: each event entering the layer costs one accumulate per synapse. Weight-free ops "
          "between neurons and layers (add, pooling, upsample, concat) are not counted; coincident spikes merged "
          "by an add count once. Layers before the first neuron see the analog input, the same at every step: "
          "the engine computes them once (static prefix), MACs once. Post-processing layers: MACs once. "
          "Weight layers of the spiking core reading analog values (not spikes): MACs at every step. "
          "Non-spiking float work: each time-averaged operator runs its op at every step (matrix products "
          "2 FLOPs per multiply-add, composite kernels a fixed count per element, other ops 1 per output "
          "element) plus 2 FLOPs per input and 2 per output element for the compensation; those before the "
          "first neuron run once; the ANN is charged the same ops once; post-processing ops are left out of both. "
          "Energy = 0.9 pJ x SynOps + 4.6 pJ x MACs + 3.7 pJ x non-spiking FLOPs; "
          "ANN = 4.6 pJ x MACs + 3.7 pJ x its FLOPs of the same ops.")

def _node_flops(gm: fx.GraphModule, inputs: list[torch.Tensor], names: set[str]) -> tuple[dict, dict]:
    """FLOPs of the named nodes of ``gm`` for these inputs (one sample), and the compensation
    work a time-averaged operator adds per step: 2 per element of each computed input, 2 per
    output element."""
    flops: dict[str, float] = {}
    overhead: dict[str, float] = {}

    class Counting(fx.Interpreter):
        def run_node(self, n):
            if n.name not in names:
                return super().run_node(n)
            out = {}
            flops[n.name] = count_flops(lambda: out.setdefault("y", super(Counting, self).run_node(n)))
            y = out["y"]
            vals = [self.env[a] for a in n.all_input_nodes if a.op != "get_attr"]  # weights are not summed
            ins = sum(v.numel() for v in vals if isinstance(v, torch.Tensor))
            overhead[n.name] = 2.0 * ins + 2.0 * (y.numel() if isinstance(y, torch.Tensor) else 0)
            return y
    with torch.no_grad():
        Counting(gm).run(*inputs)
    return flops, overhead


__all__ = ["LayerMonitor", "fanout_map", "ENERGY_AC_PJ", "ENERGY_MAC_PJ", "ENERGY_FLOP_PJ", "METHOD"]

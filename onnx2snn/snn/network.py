"""The spiking network: the twin with activations replaced by neurons, run over T steps.

``SpikingNetwork.forward(x)`` takes a normal batch [B, ...], runs ``timesteps`` steps
and returns the time-averaged outputs in the same structure as the ANN, with the
post-processing applied once at the end.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Sequence

import torch
import torch.fx as fx
from torch import nn

from .. import checks
from ..settings import ibt_levels, saved
from ..errors import NonSpikingActivationError, Onnx2SnnError
from . import guard
from ..calibration.quantized import cap_neuron
from ..graph.analysis import analyze
from ..graph.averaged import Reencode, is_product
from ..graph.layout import channel_axes as find_channel_axes
from .averaged import TimeAveraged, averaged_node
from .norms import as_sum_norm
from .products import as_increment
from .batch_axes import _check_channels, _layout, batch_layout, dynamic_nodes
from .memory import CPU_BUDGET_CAP, UNKNOWN_FREE_MEMORY, _core_memory, default_memory_budget  # noqa: F401
from .neurons import BATCH_FIRST, IFNeuron, Repeat, SpikingMaxPool, SpikingModule, time_folded, time_major
from .partition import extract

FORMAT = "onnx2snn.snn/1"


class SpikingNetwork(nn.Module):
    """A converted SNN: static prefix, spiking core over T steps, averaged head.

    Attributes: ``timesteps`` (default T), ``thresholds`` (node -> per-channel theta),
    ``config`` (how it was converted), ``twin`` (the rewritten graph, all parts).
    """

    def __init__(self, twin: fx.GraphModule, rewritten: fx.GraphModule, prefix: fx.GraphModule,
                 core: fx.GraphModule, head: fx.GraphModule, wiring: dict[str, Any], config: dict[str, Any]):
        super().__init__()
        self.ann = twin
        self.rewritten = rewritten
        self.prefix, self.core, self.head = prefix, core, head
        self.wiring = wiring
        self.config = dict(config)
        self.timesteps = int(config["timesteps"])
        self.repeat = Repeat()
        self._step_state: dict[str, Any] | None = None
        self.max_memory: int | None = None  # bytes for the core's chunks (None: default_memory_budget)
        self.time_window: tuple[int, int] | None = None  # (first step, steps) of the chunk running now
        self._memory_per_sample: tuple[int, int] | None = None  # the core's estimate (its graph is fixed)
        self.channel_axes: dict[str, int | None] = {}  # neuron target -> axis its thresholds vary along

    # -- introspection --------------------------------------------------------------
    def spiking_modules(self) -> dict[str, SpikingModule]:
        return {n: m for n, m in self.rewritten.named_modules() if isinstance(m, SpikingModule)}

    def neurons(self) -> dict[str, IFNeuron]:
        return {n: m for n, m in self.rewritten.named_modules() if isinstance(m, IFNeuron)}

    def averaged_ops(self) -> dict[str, TimeAveraged]:
        """The time-averaged operators of the spiking core (see :mod:`onnx2snn.snn.averaged`)."""
        return {n: m for n, m in self.rewritten.named_modules() if isinstance(m, TimeAveraged)}

    @property
    def thresholds(self) -> dict[str, torch.Tensor]:
        return {n: m.theta for n, m in self.neurons().items()}

    def set_analog(self, on: bool = True) -> "SpikingNetwork":
        """Neurons compute their ideal rate function (the original activation): the SNN
        then equals the twin, which checks the graph rewrite independent of spiking."""
        for m in self.spiking_modules().values():
            m.analog = on
        return self

    def compile(self, on: bool = True) -> "SpikingNetwork":
        """Run the plain IF neurons' multi-step loop as one fused kernel
        (:func:`torch.compile`; needs a C++ compiler on the CPU or Triton on CUDA). The
        first run at each T compiles (tens of seconds); results equal the eager engine."""
        for m in self.neurons().values():
            m.compiled = on and m.plain
        return self

    def _set_time(self, T: int, step_mode: bool) -> None:
        for m in list(self.spiking_modules().values()) + [self.repeat]:
            m.T = T
            m.step_mode = step_mode

    # -- running --------------------------------------------------------------------
    def _prefix(self, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        outs = self.prefix(*inputs)
        return dict(zip(self.wiring["prefix_out"], outs))

    def _encode(self, static: dict[str, torch.Tensor], T: int, gen: "torch.Generator | None") -> list[torch.Tensor]:
        vals = []
        axes = self.wiring.get("core_in_layouts") or [BATCH_FIRST] * len(self.wiring["core_in"])
        for name, axis in zip(self.wiring["core_in"], axes):
            v = static[name]
            if gen is not None and name in self.wiring["inputs"]:
                v = poisson(v, T, generator=gen)
            else:
                v = self.repeat(v, axis)
            vals.append(v)
        return vals

    def _generator(self, like: torch.Tensor) -> "torch.Generator | None":
        """The seeded generator of Poisson input (one per run; chunks and steps draw from it in turn)."""
        if saved(self.config, "encoding") != "poisson":
            return None
        return torch.Generator(device=like.device).manual_seed(int(saved(self.config, "seed")))

    def _out_layouts(self) -> list[tuple]:
        return [a or BATCH_FIRST for a in (self.wiring.get("core_out_layouts") or [None] * len(self.wiring["core_out"]))]

    def _head(self, static: dict[str, torch.Tensor], means: Sequence[torch.Tensor], moved: bool = False):
        """The head on the core's output averages (``moved``: each with its batch axis in front,
        as the chunked run accumulates them)."""
        if moved:  # [B, ...] -> the layout of the value (for a batch, time_folded of one step)
            means = [time_folded(m.unsqueeze(0), a) for m, a in zip(means, self._out_layouts())]
        vals = dict(static)
        vals.update(zip(self.wiring["core_out"], means))
        outs = self.head(*[vals[n] for n in self.wiring["head_in"]])
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _grad_mode(self):
        """Spikes have no gradient: spiking runs never build an autograd graph. In analog mode
        the network is the twin and follows torch's grad mode (differentiable)."""
        analog = any(m.analog for m in self.spiking_modules().values())
        return torch.enable_grad() if analog and torch.is_grad_enabled() else torch.no_grad()

    def forward(self, *inputs: torch.Tensor, timesteps: int | None = None, chunk: int | None = None,
                max_memory: int | None = None):
        """Time-averaged outputs after ``timesteps`` steps (default ``self.timesteps``);
        ``chunk`` / ``max_memory``: see :meth:`run_timesteps`."""
        T = self.timesteps if timesteps is None else checks.integer("timesteps", timesteps, 1)
        return self.run_timesteps(*inputs, checkpoints=[T], chunk=chunk, max_memory=max_memory)[0]

    def run_timesteps(self, *inputs: torch.Tensor, checkpoints: Sequence[int], chunk: int | None = None,
                      max_memory: int | None = None):
        """Outputs at each T in ``checkpoints`` from one run to the largest T: the
        running average of the core's outputs is read at each checkpoint.

        The spiking core runs ``chunk`` steps at a time (every neuron's and max-pool's state
        carried from chunk to chunk; results equal one chunk of T steps bit for bit), so
        memory depends on the chunk, not on T. By default (``chunk=None``) the chunk is the
        longest that fits ``max_memory`` bytes (default: ``self.max_memory``, else
        :func:`default_memory_budget`), estimated from the core's tensor shapes.
        """
        cps = checks.timesteps_list(checkpoints, "checkpoints")
        chunk = checks.optional_integer("chunk", chunk, 1)
        max_memory = checks.optional_integer("max_memory", max_memory, 1)
        T = cps[-1]
        guard.check_inputs(self, inputs)
        B = _batch(inputs)
        Tc = min(T, chunk if chunk is not None else self.chunk_length(T, B, max_memory))
        guard.check_memory(self, T, B, Tc, inputs[0].device)
        with self._grad_mode():
            try:
                return self._run(inputs, cps, T, Tc, checkpoints=list(checkpoints))
            finally:
                self._end_run()

    def _run(self, inputs, cps: list[int], T: int, Tc: int, checkpoints):
        self.reset()
        static = self._prefix(inputs)
        outs_needed = bool(self.wiring["core_out"])
        n_chunks = -(-T // Tc)
        Tc = -(-T // n_chunks)  # balanced chunks: peak memory is set by the longest
        gen = self._generator(inputs[0])
        for m in self.spiking_modules().values():
            m.carry = True
        sums: list[torch.Tensor] | None = None
        results: dict[int, Any] = {}
        want = set(cps)
        for t0 in range(0, T, Tc):
            n = min(Tc, T - t0)
            self._set_time(n, step_mode=False)
            self.time_window = (t0, n)
            outs = self.core(*self._encode(static, n, gen)) if outs_needed else ()
            steps = [time_major(o, n, a) for o, a in zip(outs, self._out_layouts())]
            for k in range(n):
                if sums is None:  # one add per step in time order, as cumsum_time
                    sums = [s[0].clone() for s in steps]
                else:
                    for s, acc in zip(steps, sums):
                        acc.add_(s[k])
                t = t0 + k + 1
                if t in want:
                    results[t] = self._head(static, [acc / t for acc in sums], moved=True)
            del outs, steps
        return [results[int(t)] for t in checkpoints]

    def _end_run(self) -> None:
        for m in self.spiking_modules().values():
            m.carry = False
            m.reset()
        self.time_window = None

    # -- memory ---------------------------------------------------------------------
    def memory_per_sample(self) -> tuple[int, int]:
        """(bytes per sample and timestep of a chunk, bytes per sample of carried state):
        an estimate of the core's peak (live tensors, plus each neuron's scratch) from the
        tensor shapes recorded at import (float32). Computed once: the core's graph is fixed."""
        if self._memory_per_sample is None:
            self._memory_per_sample = _core_memory(self.core, self.rewritten, set(self.spiking_modules()))
        return self._memory_per_sample

    def chunk_length(self, T: int, batch: int, max_memory: int | None = None) -> int:
        """The longest chunk of time (<= T) whose estimated memory fits ``max_memory`` bytes."""
        budget = max_memory if max_memory is not None else self.max_memory
        if budget is None:
            budget = default_memory_budget(next(iter(self.buffers()), torch.empty(0)).device)
        budget = checks.integer("max_memory", budget, 1)
        per_step, state = self.memory_per_sample()
        free = budget - batch * state
        return max(1, min(T, free // max(1, batch * per_step)))

    # step mode -----------------------------------------------------------------------
    def reset(self) -> None:
        """Clear all neuron state (step mode)."""
        for m in self.spiking_modules().values():
            m.reset()
        self._step_state = None

    def step(self, *inputs: torch.Tensor):
        """One timestep of streaming input; returns the average output so far (the same
        numbers as ``run_timesteps`` at each T)."""
        guard.check_inputs(self, inputs)
        with self._grad_mode():
            self._set_time(1, step_mode=True)
            st = self._step_state
            if st is None:
                st = self._step_state = {"t": 0, "sums": None, "gen": self._generator(inputs[0])}
            static = self._prefix(inputs)
            core_in = self._encode(static, 1, st["gen"])
            outs = self.core(*core_in) if self.wiring["core_out"] else ()
            st["t"] += 1
            st["sums"] = [o.clone() for o in outs] if st["sums"] is None else \
                [o + s for s, o in zip(st["sums"], outs)]
            return self._head(static, [s / st["t"] for s in st["sums"]])

    # saving --------------------------------------------------------------------------
    def save(self, path: "str | os.PathLike") -> str:
        """Save to a file that :func:`onnx2snn.load` reads back (weights_only-safe). A
        folded network (:func:`onnx2snn.fold_thresholds`) is saved as its weighted source
        and folded again on load."""
        src = getattr(self, "unfolded_from", None)
        if src is not None:
            return src._save(path, folded=True)
        return self._save(path)

    def _save(self, path: "str | os.PathLike", folded: bool = False) -> str:
        info = self.ann.onnx_info
        blob = {
            "format": FORMAT,
            "onnx": torch.frombuffer(bytearray(info.onnx_bytes), dtype=torch.uint8),
            "input_shapes": json.dumps({k: list(v) for k, v in info.input_shapes.items()}),
            "config": json.dumps({**self.config, "folded": folded}),
            "ann_state": {k: v.detach().cpu() for k, v in self.ann.state_dict().items()},
            "thresholds": {k: v.detach().cpu() for k, v in self.thresholds.items()},
            "channel_axes": json.dumps(self.channel_axes),
        }
        extra = {n: {k: v.detach().cpu() for k, v in m.state_dict().items() if k != "theta"}
                 for n, m in self.neurons().items()}
        blob["neuron_state"] = extra
        torch.save(blob, os.fspath(path))
        return os.fspath(path)


def poisson(x: torch.Tensor, T: int, seed: int = 0, generator: "torch.Generator | None" = None) -> torch.Tensor:
    """Rate coding: T Bernoulli samples of ``x`` clipped to [0, 1] (as [T*B, ...]), drawn one
    step after another from ``generator`` (default: a new one seeded with ``seed``), so
    that chunks of time and single steps draw the same numbers as one call."""
    g = generator if generator is not None else torch.Generator(device=x.device).manual_seed(seed)
    p = x.clamp(0, 1)
    s = torch.empty((T,) + tuple(x.shape), dtype=x.dtype, device=x.device)
    for t in range(T):
        torch.lt(torch.rand(p.shape, generator=g, device=x.device, dtype=p.dtype), p, out=s[t])
    return s.reshape((T * x.shape[0],) + tuple(x.shape[1:]))


def _batch(inputs: Sequence[torch.Tensor]) -> int:
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            return int(x.shape[0])
    return 1


def build_spiking(twin: fx.GraphModule, thresholds: dict[str, torch.Tensor], config: dict[str, Any],
                  channel_axes: "dict[str, int | None] | None" = None) -> SpikingNetwork:
    """Rewrite the twin (activations -> neurons, max-pools -> spiking max-pools, the other
    nonlinear ops after a neuron -> time-averaged operators) and cut it into prefix / core /
    head. Time-averaged ops must have their re-encoding points already
    (:func:`onnx2snn.graph.analysis.prepare_averaged`: convert and load do it).

    Every neuron, spiking max-pool and time-averaged op learns where time x batch lies in its
    tensors (:func:`onnx2snn.graph.layout.probe_batch_axes`); ``channel_axes`` (activation
    target -> the axis its thresholds vary along) defaults to the graph's feature axes
    (:func:`onnx2snn.graph.layout.channel_axes`, as calibration uses them)."""
    analysis = analyze(twin)
    info = analysis.by_name()
    bad = {k: v for k, v in analysis.non_convertible.items()}
    acts = {k: v for k, v in bad.items() if any(info[n].role == "activation" for n in v)}
    if acts:
        raise NonSpikingActivationError(acts)
    if bad:
        lines = "; ".join(f"{k}: {', '.join(v[:5])} ({info[v[0]].reason})" for k, v in bad.items())
        raise Onnx2SnnError(f"ops inside the spiking part have no spiking form: {lines}. Move them after "
                            "the last activation, or replace them in the model before export.")
    g = copy.deepcopy(twin)
    g.onnx_info = twin.onnx_info
    nodes = {n.name: n for n in g.graph.nodes}
    core_names = {n.name for n in analysis.nodes if n.part == "core"}
    batch_axes = _layout(twin, analysis, core_names, config)
    for n in g.graph.nodes:
        if n.name in batch_axes:
            n.meta["batch_layout"] = batch_axes[n.name]
    acts = [a.name for a in analysis.activations() if a.part == "core"]
    if channel_axes is None:
        channel_axes = {nodes[k].target: v for k, v in find_channel_axes(twin, acts).items()}
    neuron_names = set()
    for a in analysis.activations():
        if a.part != "core":
            continue
        node = nodes[a.name]
        act = g.get_submodule(node.target)
        alpha = None
        if isinstance(act, nn.LeakyReLU):
            alpha = float(act.negative_slope)
        elif isinstance(act, nn.PReLU):
            alpha = act.weight.detach().clone()
        # IBT neurons fire "ibt_levels" (files saved before it existed: one spike per step)
        levels = saved(config, "levels") if alpha is None else ibt_levels(config)
        if isinstance(act, Reencode):
            levels = act.levels
        if node.target not in thresholds:
            raise Onnx2SnnError(f"no threshold for the neuron at {node.target!r} (node {a.name}): the thresholds "
                                "were computed for another graph; convert again")
        theta, levels = cap_neuron(act, thresholds[node.target].clone(), levels)
        reencode = isinstance(act, Reencode)
        two_sided = reencode and not act.one_sided  # one-sided: a signed IF neuron, rate ReLU
        signed = saved(config, "signed_relu") if alpha is None else saved(config, "signed_ibt")
        neuron = IFNeuron(theta, alpha=alpha, v_init=saved(config, "v_init"), signed=reencode or signed,
                          activation=nn.Identity() if two_sided else nn.ReLU() if reencode else copy.deepcopy(act),
                          levels=levels, two_sided=two_sided)
        neuron.binary_events = reencode and saved(config, "reencode_coding") == "binary"
        neuron.channel_axis = _check_channels(theta, channel_axes.get(node.target, 1), node)
        neuron.time_layout = batch_axes.get(a.name) or BATCH_FIRST
        _replace_module(g, node.target, neuron)
        neuron_names.add(a.name)
    for a in analysis.nodes:
        if a.part == "core" and a.role == "maxpool" and nodes[a.name].op == "call_module":
            node = nodes[a.name]
            pool = SpikingMaxPool(g.get_submodule(node.target))
            pool.time_layout = batch_axes.get(a.name) or BATCH_FIRST
            _replace_module(g, node.target, pool)
    dynamic = dynamic_nodes(list(g.graph.nodes), core_names, neuron_names, saved(config, "encoding") == "poisson")
    for a in analysis.nodes:
        node = nodes[a.name]
        if a.role == "averaged" and node in dynamic:
            spikes_in = is_product(node) and all(i.name in neuron_names for i in node.args[:2])
            target = node.target if node.op == "call_module" else f"averaged_{a.name}"
            mod = averaged_node(g, node, dynamic, target)
            mod.in_layouts = [batch_axes.get(i.name) for i in node.all_input_nodes]
            mod.out_layout = batch_axes.get(a.name) or BATCH_FIRST
            if spikes_in and mod.kinds == ["dynamic", "dynamic"]:  # both operands spikes: by increments
                g.add_submodule(target, as_increment(mod))
            elif isinstance(mod.fn, nn.LayerNorm) and mod.kinds == ["dynamic"] and len(mod.args) == 1 \
                    and not mod.kwargs:  # on the running sums: no 1/t, t per element
                g.add_submodule(target, as_sum_norm(mod))
    g.recompile()
    snn = partition(twin, g, core_names, neuron_names, config)
    snn.channel_axes = {k: v for k, v in channel_axes.items() if k in {nodes[n].target for n in neuron_names}}
    return snn


def partition(twin: fx.GraphModule, g: fx.GraphModule, core_names: set[str], neuron_names: set[str],
              config: dict[str, Any]) -> SpikingNetwork:
    """Cut the rewritten graph ``g`` into static prefix / spiking core / averaged head."""
    order = list(g.graph.nodes)
    dynamic = dynamic_nodes(order, core_names, neuron_names, saved(config, "encoding") == "poisson")
    placeholders = [n for n in order if n.op == "placeholder"]
    out_node = [n for n in order if n.op == "output"][0]
    static = [n for n in order if n.op not in ("placeholder", "output", "get_attr") and n not in dynamic
              and n.name in core_names]
    head = [n for n in order if n.op not in ("placeholder", "output", "get_attr") and n not in dynamic
            and n.name not in core_names]
    # values crossing parts
    core_in = []
    for n in order:
        if n in dynamic:
            for a in n.all_input_nodes:
                if a not in dynamic and a.op != "get_attr" and a not in core_in:
                    core_in.append(a)
    core_out = [n for n in order if n in dynamic and any(u not in dynamic for u in n.users)]
    head_set = set(head)
    head_in = []
    for n in head + [out_node]:
        for a in n.all_input_nodes:
            if a not in head_set and a.op != "get_attr" and a not in head_in:
                head_in.append(a)
    prefix_out = [n for n in placeholders + static if n in core_in or n in head_in]
    prefix = extract(g, static, placeholders, prefix_out, "StaticPrefix")
    core = extract(g, [n for n in order if n in dynamic], core_in, core_out, "SpikingCore")
    head_outs = list(out_node.args[0]) if isinstance(out_node.args[0], tuple) else [out_node.args[0]]
    head_gm = extract(g, head, head_in, head_outs, "Head")
    wiring = {"inputs": [n.name for n in placeholders], "prefix_out": [n.name for n in prefix_out],
              "core_in": [n.name for n in core_in], "core_out": [n.name for n in core_out],
              "head_in": [n.name for n in head_in],
              "core_in_layouts": [batch_layout(n) for n in core_in],
              "core_out_layouts": [batch_layout(n) or BATCH_FIRST for n in core_out]}
    return SpikingNetwork(twin, g, prefix, core, head_gm, wiring, config)


def _replace_module(gm: fx.GraphModule, target: str, new: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, new)


__all__ = ["SpikingNetwork", "build_spiking", "partition", "poisson", "default_memory_budget", "batch_layout", "FORMAT"]

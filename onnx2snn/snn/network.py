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
from ..errors import NonSpikingActivationError, Onnx2SnnError
from . import guard
from ..graph.analysis import analyze
from .neurons import IFNeuron, Repeat, SpikingMaxPool, SpikingModule, cumsum_time
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

    # -- introspection --------------------------------------------------------------
    def spiking_modules(self) -> dict[str, SpikingModule]:
        return {n: m for n, m in self.rewritten.named_modules() if isinstance(m, SpikingModule)}

    def neurons(self) -> dict[str, IFNeuron]:
        return {n: m for n, m in self.rewritten.named_modules() if isinstance(m, IFNeuron)}

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

    def _encode(self, static: dict[str, torch.Tensor], T: int) -> list[torch.Tensor]:
        vals = []
        for name in self.wiring["core_in"]:
            v = static[name]
            if self.config.get("encoding") == "poisson" and name in self.wiring["inputs"]:
                v = poisson(v, T, self.config.get("seed", 0))
            else:
                v = self.repeat(v)
            vals.append(v)
        return vals

    def _head(self, static: dict[str, torch.Tensor], means: Sequence[torch.Tensor]):
        vals = dict(static)
        vals.update(zip(self.wiring["core_out"], means))
        outs = self.head(*[vals[n] for n in self.wiring["head_in"]])
        return outs[0] if len(outs) == 1 else tuple(outs)

    def forward(self, *inputs: torch.Tensor, timesteps: int | None = None):
        T = self.timesteps if timesteps is None else checks.integer("timesteps", timesteps, 1)
        return self.run_timesteps(*inputs, checkpoints=[T])[0]

    def run_timesteps(self, *inputs: torch.Tensor, checkpoints: Sequence[int]):
        """Outputs at each T in ``checkpoints`` from one run to the largest T: the
        running average of the core's outputs is read at each checkpoint."""
        cps = checks.timesteps_list(checkpoints, "checkpoints")
        T = cps[-1]
        guard.check_inputs(self, inputs)
        guard.check_memory(self, T, inputs[0].shape[0], inputs[0].device)
        self._set_time(T, step_mode=False)
        for m in self.spiking_modules().values():
            m.reset()
        static = self._prefix(inputs)
        core_in = self._encode(static, T)
        outs = self.core(*core_in) if self.wiring["core_out"] else ()
        results = {}
        sums = [cumsum_time(o.reshape((T, o.shape[0] // T) + tuple(o.shape[1:]))) for o in outs]
        for t in cps:
            means = [s[t - 1] / t for s in sums]
            results[t] = self._head(static, means)
        return [results[int(t)] for t in checkpoints]

    # step mode -----------------------------------------------------------------------
    def reset(self) -> None:
        """Clear all neuron state (step mode)."""
        for m in self.spiking_modules().values():
            m.reset()
        self._step_state = None

    def step(self, *inputs: torch.Tensor):
        """One timestep of streaming input; returns the average output so far."""
        guard.check_inputs(self, inputs)
        self._set_time(1, step_mode=True)
        st = self._step_state
        if st is None:
            st = self._step_state = {"t": 0, "sums": None, "static": None}
        static = self._prefix(inputs)
        core_in = self._encode(static, 1)
        outs = self.core(*core_in) if self.wiring["core_out"] else ()
        st["t"] += 1
        st["sums"] = [o.clone() for o in outs] if st["sums"] is None else [s + o for s, o in zip(st["sums"], outs)]
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
        }
        extra = {n: {k: v.detach().cpu() for k, v in m.state_dict().items() if k != "theta"}
                 for n, m in self.neurons().items()}
        blob["neuron_state"] = extra
        torch.save(blob, os.fspath(path))
        return os.fspath(path)


def poisson(x: torch.Tensor, T: int, seed: int = 0) -> torch.Tensor:
    """Rate coding: T Bernoulli samples of ``x`` clipped to [0, 1] (as [T*B, ...])."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    p = x.clamp(0, 1).unsqueeze(0).expand((T,) + tuple(x.shape))
    s = (torch.rand(p.shape, generator=g, device=x.device) < p).to(x.dtype)
    return s.reshape((T * x.shape[0],) + tuple(x.shape[1:]))


def build_spiking(twin: fx.GraphModule, thresholds: dict[str, torch.Tensor], config: dict[str, Any]) -> SpikingNetwork:
    """Rewrite the twin (activations -> neurons, max-pools -> spiking max-pools) and cut it
    into prefix / core / head."""
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
        theta = thresholds[node.target].clone()
        cap = 6.0 if isinstance(act, nn.ReLU6) else act.max_val if isinstance(act, nn.Hardtanh) else None
        if cap is not None:
            theta = theta.clamp(max=cap)
        neuron = IFNeuron(theta, alpha=alpha, v_init=config.get("v_init", 0.5),
                          signed=config.get("signed_relu", False) if alpha is None else config.get("signed_ibt", False),
                          activation=copy.deepcopy(act),
                          levels=config.get("levels", 1) if alpha is None else 1)
        _replace_module(g, node.target, neuron)
        neuron_names.add(a.name)
    for a in analysis.nodes:
        if a.part == "core" and a.role == "maxpool" and nodes[a.name].op == "call_module":
            node = nodes[a.name]
            _replace_module(g, node.target, SpikingMaxPool(g.get_submodule(node.target)))
    g.recompile()
    return partition(twin, g, core_names, neuron_names, config)


def partition(twin: fx.GraphModule, g: fx.GraphModule, core_names: set[str], neuron_names: set[str],
              config: dict[str, Any]) -> SpikingNetwork:
    """Cut the rewritten graph ``g`` into static prefix / spiking core / averaged head."""
    # dynamic = downstream of a neuron (or of the input, with rate coding), inside the core
    order = list(g.graph.nodes)
    dynamic: set[fx.Node] = set()
    poisson_enc = config.get("encoding") == "poisson"
    for n in order:
        if n.name not in core_names:
            continue
        if n.name in neuron_names or any(a in dynamic for a in n.all_input_nodes) or \
                (poisson_enc and any(a.op == "placeholder" for a in n.all_input_nodes)):
            dynamic.add(n)
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
              "head_in": [n.name for n in head_in]}
    return SpikingNetwork(twin, g, prefix, core, head_gm, wiring, config)


def _replace_module(gm: fx.GraphModule, target: str, new: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, new)


__all__ = ["SpikingNetwork", "build_spiking", "partition", "poisson", "FORMAT"]

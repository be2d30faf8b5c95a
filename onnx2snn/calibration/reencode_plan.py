"""Per-layer re-encoder choices by sensitivity (``reencode_levels="auto"``).

A re-encoding neuron after a time-averaged op (SiLU, GELU, ...) sends its output back as
spikes; its spikes per step (``levels``) and whether it is two-sided set its events (the largest
share of a SiLU detector's energy) and its error. Layers differ: a coarse encoding moves the
network's output a lot after some layers and hardly at all after others. So instead of one
global level this module chooses per layer, on calibration data, in the twin:

1. every re-encoder's input is quantized as its neuron would encode a constant input over ``T``
   steps (:func:`encode`: the mean output and the events, binary-weighted or unit), with the
   thresholds calibrated for each candidate;
2. the output error (per output channel, squared error / variance, averaged) of the network
   with every re-encoder at the default is the base; each (layer, candidate) is tried alone,
   giving its extra error, and its saved events weighted by the synapses each event drives;
3. with a price ``lam`` on error, each layer takes the candidate of least ``events + lam *
   extra error`` (the default on ties); from the cheapest price up, the first plan whose summed
   extra error keeps the output error within ``(1 + tolerance)`` x the base is checked in one
   run of the whole plan (within 1.5 x the allowed extra) and taken; none: the default
   everywhere (deterministic: fixed data, fixed prices, ties to the default).

Candidates: other levels (15, 7, 3, 1: more where a layer is sensitive, fewer where not) and
*one-sided* (a signed IF neuron, no negative
side: where the op's output is almost never negative, e.g. SiLU's at most -0.28, its negative
spikes cost events and buy little accuracy). The plan is ``{Reencode target: (levels,
one_sided)}``, applied with :func:`apply_plan` (saved with the SNN, so a loaded file rebuilds it).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.fx as fx
from torch import nn

from ..graph.analysis import analyze
from ..graph.averaged import Reencode
from .observers import ActivationObserver

LEVEL_CHOICES = (15, 7, 3, 1)
DEFAULT_TOLERANCE = 0.25  # extra output error allowed, as a share of the default encoding's
PLAN_SAMPLES = 16  # calibration inputs the choice is measured on


def reencoders(twin: fx.GraphModule) -> dict[str, tuple[str, Reencode]]:
    """Node name -> (module target, module) of every re-encoding point, in graph order."""
    return {n.name: (n.target, twin.get_submodule(n.target)) for n in twin.graph.nodes
            if n.op == "call_module" and isinstance(twin.get_submodule(n.target), Reencode)}


def apply_plan(twin: nn.Module, plan: "dict | None") -> nn.Module:
    """Set each named re-encoder's ``levels`` / ``one_sided`` from ``plan`` (target -> [levels,
    one_sided]); in place."""
    for target, (levels, one_sided) in (plan or {}).items():
        m = twin.get_submodule(target)
        m.levels, m.one_sided = int(levels), bool(one_sided)
    return twin


_POPCOUNT = torch.tensor([bin(k).count("1") for k in range(64)], dtype=torch.float32)


def encode(x: torch.Tensor, theta: torch.Tensor, T: int, levels: int, one_sided: bool, v_init: float = 0.5,
           binary: bool = True, count: bool = True) -> tuple[torch.Tensor, "torch.Tensor | None"]:
    """(mean output, events per element or None when not ``count``) of the re-encoding neuron
    (two-sided, or signed IF when ``one_sided``) for the constant input ``x`` over ``T`` steps:
    net count ``N_t = clamp(F_t, N_{t-1} - K, N_{t-1} + K)`` with ``F_t = floor(t x / theta + v_init)``
    (at least 0 one-sided), as :class:`onnx2snn.snn.neurons.IFNeuron` counts; each step sends
    ``|N_t - N_{t-1}|`` spikes, the popcount of it as binary-weighted events."""
    u = x / theta
    n = torch.zeros_like(u)
    events = torch.zeros_like(u) if count else None
    lut = _POPCOUNT.to(u.device) if binary else None
    for t in range(1, T + 1):
        f = torch.floor(u * t + v_init)
        if one_sided:
            f.clamp_(min=0)
        d = f.sub_(n).clamp_(-levels, levels)
        n += d
        if count:
            d = d.abs_()
            events += lut[d.long().clamp_(max=63)] if binary else d
    return n.mul_(theta / T), events


def output_error(ref: list[torch.Tensor], out: list[torch.Tensor]) -> float:
    """Mean over the outputs' channels (axis 1) of squared error / variance of the reference."""
    errs = []
    for r, o in zip(ref, out):
        r2, o2 = (r.reshape(r.shape[0], r.shape[1], -1), o.reshape(o.shape[0], o.shape[1], -1)) if r.dim() > 1 \
            else (r.reshape(-1, 1, 1), o.reshape(-1, 1, 1))
        var = r2.var(dim=(0, 2), unbiased=False) + 1e-12
        errs.append(((o2 - r2) ** 2).mean(dim=(0, 2)) / var)
    return float(torch.cat(errs).mean())


def synapses_per_element(twin: fx.GraphModule, name: str) -> float:
    """Synapses one event of node ``name`` drives: over the weight layers it reaches through
    weight-free ops, output channels per group x kernel taps / stride (Linear: out features)."""
    info = analyze(twin).by_name()
    nodes = {n.name: n for n in twin.graph.nodes}
    total, seen, stack = 0.0, set(), list(nodes[name].users)
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        role = info[n.name].role if n.name in info else None
        if role == "weighted":
            m = twin.get_submodule(n.target) if n.op == "call_module" else None
            w = getattr(m, "weight", None)
            if isinstance(m, nn.modules.conv._ConvNd):
                total += w.shape[0] / m.groups * math.prod(w.shape[2:]) / math.prod(m.stride)
            elif isinstance(w, torch.Tensor):
                total += w.shape[0]
            else:
                total += 1.0
        elif role in ("linear", "maxpool"):
            stack.extend(n.users)
    return max(total, 1.0)


def _outputs(y) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y.float()]
    if isinstance(y, dict):
        y = list(y.values())
    return [t.float() for t in y if isinstance(t, torch.Tensor)]


def plan_reencoders(twin: fx.GraphModule, obs: dict[str, ActivationObserver], data: torch.Tensor,
                    thresholds: Callable[[str, int], torch.Tensor], timesteps: int, default_levels: int,
                    v_init: float = 0.5, tolerance: float = DEFAULT_TOLERANCE, binary: bool = True,
                    choices: Iterable[int] = LEVEL_CHOICES, one_sided: bool = True) -> dict[str, list]:
    """The per-layer plan (see the module doc): Reencode target -> [levels, one_sided].

    ``data``: calibration inputs (a tensor batch, a few dozen); ``thresholds(name, levels)``:
    the [C] thresholds of re-encoder node ``name`` firing ``levels`` spikes per step (as
    calibration computes them). The default (``default_levels``, two-sided) is every layer's
    starting point and the fallback."""
    points = reencoders(twin)
    if not points:
        return {}
    default = (int(default_levels), False)
    options = [(k, False) for k in choices if k != default[0]]
    if one_sided:
        options += [(k, True) for k in choices]
    options = sorted(set(options) - {default}, key=lambda o: (-o[0], o[1]))
    axes = {name: obs[name].axis for name in points}
    theta_cache: dict = {}
    current: dict[str, tuple[int, bool]] = {name: default for name in points}
    events: dict[str, dict] = {name: {} for name in points}

    def theta(name: str, levels: int, like: torch.Tensor) -> torch.Tensor:
        if (name, levels) not in theta_cache:
            theta_cache[(name, levels)] = thresholds(name, levels)
        th, ax = theta_cache[(name, levels)], axes[name]
        if ax is None or th.numel() == 1:
            return th.reshape(-1)[:1].to(like)
        shape = [1] * like.dim()
        shape[ax] = -1
        return th.reshape(shape).to(like)

    hooks = []
    try:
        with torch.no_grad():
            ref = _outputs(twin(data))  # the float reference (no hooks yet)
            hooks = [mod.register_forward_hook(_hook(current, events, name, theta, timesteps, v_init, binary))
                     for name, (_, mod) in points.items()]

            def run() -> float:
                return output_error(ref, _outputs(twin(data)))
            cache: dict = {}
            base = output_error(ref, _outputs(_Recording(twin, cache).run(data)))
            cost = {name: {default: events[name][default] * synapses_per_element(twin, name)} for name in points}
            extra = {name: {default: 0.0} for name in points}
            for name in points:  # each layer alone at each candidate
                fan = cost[name][default] / max(events[name][default], 1e-12)
                dirty = _downstream(twin, name)
                for opt in options:
                    current[name] = opt
                    extra[name][opt] = output_error(ref, _outputs(_Partial(twin, cache, dirty).run(data))) - base
                    cost[name][opt] = events[name][opt] * fan
                current[name] = default
            budget = base * (1 + tolerance)
            plan = dict(current)
            for lam in _prices(cost, base):  # cheapest first; the first plan within the budget, checked
                pick = {name: min([default] + options, key=lambda o, n=name: (cost[n][o] + lam * extra[n][o],
                                                                             o != default))
                        for name in points}
                if base + sum(extra[n][pick[n]] for n in points) > budget:
                    continue
                current.update(pick)
                if run() <= base + 1.5 * (budget - base):
                    plan = dict(pick)
                    break
    finally:
        for h in hooks:
            h.remove()
    return {points[name][0]: [int(lv), bool(side)] for name, (lv, side) in plan.items()}


def _prices(cost: dict, base: float) -> list[float]:
    """Prices of error in events (the Lagrange multiplier), from cheap (any error) to dear (the
    default everywhere), geometric around the scale total cost / base error."""
    scale = sum(max(c.values()) for c in cost.values()) / max(base, 1e-12)
    return [scale * 10 ** (k / 8) for k in range(-24, 49)]


def _hook(current, events, name, theta, timesteps, v_init, binary):
    def hook(m, args, out):
        levels, side = current[name]
        count = (levels, side) not in events[name]
        y, ev = encode(out, theta(name, levels, out), timesteps, levels, side, v_init, binary, count)
        if count:
            events[name][(levels, side)] = float(ev.sum()) / out.shape[0]
        return y
    return hook


class _Partial(fx.Interpreter):
    """Runs the graph reusing cached node outputs except for the nodes in ``dirty`` (a changed
    re-encoder and everything downstream of it)."""

    def __init__(self, gm: fx.GraphModule, cache: dict, dirty: set):
        super().__init__(gm)
        self.cache, self.dirty = cache, dirty

    def run_node(self, n):
        if n.name in self.cache and n.name not in self.dirty:
            return self.cache[n.name]
        return super().run_node(n)


class _Recording(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, cache: dict):
        super().__init__(gm)
        self.cache = cache

    def run_node(self, n):
        out = super().run_node(n)
        if n.op not in ("placeholder", "output"):
            self.cache[n.name] = out
        return out


def _downstream(twin: fx.GraphModule, name: str) -> set:
    nodes = {n.name: n for n in twin.graph.nodes}
    out, stack = set(), [nodes[name]]
    while stack:
        n = stack.pop()
        if n.name not in out:
            out.add(n.name)
            stack.extend(n.users)
    return out


__all__ = ["plan_reencoders", "apply_plan", "encode", "output_error", "synapses_per_element", "reencoders",
           "LEVEL_CHOICES", "DEFAULT_TOLERANCE", "auto_plan"]


def auto_plan(twin: fx.GraphModule, obs: dict[str, ActivationObserver], data, normalization: str,
              percentile: "float | str", timesteps: int, v_init: float, mse_tolerance: float, binary: bool,
              default_levels: int, preprocess=None, samples: "int | None" = None,
              tolerance: "float | None" = None) -> dict[str, list]:
    """The plan for ``reencode_levels="auto"`` from collected statistics ``obs`` and the first
    ``samples`` calibration inputs (the same on every rank), applied to ``twin`` (in place)."""
    from .thresholds import sample_batches

    samples = PLAN_SAMPLES if samples is None else int(samples)
    batches, _ = sample_batches(twin, data, samples, samples, preprocess)
    x = next(iter(batches))

    def thresholds(name: str, levels: int) -> torch.Tensor:
        return obs[name].threshold(normalization, percentile, {"timesteps": timesteps, "levels": levels,
                                                               "v_init": float(v_init), "tolerance": mse_tolerance})
    apply_plan(twin, {t: [default_levels, False] for t, _ in reencoders(twin).values()})
    tolerance = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    plan = plan_reencoders(twin, obs, x, thresholds, timesteps, default_levels, v_init, tolerance, binary)
    apply_plan(twin, plan)
    return plan

"""Time-averaged operators: any op ``f`` run so that its running output average equals ``f``
of its running input averages, exactly, at every step.

With ``S_t`` the running sum of an input (each input its own), step t outputs

    y_t = t f(S_t / t) - (t-1) f(S_{t-1} / (t-1))

(expectation compensation, ECMT), so ``sum_{k<=t} y_k = t f(S_t / t)``. For a product of two
time-varying tensors ``f(a, b) = a b`` this is the exact update of the product of their sums,
``A_t B_t / t - A_{t-1} B_{t-1} / (t-1)``; for a softmax, a LayerNorm, a SiLU it is the op
itself on the averages. The op is exact; the error of the SNN lives in the neurons before
it. Its output is analog (not spikes): a neuron re-encodes it before the next weight layer
(see :mod:`onnx2snn.graph.averaged`).

The engine runs a chunk of ``n`` steps at once: the running sums over the chunk, ``f`` once
on the ``[n*B, ...]`` averages (batched like every other layer), then the differences; the
state carried between chunks (and steps, in step mode) is the sums, the last
``t f(S_t / t)`` and t. Its float work per step is counted by verify (``nonspiking_flops``).

Time x batch lies on each tensor's batch axis (``in_layouts``, ``out_layout``: batch-first but in
layouts such as ``[N, B, D]``), time outermost within the batch, so ``f`` runs on the averages in the layout it was written
for. Where ``f`` is undefined at a step (a division by a running average that is still 0), that
step's value is left out of the running state (:func:`_hold_defined`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.fx as fx

from ..errors import Onnx2SnnError
from .neurons import BATCH_FIRST, SpikingModule, cumsum_time, diff_time, time_folded, time_major


class _Slot:
    """Where the i-th tensor input goes in a call's arguments."""

    def __init__(self, i: int):
        self.i = i

    def __repr__(self) -> str:
        return f"<input {self.i}>"


def _fill(tree: Any, vals: list) -> Any:
    if isinstance(tree, _Slot):
        return vals[tree.i]
    if isinstance(tree, tuple):
        return tuple(_fill(t, vals) for t in tree)
    if isinstance(tree, list):
        return [_fill(t, vals) for t in tree]
    if isinstance(tree, dict):
        return {k: _fill(v, vals) for k, v in tree.items()}
    return tree


class TimeAveraged(SpikingModule):
    """``f(*args, **kwargs)`` as a time-averaged operator.

    ``fn``: a module or function; ``args`` / ``kwargs``: its arguments, with :class:`_Slot`
    where the forward's tensor inputs go; ``kinds``: per input, ``"dynamic"`` (changes from step
    to step: averaged), ``"static"`` (the same at every step, e.g. from the static prefix: used
    as it is) or ``"constant"`` (a weight: not folded with time). Analog mode: ``f`` itself.
    """

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, kinds: list[str], name: str = ""):
        super().__init__()
        self.fn = fn  # a module is registered as a submodule (its weights move with the network)
        self.args, self.kwargs, self.kinds = args, kwargs, list(kinds)
        self.op_name = name or getattr(fn, "__name__", type(fn).__name__)
        self.state: dict[str, Any] | None = None
        # batch (time x batch) layout of each input and of the output (see onnx2snn.graph.layout);
        # None: all batch-first
        self.in_layouts: "list[tuple | None] | None" = None
        self.out_layout = BATCH_FIRST

    def extra_repr(self) -> str:
        return f"{self.op_name}, inputs={self.kinds}"

    def reset(self) -> None:
        super().reset()
        self.state = None

    def call(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``f`` on these inputs (the op as the twin computes it)."""
        y = self.fn(*_fill(self.args, list(inputs)), **_fill(self.kwargs, list(inputs)))
        if not isinstance(y, torch.Tensor):
            raise Onnx2SnnError(f"time-averaged {self.op_name} returned {type(y).__name__}, not a tensor: it has "
                                "no time-averaged form")
        return y

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.analog:
            return self.call(*inputs)
        with torch.no_grad():
            return self._steps(list(inputs))

    @property
    def sum_domain(self) -> bool:
        """``f`` has a sum-domain form (a piecewise-linear fit: ``t f(S / t) = a_i S + t b_i``, the
        segment found by comparing ``S`` with ``t`` x the knots), used on its one dynamic input in
        place of the averages: no scaling by 1 / t nor by t (see :mod:`onnx2snn.graph.piecewise`)."""
        return hasattr(self.fn, "sum_form") and self.kinds == ["dynamic"] and not self.kwargs and \
            len(self.args) == 1 and isinstance(self.args[0], _Slot) and self.layout(0) == tuple(self.out_layout)

    def _steps(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        n = 1 if self.step_mode else self.T
        st = self.state if (self.carry or self.step_mode) else None
        t0 = 0 if st is None else st["t"]
        dyn = [i for i, k in enumerate(self.kinds) if k == "dynamic"]
        ref = inputs[dyn[0]] if dyn else inputs[0]
        t = torch.arange(t0 + 1, t0 + n + 1, dtype=ref.dtype, device=ref.device)
        means = list(inputs)
        sums = {}
        cums = {}
        for i in dyn:
            x = time_major(inputs[i], n, self.layout(i))
            cums[i] = cum = cumsum_time(x, init=None if st is None else st["sums"][i])
            sums[i] = cum[-1].clone()
            if not self.sum_domain:
                means[i] = time_folded(cum / t.reshape((n,) + (1,) * (cum.dim() - 1)), self.layout(i))
        if self.sum_domain:
            g = self.fn.sum_form(cums[0], t)  # t f(S_t / t), from the sums
        else:
            g = time_major(self.call(*means), n, self.out_layout)
            g = g * t.reshape((n,) + (1,) * (g.dim() - 1))  # t f(S_t / t)
        g = _hold_defined(g, None if st is None else st["g"])
        out = diff_time(g, None if st is None else st["g"])
        if self.carry or self.step_mode:
            self.state = {"t": t0 + n, "sums": sums, "g": g[-1].clone()}
        return time_folded(out, self.out_layout)

    def layout(self, i: int) -> "tuple[int, int]":
        """The batch (time x batch) layout of input ``i`` (see :func:`time_major`)."""
        a = self.in_layouts[i] if self.in_layouts is not None and i < len(self.in_layouts) else None
        return BATCH_FIRST if a is None else tuple(a)


def _hold_defined(g: torch.Tensor, before: "torch.Tensor | None") -> torch.Tensor:
    """``g`` ([n, ...] values of ``t f(S_t / t)``) where it is finite; where ``f`` is undefined at a
    step (inf / NaN: a Div, Sqrt or Log whose running-average input is 0 or out of its domain,
    e.g. before a neuron has fired), the last defined value (``before``: the one carried from an
    earlier chunk; 0 at the start). That step then outputs 0 and the running state stays finite,
    so the running output average is ``f`` of the running input averages again at every later
    step where ``f`` is defined, instead of NaN for the rest of the run. In place."""
    finite = torch.isfinite(g)
    if bool(finite.all()):
        return g
    last = torch.zeros_like(g[0]) if before is None else before
    for k in range(g.shape[0]):
        torch.where(finite[k], g[k], last, out=g[k])
        last = g[k]
    return g


def averaged_node(gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node], name: str) -> TimeAveraged:
    """Turn fx ``node`` of ``gm`` into a call of a new :class:`TimeAveraged` module at ``name``
    (in place): its tensor arguments become the module's inputs, the rest stays in the call."""
    if node.op == "call_module":
        fn = gm.get_submodule(node.target)
    elif node.op == "call_method":
        method = node.target

        def fn(self_, *a, **k):
            return getattr(self_, method)(*a, **k)
        fn.__name__ = method
    else:
        fn = node.target
    inputs: list[fx.Node] = []

    def slot(a):
        if a not in inputs:
            inputs.append(a)
        return _Slot(inputs.index(a))
    args = fx.node.map_arg(node.args, slot)
    kwargs = fx.node.map_arg(dict(node.kwargs), slot)
    kinds = ["constant" if a.op == "get_attr" else "dynamic" if a in dynamic else "static" for a in inputs]
    label = node.meta.get("onnx_op") or getattr(fn, "__name__", type(fn).__name__)
    mod = TimeAveraged(fn, args, kwargs, kinds, name=str(label))
    gm.add_submodule(name, mod)
    node.op, node.target = "call_module", name
    node.args, node.kwargs = tuple(inputs), {}
    return mod


__all__ = ["TimeAveraged", "averaged_node"]

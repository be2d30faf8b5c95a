"""Where the batch lies in the spiking core and which nodes change from step to step: the checks
:func:`onnx2snn.snn.network.build_spiking` runs before it cuts the graph (a node whose batch
cannot be followed where time is kept is refused, naming it; thresholds must fit their
neuron's channels) and the layout each value carries afterwards (:func:`batch_layout`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from ..errors import LayoutError, Onnx2SnnError
from ..graph.analysis import analyze
from ..graph.layout import probe_batch_axes
from ..settings import saved
from .neurons import BATCH_FIRST


def _layout(twin: fx.GraphModule, analysis, core_names: set[str], config: dict[str, Any]) -> dict[str, "tuple | None"]:
    """The batch layout of every core node (:func:`onnx2snn.graph.layout.probe_batch_axes`).
    Where an op keeps time (a neuron, a spiking max-pool, a time-averaged op: their inputs and
    outputs) or a value crosses into or out of the spiking core, the batch must be followed:
    a node there whose batch cannot be is refused, naming it (the engine folds time into the
    batch and could not split it again exactly). Weight layers and weight-free ops in between
    work on any layout."""
    order = list(twin.graph.nodes)
    key = (tuple(n.name for n in order), tuple(sorted(core_names)))
    cached = getattr(twin, "_batch_layouts", None)
    if cached is not None and cached[0] == key:  # the settings search builds many SNNs of one twin
        axes, problems = cached[1]
    else:
        axes, problems = probe_batch_axes(twin, core_names)
        twin._batch_layouts = (key, (axes, problems))
    info = analysis.by_name()
    neurons = {a.name for a in analysis.activations() if a.part == "core"}
    dynamic = dynamic_nodes(order, core_names, neurons, saved(config, "encoding") == "poisson")
    keeps_time = {n for n in dynamic if n.name in neurons or info[n.name].role in ("averaged", "maxpool")}

    def sensitive(n: fx.Node) -> bool:
        if n in keeps_time or any(u in keeps_time for u in n.users):
            return True
        if n in dynamic:  # leaves the core
            return any(u not in dynamic for u in n.users)
        return n.name in core_names and any(u in dynamic for u in n.users)  # enters it

    bad = [n for n in order if n.name in problems and sensitive(n)]
    if bad:
        n = bad[0]
        raise LayoutError(
            f"node {n.name!r} (ONNX node {n.meta.get('onnx_node') or '?'}) cannot run in the spiking engine: "
            f"{problems[n.name]}. The engine folds time into the batch, so every op after the first neuron "
            "must treat the samples of a batch apart"
            + (f" ({len(bad) - 1} more node{'s' if len(bad) > 2 else ''}: "
               f"{', '.join(b.name for b in bad[1:6])})" if len(bad) > 1 else "")
            + ". Keep the samples apart in the model (no reduction, sort or softmax over the batch), or move "
            "such ops before the first activation.")
    return axes


def check_layout(twin: fx.GraphModule, config: dict[str, Any]) -> None:
    """Refuse, before any calibration pass, a twin whose batch the engine could not follow
    (the :class:`LayoutError` of :func:`_layout`; the probe is cached on the twin, so building
    the SNN afterwards does not probe again)."""
    analysis = analyze(twin)
    _layout(twin, analysis, {n.name for n in analysis.nodes if n.part == "core"}, config)


def _check_channels(theta: torch.Tensor, axis: "int | None", node: fx.Node) -> "int | None":
    """The neuron's channel axis, checked against its thresholds and input shape."""
    if theta.numel() == 1:
        return axis
    src = node.all_input_nodes[0] if node.all_input_nodes else None
    shape = src.meta.get("shape") if src is not None else None
    if axis is None or (shape is not None and (axis >= len(shape) or shape[axis] != theta.numel())):
        raise Onnx2SnnError(f"{theta.numel()} thresholds for the neuron {node.target!r}, whose input {shape} has "
                            f"{'no channel axis' if axis is None else f'{shape[axis]} channels on axis {axis}'}: the "
                            "thresholds were computed for another graph; convert again")
    return axis


def batch_layout(n: fx.Node) -> "tuple[int, int] | None":
    """The batch layout ``(axis, outer)`` of node ``n``'s value recorded by :func:`build_spiking`
    (None: it has no batch; nodes added later, e.g. by folding, take their first input's)."""
    seen = set()
    while "batch_layout" not in n.meta:
        ins = [a for a in n.all_input_nodes if a.op != "get_attr"]
        if not ins or n in seen:
            return BATCH_FIRST
        seen.add(n)
        n = ins[0]
    return n.meta["batch_layout"]


def dynamic_nodes(order: list[fx.Node], core_names: set[str], neuron_names: set[str],
                  poisson: bool = False) -> set[fx.Node]:
    """The nodes that change from step to step: inside the core, downstream of a neuron (or
    of the input, with rate coding)."""
    dynamic: set[fx.Node] = set()
    for n in order:
        if n.name not in core_names:
            continue
        if n.name in neuron_names or any(a in dynamic for a in n.all_input_nodes) or \
                (poisson and any(a.op == "placeholder" for a in n.all_input_nodes)):
            dynamic.add(n)
    return dynamic


__all__ = ["batch_layout", "dynamic_nodes"]

"""How much memory the spiking core needs and may use: the default budget for a run's chunks
of time (:func:`default_memory_budget`) and the per-sample estimate from the core's shapes
(:func:`core_memory`), which :class:`onnx2snn.snn.network.SpikingNetwork` turns into chunk lengths."""

from __future__ import annotations

import math

import torch
import torch.fx as fx

from .. import checks
from .neurons import IFNeuron


def default_memory_budget(device: "torch.device | str" = "cpu") -> int:
    """Bytes a run may use for the spiking core by default: on CUDA half the free memory
    of the device, on the CPU a quarter of the available memory, at most 256 MiB (on the
    CPU longer chunks buy no speed: ResNet-18 at 224 px, T=64, B=2 runs as fast in chunks
    of 4 steps as in one of 64). The state carried between chunks comes on top when it
    does not fit (two tensors per neuron: see :meth:`SpikingNetwork.memory_per_sample`)."""
    device = torch.device(device)
    free = checks.available_memory(device)
    if free is None:  # not told by the system: assume a modest machine
        free = UNKNOWN_FREE_MEMORY
    if device.type == "cuda":
        return int(free // 2)
    return int(min(free // 4, CPU_BUDGET_CAP))


CPU_BUDGET_CAP = 256 << 20
UNKNOWN_FREE_MEMORY = 4 << 30


def _core_memory(core: fx.GraphModule, full: fx.GraphModule, spiking: set[str]) -> tuple[int, int]:
    """(peak bytes per sample and step, carried state bytes per sample) of the core, from the
    shapes in the full graph's node meta (batch 1). Walks the core in order keeping the live
    tensors: the inputs for the whole call (the caller holds them), every other value until
    its last use (the generated code frees it then); while a neuron runs it may need a copy of
    its input (x + bias), a max-pool its input's cumulative sum. Checked against measured
    peaks in scripts/bench_scale.py (ResNet-18 / -50 at 224 px, YOLOv8n at 640 px)."""
    shapes = {n.name: n.meta.get("shape") for n in full.graph.nodes}

    def size(node: fx.Node) -> int:
        shape = shapes.get(node.name)
        if not shape or not all(isinstance(d, int) for d in shape):
            return max((size(a) for a in node.all_input_nodes), default=0)
        return 4 * math.prod(shape[1:]) if len(shape) > 1 else 4

    nodes = [n for n in core.graph.nodes if n.op != "output"]
    last = {}
    for i, n in enumerate(core.graph.nodes):
        for a in n.all_input_nodes:
            last[a] = i
    live: dict[fx.Node, int] = {}
    peak = state = 0
    for i, n in enumerate(nodes):
        b = size(n) if n.op != "get_attr" else 0
        scratch = 0
        if n.op == "call_module" and n.target in spiking:
            a = n.all_input_nodes[0] if n.all_input_nodes else n
            m = core.get_submodule(n.target)
            if isinstance(m, IFNeuron):  # potential and count carried; x + bias while it runs
                scratch = b if m.use_bias else 0
                state += 2 * b
            else:  # max-pool: the cumulative input while it runs; it and its pooled value carried
                scratch = size(a)
                state += size(a) + b
        live[n] = b
        peak = max(peak, sum(live.values()) + scratch)
        for a in n.all_input_nodes:
            if last.get(a) == i and a.op != "placeholder":
                live.pop(a, None)
    return int(peak), int(state)


core_memory = _core_memory

__all__ = ["default_memory_budget", "core_memory", "CPU_BUDGET_CAP", "UNKNOWN_FREE_MEMORY"]

"""Checks of what a user passes to a :class:`SpikingNetwork` before it runs: the inputs
(tensors of the model's input shape, float) and the memory a run of T steps needs
(the engine folds time into the batch, so it grows with T x batch).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import checks
from ..errors import ConfigError, DataError, ShapeError

# a neuron's multi-step pass holds about this many extra copies of its input (potential, spikes)
NEURON_TEMPORARIES = 2


def check_inputs(snn, inputs: Sequence) -> None:
    """DataError / ShapeError unless ``inputs`` are float tensors of the model's input shapes."""
    shapes = snn.ann.onnx_info.input_shapes
    if len(inputs) != len(shapes):
        raise ConfigError(f"the network takes {len(shapes)} input(s) {list(shapes)}, got {len(inputs)}", "inputs")
    for x, (name, full) in zip(inputs, shapes.items()):
        if not isinstance(x, torch.Tensor):
            raise DataError(f"input {name!r}: expected a torch.Tensor, got {type(x).__name__}; pass "
                            "torch.as_tensor(x)")
        if not x.is_floating_point():
            raise DataError(f"input {name!r} is {str(x.dtype).replace('torch.', '')}: the network takes float input; "
                            "scale it as for the ANN, e.g. x.float() / 255 for 8-bit images (then normalize)")
        want = tuple(int(d) for d in full[1:])
        if x.dim() != len(full) or tuple(x.shape[1:]) != want:
            raise ShapeError(f"input {name!r} has shape {list(x.shape)}, but the network takes [B, "
                             f"{', '.join(map(str, want))}] (it was converted for that input shape)")


def step_bytes(snn) -> int:
    """Estimated peak bytes of one sample at one timestep in the spiking core: the largest
    set of values alive at once while the core runs (from the shapes the importer
    recorded), plus a neuron's temporaries. Cached on the network."""
    cached = getattr(snn, "_step_bytes", None)
    if cached is not None:
        return cached
    shapes = {n.name: n.meta.get("shape") for n in snn.ann.graph.nodes}

    def numel(name: str) -> int:
        s = shapes.get(name)
        if not s:
            return 0
        n = 1
        for d in s[1:]:
            n *= int(d) if isinstance(d, int) and d > 0 else 1
        return n

    nodes = list(snn.core.graph.nodes)
    last_use = {}
    for i, n in enumerate(nodes):
        for a in n.all_input_nodes:
            last_use[a] = i
    live, peak, neuron_max = 0, 0, 0
    neurons = set(snn.spiking_modules())
    for i, n in enumerate(nodes):
        if n.op in ("output", "get_attr"):
            continue
        live += numel(n.name)
        peak = max(peak, live)
        if n.op == "call_module" and n.target in neurons:
            neuron_max = max(neuron_max, max((numel(a.name) for a in n.all_input_nodes), default=0))
        for a in n.all_input_nodes:
            if last_use.get(a) == i:
                live -= numel(a.name)
    snn._step_bytes = 4 * (peak + NEURON_TEMPORARIES * neuron_max)
    return snn._step_bytes


def check_memory(snn, timesteps: int, batch: int, device, warn: bool = True) -> None:
    """Refuse a run of ``timesteps`` on ``batch`` samples that cannot fit in the free memory
    of ``device``; warn (with ``warn``) when it takes most of it."""
    need = step_bytes(snn) * int(timesteps) * int(batch)
    checks.memory(need, f"running T={timesteps} steps on a batch of {batch}",
                  "use fewer timesteps or a smaller batch (the engine holds all T steps of a batch at once)",
                  device, warn=warn)


__all__ = ["check_inputs", "check_memory", "step_bytes"]

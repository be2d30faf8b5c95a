"""Checks of what a user passes to a :class:`SpikingNetwork` before it runs: the inputs
(tensors of the model's input shape, float) and the memory a run needs (one chunk of
steps folded into the batch, plus the state every neuron carries between chunks).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import checks
from ..errors import ConfigError, DataError, ShapeError


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


def check_memory(snn, timesteps: int, batch: int, chunk: int, device, warn: bool = True) -> None:
    """Refuse a run of ``timesteps`` on ``batch`` samples, ``chunk`` steps at a time, that
    cannot fit in the free memory of ``device``; warn (with ``warn``) when it takes most of
    it. The engine holds one chunk of steps plus every neuron's carried state
    (:meth:`SpikingNetwork.memory_per_sample`), so the need grows with the batch and the
    chunk, not with T."""
    per_step, state = snn.memory_per_sample()
    need = int(batch) * (state + per_step * int(chunk))
    checks.memory(need, f"running T={timesteps} steps on a batch of {batch} ({chunk} steps at a time)",
                  "use a smaller batch (or a smaller chunk= / max_memory=)", device, param="batch", warn=warn)


__all__ = ["check_inputs", "check_memory"]

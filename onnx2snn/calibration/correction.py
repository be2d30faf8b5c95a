"""Post-conversion correction (``onnx2snn.correct``) with sample data only (Li et al. 2021, "A free lunch from ANN").

At small T a neuron's mean output drifts from the ANN activation it replaces: spikes
arrive late from the layers before, and the residue left in the membrane is lost. The
drift of each channel's mean is systematic, so it can be measured on a few samples and
cancelled: for each neuron in graph order (so that each sees its already corrected
predecessors), the error ``e_c = mean(ANN activation_c) - mean(SNN output_c)`` (mean over
samples, space and the T steps) is added to the neuron's per-channel input ``bias``
(bias correction), then measured again and moved into its initial potential
``v_init += T e_c / theta_c`` (potential correction). No weights change.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .. import checks
from .. import distributed as dist
from ..distributed import ALONE, Shard, init as init_distributed
from ..errors import ConfigError, DataError
from ..graph.source import module_device
from ..progress import bar as progress_bar
from .thresholds import sample_batches

METHODS = ("bias", "potential", "both")


class _Stop(Exception):
    """Raised by a hook once the observed neuron has run: the rest of the network is not needed."""


def _channel_sums(out: torch.Tensor, axis: "int | None" = 1) -> tuple[torch.Tensor, int]:
    """Per-channel sums of ``out`` along its channel ``axis`` (None: one channel), and the count."""
    if out.dim() > 1 and axis is not None:
        flat = out.detach().movedim(axis, 0).reshape(out.shape[axis], -1)
    else:
        flat = out.detach().reshape(1, -1)
    return flat.double().sum(1).cpu(), flat.shape[1]


def _mean(per_batch: list[tuple[int, tuple]], shard: Shard) -> torch.Tensor:
    """Mean from per-batch (sum, count) over all ranks, summed in batch order: the same
    number on N processes as on one."""
    s, n = 0.0, 0
    for bs, bn in dist.gather_batches(per_batch, shard):
        s, n = s + bs, n + bn
    return (s / n).float()


def ann_channel_means(twin: torch.nn.Module, targets: list[str], batches: list[torch.Tensor],
                      ids: list[int] | None = None, shard: Shard = ALONE,
                      axes: "dict[str, int | None] | None" = None) -> dict[str, torch.Tensor]:
    """Per-channel mean output of each activation module of the twin over ``batches``, along
    each one's channel axis (``axes``: target -> axis, default 1; ``ids``: their indices in the
    one-process stream, for merging over ranks)."""
    axes = axes or {}
    ids = list(range(len(batches))) if ids is None else ids
    sums: dict[str, list] = {t: [] for t in targets}
    current = [0]
    handles = []
    for t in targets:
        def hook(m, args, out, t=t):
            sums[t].append((current[0], _channel_sums(out, axes.get(t, 1))))
        handles.append(twin.get_submodule(t).register_forward_hook(hook))
    try:
        with torch.no_grad():
            for k, xb in zip(ids, batches):
                current[0] = k
                twin(xb)
    finally:
        for h in handles:
            h.remove()
    return {t: _mean(v, shard) for t, v in sums.items()}


def snn_channel_mean(snn, target: str, batches: list[torch.Tensor], timesteps: int, ids: list[int] | None = None,
                     shard: Shard = ALONE) -> torch.Tensor:
    """Per-channel mean output (over samples, space and T steps) of one neuron of ``snn``."""
    neuron = snn.rewritten.get_submodule(target)
    ids = list(range(len(batches))) if ids is None else ids
    acc = [0.0, 0]

    def hook(m, args, out):
        s, n = _channel_sums(out, neuron.channel_axis)
        acc[0] = acc[0] + s
        acc[1] += n
        start, steps = snn.time_window or (0, timesteps)
        if start + steps >= timesteps:  # the last chunk of time: the rest of the network is not needed
            raise _Stop

    per_batch = []
    h = neuron.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for k, xb in zip(ids, batches):
                acc[:] = [0.0, 0]
                try:
                    snn.run_timesteps(xb, checkpoints=[timesteps])
                except _Stop:
                    pass
                per_batch.append((k, tuple(acc)))
    finally:
        h.remove()
        snn.reset()
    return _mean(per_batch, shard)


def neuron_order(snn) -> list[str]:
    """Neuron module targets in graph (topological) order."""
    neurons = snn.neurons()
    return [n.target for n in snn.rewritten.graph.nodes if n.op == "call_module" and n.target in neurons]


def correct(snn, data: Any, timesteps: int | None = None, method: str = "both", batch_size: int = 64,
            limit: int | None = 512, preprocess=None, progress: bool = True, distributed: "bool | None" = None):
    """Correct each neuron's per-channel bias / initial potential for ``timesteps`` (in place).

    Args:
        snn: a :class:`SpikingNetwork` from :func:`onnx2snn.convert`.
        data: sample inputs in any form convert takes (no labels needed).
        timesteps: the T to correct for (default ``snn.timesteps``).
        method: ``"both"`` (bias then potential correction, default), ``"bias"`` or ``"potential"``.
        limit: samples used (the first ``limit``).
        distributed: under ``torchrun`` (default None: when it started this process) each rank
            measures its share of the batches; the per-batch sums are combined in batch order,
            so every rank applies the corrections one process computes.

    Returns ``snn``; ``snn.calibration_report[target]`` holds the mean absolute per-channel
    error of the neuron's mean output against the ANN before and after its correction.
    """
    if not hasattr(snn, "neurons") or not hasattr(snn, "rewritten"):
        raise ConfigError(f"correct needs a SpikingNetwork from onnx2snn.convert, got {type(snn).__name__}", "snn")
    T = snn.timesteps if timesteps is None else checks.integer("timesteps", timesteps, 1)
    method = checks.choice("method", method, METHODS)
    batch_size = checks.integer("batch_size", batch_size, 1)
    limit = checks.optional_integer("limit", limit, 1)
    if data is None:
        raise DataError("correct needs sample data (a tensor, DataLoader, .npz or image folder)")
    dev = module_device(snn)
    shard = init_distributed(distributed, dev)
    batches, _ = sample_batches(snn.ann, data, batch_size, limit, preprocess, "correct data", shard=shard)
    batches = [xb.to(dev) for xb in batches]
    ids = [shard.rank + j * shard.world for j in range(len(batches))]
    samples = dist.all_gather(sum(len(b) for b in batches), shard)
    if sum(samples) == 0:
        raise DataError("correct: the data holds no samples")
    order = neuron_order(snn)
    was_analog = any(m.analog for m in snn.spiking_modules().values())
    snn.set_analog(False)
    target_means = ann_channel_means(snn.ann, order, batches, ids, shard,
                                     {t: snn.rewritten.get_submodule(t).channel_axis for t in order})
    report = {}

    def measure(target):
        return snn_channel_mean(snn, target, batches, T, ids, shard)

    for target in progress_bar(order, desc=f"correcting T={T}", unit="neuron", enabled=progress and shard.rank == 0):
        neuron = snn.rewritten.get_submodule(target)
        want = target_means[target].to(dev)
        err = want - measure(target).to(dev)
        before = float(err.abs().mean())
        if method in ("bias", "both"):
            neuron.set_bias(neuron.bias + err.reshape(neuron.bias.shape))
            if method == "both":
                err = want - measure(target).to(dev)
        if method in ("potential", "both"):
            v0 = neuron.v_init.expand_as(neuron.theta) + T * err.reshape(neuron.theta.shape) / neuron.theta
            neuron.set_v_init(v0.clamp(-1.0, 2.0))
        after = float((want - measure(target).to(dev)).abs().mean())
        report[target] = {"error_before": before, "error_after": after}
    snn.set_analog(was_analog)
    snn.calibration_report = report
    snn.config["calibration"] = {"timesteps": T, "method": method, "samples": sum(samples),
                                 "world_size": shard.world, "samples_per_rank": samples}
    return snn


def calibrate(snn, data: Any, *args, **kwargs):
    """Deprecated name of :func:`correct` (``calibrate`` is what thresholds are: this corrects
    biases and initial potentials)."""
    warnings.warn("onnx2snn.calibrate(snn, ...) is now onnx2snn.correct(snn, ...); the old name will be removed",
                  DeprecationWarning, stacklevel=2)
    return correct(snn, data, *args, **kwargs)


__all__ = ["correct", "calibrate", "ann_channel_means", "snn_channel_mean", "neuron_order", "METHODS"]

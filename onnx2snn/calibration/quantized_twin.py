"""The twin with single-step neurons: each activation of the spiking core replaced by a
:class:`~onnx2snn.calibration.quantized.QuantizedNeuron` (what :func:`onnx2snn.finetune`
trains) and put back afterwards with the learned thresholds; :func:`quantized_twin`, a
noise-free copy that computes what the T-step SNN computes for constant input."""

from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.fx as fx
from torch import nn

from ..errors import NonSpikingActivationError, Onnx2SnnError
from ..graph.analysis import analyze
from ..graph.layout import channel_axes
from ..graph.source import module_device
from .quantized import QuantizedNeuron, cap_neuron, finetuned_levels


def core_activations(twin: fx.GraphModule) -> list[str]:
    """Module targets of the activations in the spiking core (what becomes a neuron)."""
    analysis = analyze(twin)
    acts = {k: v for k, v in analysis.non_convertible.items() if any(a.name in v for a in analysis.activations())}
    if acts:
        raise NonSpikingActivationError(acts)
    nodes = {n.name: n for n in twin.graph.nodes}
    targets = [nodes[a.name].target for a in analysis.activations() if a.part == "core"]
    if not targets:
        raise Onnx2SnnError("the model has no activations in its spiking part: nothing to fine-tune")
    return targets


def _set_module(gm: nn.Module, target: str, new: nn.Module) -> None:
    parent, _, attr = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, attr, new)


def insert_quantized(twin: fx.GraphModule, thresholds: Mapping[str, torch.Tensor], timesteps: int,
                     noise: str | None, noise_scale: float, per_channel: bool, v_init: float = 0.5,
                     generator: torch.Generator | None = None, levels: int = 1) -> dict[str, QuantizedNeuron]:
    """Replace each core activation of ``twin`` (in place) by a :class:`QuantizedNeuron`, its
    thresholds along the activation's channel axis (:func:`onnx2snn.graph.layout.channel_axes`)."""
    neurons = {}
    names = {n.target: n.name for n in twin.graph.nodes if n.op == "call_module"}
    axes = channel_axes(twin, [names[t] for t in thresholds])
    for target, theta in thresholds.items():
        act = twin.get_submodule(target)
        alpha = None
        if isinstance(act, nn.LeakyReLU):
            alpha = float(act.negative_slope)
        elif isinstance(act, nn.PReLU):
            raise Onnx2SnnError(f"{target}: fine-tuning PReLU (learned slopes) is not supported; "
                                "replace it by LeakyReLU or ReLU")
        theta, k = cap_neuron(act, theta.clone(), levels)
        q = QuantizedNeuron(theta, timesteps, activation=act, alpha=alpha, v_init=v_init, noise=noise,
                            noise_scale=noise_scale, per_channel=per_channel, generator=generator, levels=k,
                            axis=axes[names[target]])
        dev = module_device(twin)
        _set_module(twin, target, q.to(dev))
        neurons[target] = q
    twin.recompile()
    return neurons


def restore_activations(twin: fx.GraphModule, neurons: Mapping[str, QuantizedNeuron]) -> dict[str, torch.Tensor]:
    """Put the original activations back; return the learned thresholds ([C] each, on CPU)."""
    learned = {}
    for target, q in neurons.items():
        learned[target] = q.thresholds().cpu()
        _set_module(twin, target, q.activation)
    twin.recompile()
    return learned


def _copy_twin(twin: fx.GraphModule) -> fx.GraphModule:
    new = copy.deepcopy(twin)
    for attr in ("onnx_info", "replaced_activations"):
        if hasattr(twin, attr):
            setattr(new, attr, getattr(twin, attr))
    return new


def quantized_twin(twin: fx.GraphModule, timesteps: int, thresholds: Mapping[str, torch.Tensor] | None = None,
                   per_channel: bool = True, levels: int | None = None) -> fx.GraphModule:
    """A copy of ``twin`` with its activations replaced by noise-free single-step neurons
    (thresholds from ``twin.learned_thresholds`` or ``thresholds``; ``levels`` spikes per step,
    by default the fine-tuned ones): what the T-step SNN computes for constant input, e.g. to
    evaluate a fine-tuned model quickly."""
    th = thresholds if thresholds is not None else getattr(twin, "learned_thresholds", None)
    if th is None:
        raise Onnx2SnnError("quantized_twin needs thresholds (a fine-tuned twin or thresholds=)")
    q = _copy_twin(twin)
    if levels is None:
        levels = finetuned_levels(twin)
    insert_quantized(q, {t: th[t] for t in core_activations(q)}, timesteps, None, 0.0, per_channel, levels=levels)
    return q.eval()


__all__ = ["core_activations", "insert_quantized", "restore_activations", "quantized_twin"]

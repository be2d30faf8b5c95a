"""``onnx2snn.finetune``: train the ANN twin for a T-step SNN before converting it.

Each activation of the spiking core is replaced by :class:`QuantizedNeuron`, the exact
single-step model of T steps of its IF / IBT neuron (quantized to T levels, trainable
threshold, straight-through rounding, noise that stands in for the spread of membrane
potentials), and the whole twin is trained with the user's loss. The twin comes back
with its original activations and ``learned_thresholds`` (activation module target ->
[C] theta), which :func:`onnx2snn.convert` uses instead of calibrating, so the T-step SNN
computes what the fine-tuned network computed.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import checks
from .. import distributed as dist
from ..distributed import Shard, init as init_distributed
from ..errors import ConfigError, DataError, NonSpikingActivationError, Onnx2SnnError
from ..graph.analysis import analyze
from ..graph.source import replace_activations as replace_fn, to_twin
from .data import check_fits, input_tensor
from .quantized import QuantizedNeuron, check_noise
from .thresholds import calibrate_thresholds

DEFAULT_NOISE = "gaussian"
DEFAULT_NOISE_SCALE = 0.25


# -- data ------------------------------------------------------------------------------
def _as_tensor(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else torch.as_tensor(a)


def _epoch_batches(data: Any, epoch: int, batch_size: int, gen: torch.Generator) -> Iterable:
    """(x, target) batches of one epoch.

    ``data``: ``(x, y)`` arrays (shuffled with the seeded generator every epoch), a dict
    with ``x`` and ``y``, a callable ``epoch -> iterable of (x, y)`` (fresh data per epoch,
    e.g. generated detection scenes), or an iterable of ``(x, y)`` batches (a DataLoader).
    Targets are passed to the loss as they are (class labels, lists of box dicts, ...).
    """
    if isinstance(data, dict):
        if "x" not in data or "y" not in data:
            raise DataError(f"training data dict needs keys 'x' and 'y', has {sorted(data)}")
        data = (data["x"], data["y"])
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (np.ndarray, torch.Tensor)):
        x, y = input_tensor(data[0], "training data"), data[1]
        y = _as_tensor(y) if isinstance(y, np.ndarray) else y
        if x.dim() == 0 or len(x) == 0:
            raise DataError("training data: empty (no samples)")
        if len(y) != len(x):
            raise DataError(f"training data: {len(x)} inputs but {len(y)} targets")
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            yield x[idx], (y[idx] if isinstance(y, torch.Tensor) else [y[j] for j in idx.tolist()])
        return
    if isinstance(data, (np.ndarray, torch.Tensor)):
        raise DataError("training data needs targets: pass (x, y), a dict {'x', 'y'}, a DataLoader of (x, y) "
                        "batches, or a callable epoch -> iterable of (x, y)")
    source = data(epoch) if callable(data) else data
    try:
        it = iter(source)
    except TypeError:
        raise DataError(f"cannot read training batches from a {type(source).__name__}") from None
    for k, batch in enumerate(it):
        if isinstance(batch, dict):
            batch = (batch.get("x", batch.get("image")), batch.get("y", batch.get("label")))
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise DataError(f"training batch {k}: expected (x, y), got {type(batch).__name__}")
        yield input_tensor(batch[0], f"training batch {k}"), batch[1]


def _inputs_for_calibration(data: Any, limit: int) -> torch.Tensor:
    """Up to ``limit`` training inputs (the first ones, unshuffled) for the initial thresholds."""
    xs, n = [], 0
    for xb, _ in _epoch_batches(data, 0, 256, torch.Generator().manual_seed(0)):
        xs.append(xb)
        n += len(xb)
        if n >= limit:
            break
    if not xs:
        raise DataError("training data: empty (no batches)")
    return torch.cat(xs)[:limit]


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


# -- loss ------------------------------------------------------------------------------
def resolve_loss(loss: "Callable | str | None") -> Callable:
    """The loss callable: a callable as is, a zoo loss / preset name, or cross-entropy."""
    if loss is None:
        return lambda out, y: F.cross_entropy(out, y)
    if callable(loss):
        return loss
    if isinstance(loss, str):
        from .. import zoo

        if loss in zoo.LOSSES:
            return zoo.LOSSES[loss]
        if loss in zoo.PRESETS and zoo.PRESETS[loss].loss:
            return zoo.LOSSES[zoo.PRESETS[loss].loss]
        if loss in ("cross_entropy", "ce") or (loss in zoo.PRESETS and zoo.PRESETS[loss].task == "classification"):
            return lambda out, y: F.cross_entropy(out, y)
        raise ConfigError(f"unknown loss {loss!r}: pass a callable(outputs, targets) -> scalar, a zoo loss "
                            f"({', '.join(sorted(zoo.LOSSES))}), a zoo preset name, or None for cross-entropy", "loss")
    raise ConfigError(f"loss must be a callable, a name or None, not {type(loss).__name__}", "loss")


def _scalar_loss(value: Any) -> torch.Tensor:
    if isinstance(value, (tuple, list)) and value:  # zoo losses return (loss, parts)
        value = value[0]
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or value.dim() > 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise Onnx2SnnError(f"the loss must return a scalar tensor (or (scalar, parts)), got {shape}; "
                            "reduce it, e.g. with .mean()")
    if not value.requires_grad:
        raise Onnx2SnnError("the loss does not depend on the model's outputs (no gradient): check the loss callable")
    return value.reshape(())


# -- the twin with single-step neurons --------------------------------------------------
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
                     generator: torch.Generator | None = None) -> dict[str, QuantizedNeuron]:
    """Replace each core activation of ``twin`` (in place) by a :class:`QuantizedNeuron`."""
    neurons = {}
    for target, theta in thresholds.items():
        act = twin.get_submodule(target)
        alpha = None
        if isinstance(act, nn.LeakyReLU):
            alpha = float(act.negative_slope)
        elif isinstance(act, nn.PReLU):
            raise Onnx2SnnError(f"{target}: fine-tuning PReLU (learned slopes) is not supported; "
                                "replace it by LeakyReLU or ReLU")
        theta = theta.clone()
        if isinstance(act, (nn.ReLU6, nn.Hardtanh)):
            theta = theta.clamp(max=6.0 if isinstance(act, nn.ReLU6) else float(act.max_val))
        q = QuantizedNeuron(theta, timesteps, activation=act, alpha=alpha, v_init=v_init, noise=noise,
                            noise_scale=noise_scale, per_channel=per_channel, generator=generator)
        dev = next(twin.parameters()).device
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


# -- the API ---------------------------------------------------------------------------
def finetune(source: Any, train_data: Any, timesteps: int = 8, epochs: int = 2, loss: "Callable | str | None" = None,
             lr: float = 1e-3, noise: str | None = DEFAULT_NOISE, noise_scale: float = DEFAULT_NOISE_SCALE,
             per_channel: bool = True, calibration_data: Any = None, batch_size: int = 64, seed: int = 0,
             progress: bool = True, device: "str | torch.device | None" = None,
             example_input: torch.Tensor | None = None, input_shape=None,
             replace_activations: Mapping[str, str] | None = None, percentile: "float | str" = 99.99,
             calibration_limit: int = 2048, weight_decay: float = 0.0, grad_clip: float | None = 10.0,
             preprocess=None, distributed: "bool | None" = None) -> fx.GraphModule:
    """Fine-tune an ANN so that it converts to a T-step SNN with (almost) nothing lost.

    Args:
        source: like :func:`onnx2snn.convert`: ONNX path / bytes / ModelProto, an
            ``nn.Module`` with ``example_input``, or a twin (not modified: a copy is trained).
        train_data: ``(x, y)`` arrays, a DataLoader of ``(x, y)`` batches, or a callable
            ``epoch -> iterable of (x, y)``; ``y`` is whatever the loss takes.
        timesteps: the T the SNN will run; each neuron is modelled for exactly this T.
        loss: ``callable(outputs, targets) -> scalar`` (or ``(scalar, parts)``), a zoo
            loss / preset name (``"tiny_yolo"``), or None for cross-entropy.
        noise: ``"gaussian"`` (default), ``"uniform"`` or None; ``noise_scale`` is its
            standard deviation in spikes (units of theta / T), added before rounding.
        per_channel: one trainable theta per channel (True) or per layer.
        calibration_data: inputs for the initial thresholds (channel-wise p``percentile``,
            as convert does); default: the first ``calibration_limit`` training inputs.
        replace_activations: e.g. ``{"SiLU": "ReLU"}``, applied before fine-tuning
            (recorded on the twin so that convert and load repeat it).

    Many processes (``torchrun``, or ``distributed=True``): the twin is wrapped in
    DistributedDataParallel, every rank draws the same seeded batches and takes its share
    of each (batch ``batch_size`` is split over the ranks), and each rank's loss is weighted
    by its share, so that an update equals the one-process update on the whole batch for a
    loss that is a mean over samples. What differs from one process: the training noise
    (each rank draws its own, seeded ``seed + 1 + rank``) and the rounding of the gradient
    sums. Every rank returns the same twin.

    Returns the fine-tuned twin (eval mode) with its original activations,
    ``learned_thresholds`` (activation target -> [C] theta) and ``finetune_info``.
    ``onnx2snn.convert(twin, timesteps=T)`` then needs no calibration data.
    """
    timesteps, epochs = checks.integer("timesteps", timesteps, 1), checks.integer("epochs", epochs, 0)
    lr = checks.real("lr", lr, 0.0, strict_min=True)
    check_noise(noise, noise_scale)
    per_channel, progress = checks.boolean("per_channel", per_channel), checks.boolean("progress", progress)
    batch_size, seed = checks.integer("batch_size", batch_size, 1), checks.integer("seed", seed, 0)
    percentile = checks.percentile(percentile)
    calibration_limit = checks.integer("calibration_limit", calibration_limit, 1)
    weight_decay = checks.real("weight_decay", weight_decay, 0.0)
    grad_clip = checks.optional_real("grad_clip", grad_clip, 0.0, strict_min=True)
    input_shape = checks.shape("input_shape", input_shape)
    replace_activations = checks.activation_map(replace_activations)
    if train_data is None:
        raise DataError("finetune needs train_data: (x, y), a DataLoader of (x, y) batches, or a callable "
                        "epoch -> iterable of (x, y)")
    loss_fn = resolve_loss(loss)
    torch.manual_seed(seed)
    try:
        dev = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r} is not valid: expected 'cpu', 'cuda', 'cuda:0', ...", "device") from None

    base = to_twin(source, example_input, input_shape)
    twin = _copy_twin(base)
    if replace_activations:
        replace_fn(twin, replace_activations)
        twin.replaced_activations = dict(getattr(base, "replaced_activations", None) or {}, **replace_activations)
    twin.to(dev).eval()
    targets = core_activations(twin)
    for p in twin.parameters():
        p.requires_grad_(True)

    first = _inputs_for_calibration(train_data, calibration_limit if calibration_data is None else 1)
    check_fits(first, twin.onnx_info.input_shapes, "training data")
    calib = calibration_data if calibration_data is not None else first
    thresholds, _ = calibrate_thresholds(twin, calib, "channel" if per_channel else "layer", percentile,
                                         batch_size=max(batch_size, 64), preprocess=preprocess, progress=False,
                                         limit=calibration_limit if calibration_data is not None else None)
    shard = init_distributed(distributed, dev)
    noise_gen = torch.Generator().manual_seed(seed + 1 + shard.rank)
    neurons = insert_quantized(twin, {t: thresholds[t] for t in targets}, timesteps, noise, noise_scale,
                               per_channel, generator=noise_gen)

    params = [p for p in twin.parameters() if p.requires_grad]
    model = _data_parallel(twin, dev, shard)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    shuffle_gen = torch.Generator().manual_seed(seed)
    history, t0 = [], time.time()
    steps_per_epoch = _steps(train_data, batch_size)
    sched = None
    if steps_per_epoch and epochs:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    twin.eval()  # BN statistics and dropout frozen: only the weights and thresholds learn
    for q in neurons.values():
        q.noise_on = True
    try:
        for epoch in range(epochs):
            total, count = 0.0, 0
            bar = tqdm(_epoch_batches(train_data, epoch, batch_size, shuffle_gen), total=steps_per_epoch,
                       desc=f"finetune T={timesteps} {epoch + 1}/{epochs}", unit="batch",
                       disable=not progress or shard.rank != 0)
            for xb, yb in bar:
                n_batch = len(xb)
                xb, yb, weight = _my_share(xb, yb, shard)
                out = model(xb.to(dev))
                value = _scalar_loss(loss_fn(out, _to(yb, dev)))
                local = float(value.detach()) * len(xb) * (weight > 0)
                value = value * weight if shard.active else value
                finite = bool(torch.isfinite(value))
                if shard.active:  # every rank stops together
                    finite = bool(dist.all_reduce(torch.tensor(float(finite)), "min", shard) > 0)
                if not finite:
                    raise Onnx2SnnError(f"the loss became {float(value)} in epoch {epoch + 1}: lower lr")
                opt.zero_grad(set_to_none=True)
                value.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                if sched is not None:
                    sched.step()
                total += local if shard.active else float(value.detach()) * len(xb)
                count += n_batch
                bar.set_postfix(loss=f"{float(value.detach()):.4f}")
            if shard.active:
                total = float(dist.all_reduce(torch.tensor(total, dtype=torch.float64), "sum", shard))
            if count == 0:
                raise DataError("training data: empty (no batches)")
            history.append({"epoch": epoch + 1, "loss": total / count, "time_s": round(time.time() - t0, 2)})
    finally:
        for q in neurons.values():
            q.noise_on = False
    twin.learned_thresholds = restore_activations(twin, neurons)
    twin.finetune_info = {"timesteps": int(timesteps), "epochs": int(epochs), "noise": noise,
                          "noise_scale": float(noise_scale), "per_channel": bool(per_channel), "lr": lr,
                          "seed": seed, "history": history, "seconds": round(time.time() - t0, 2),
                          "world_size": shard.world}
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin.eval()


def _data_parallel(twin: nn.Module, dev: torch.device, shard: Shard) -> nn.Module:
    """The twin wrapped in DistributedDataParallel when running on several ranks."""
    if not shard.active:
        return twin
    from torch.nn.parallel import DistributedDataParallel

    ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
    # static graph: the same parameters take part in every step (unused ones are found once)
    return DistributedDataParallel(twin, device_ids=ids, static_graph=True)


def _my_share(xb: torch.Tensor, yb: Any, shard: Shard) -> tuple[torch.Tensor, Any, float]:
    """This rank's part of a batch (the batch split in ``world`` contiguous parts) and the
    weight of its loss, ``world * part / batch``: DDP averages the ranks' gradients, so the
    update is that of the whole batch's mean loss. A rank left with no sample (a batch
    smaller than the world) computes the first sample with weight 0."""
    if not shard.active:
        return xb, yb, 1.0
    n = len(xb)
    lo, hi = n * shard.rank // shard.world, n * (shard.rank + 1) // shard.world
    weight = shard.world * (hi - lo) / n
    if hi == lo:
        lo, hi = 0, 1
    if isinstance(yb, torch.Tensor) and yb.dim() > 0 and len(yb) == n:
        y = yb[lo:hi]
    elif isinstance(yb, (list, tuple)) and len(yb) == n:
        y = type(yb)(yb[lo:hi]) if isinstance(yb, list) else tuple(yb[lo:hi])
    else:
        raise DataError(f"cannot split the targets of a batch of {n} over {shard.world} processes: targets must "
                        f"be a tensor or a list with one entry per sample, got {type(yb).__name__}")
    return xb[lo:hi], y, weight


def _steps(data: Any, batch_size: int) -> int | None:
    if isinstance(data, dict) and "x" in data:
        return -(-len(data["x"]) // batch_size)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (np.ndarray, torch.Tensor)):
        return -(-len(data[0]) // batch_size)
    if callable(data) or isinstance(data, (str, os.PathLike)):
        return None
    try:
        return len(data)
    except TypeError:
        return None


def quantized_twin(twin: fx.GraphModule, timesteps: int, thresholds: Mapping[str, torch.Tensor] | None = None,
                   per_channel: bool = True) -> fx.GraphModule:
    """A copy of ``twin`` with its activations replaced by noise-free single-step neurons
    (thresholds from ``twin.learned_thresholds`` or ``thresholds``): what the T-step SNN
    computes for constant input, e.g. to evaluate a fine-tuned model quickly."""
    th = thresholds if thresholds is not None else getattr(twin, "learned_thresholds", None)
    if th is None:
        raise Onnx2SnnError("quantized_twin needs thresholds (a fine-tuned twin or thresholds=)")
    q = _copy_twin(twin)
    insert_quantized(q, {t: th[t] for t in core_activations(q)}, timesteps, None, 0.0, per_channel)
    return q.eval()


__all__ = ["finetune", "resolve_loss", "insert_quantized", "restore_activations", "core_activations",
           "quantized_twin", "DEFAULT_NOISE", "DEFAULT_NOISE_SCALE"]

"""``onnx2snn.finetune``: train the ANN twin for a T-step SNN before converting it (the loop;
its data in :mod:`onnx2snn.data.training`, the single-step neurons in
:mod:`onnx2snn.calibration.quantized_twin`, the sharding over processes in
:mod:`onnx2snn.distributed`).

Each activation of the spiking core is replaced by :class:`QuantizedNeuron`, the exact
single-step model of T steps of its IF / IBT neuron (quantized to T levels, trainable
threshold, straight-through rounding, noise that stands in for the spread of membrane
potentials), and the whole twin is trained with the user's loss. The twin comes back
with its original activations and ``learned_thresholds`` (activation module target ->
[C] theta), which :func:`onnx2snn.convert` uses instead of calibrating, so the T-step SNN
computes what the fine-tuned network computed.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

import torch
import torch.fx as fx

from .. import checks, settings
from ..config import FinetuneConfig, finetune_settings
from .. import distributed as dist
from ..data.batches import check_fits, default_preprocess, iter_batches
from ..data.training import _epoch_batches, _inputs_for_calibration, _open_path, _steps, _to
from ..data.yolo_format import YoloDataset, is_yolo_source
from ..distributed import init as init_distributed
from ..errors import ConfigError, DataError, Onnx2SnnError
from ..graph.source import replace_activations as replace_fn, to_twin
from ..progress import bar as progress_bar
from ..task import fill_input_shape, resolve_task
from .distill import DistillLoss, MODES as DISTILL_MODES, neuron_inputs, probe, spiking_outputs
from .losses import resolve_loss
from .quantized import check_noise
from .quantized_twin import _copy_twin, core_activations, insert_quantized, quantized_twin, restore_activations
from .thresholds import calibrate_thresholds

_D = settings.FINETUNE.defaults  # every default from the one table (onnx2snn.settings)
DEFAULT_NOISE = _D.noise
DEFAULT_NOISE_SCALE = _D.noise_scale


# -- loss ------------------------------------------------------------------------------
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


# -- the API ---------------------------------------------------------------------------
def finetune(source: Any, train_data: Any, config: "FinetuneConfig | Mapping | None" = None,
             **settings_: Any) -> fx.GraphModule:
    """Fine-tune an ANN so that it converts to a T-step SNN with (almost) nothing lost.
    ``config`` (:class:`onnx2snn.FinetuneConfig`, the training settings) and the keywords
    ``**settings_`` are the rows of :data:`onnx2snn.settings.FINETUNE` (defaults shared with
    ``onnx2snn finetune``); a keyword replaces the field of ``config``; an unknown one is an
    error with the closest name.

    Args:
        source: like :func:`onnx2snn.convert`: ONNX path / bytes / ModelProto, an
            ``nn.Module`` with ``example_input``, or a twin (not modified: a copy is trained).
        train_data: inputs alone (a tensor / array, an image folder, YOLO-format data: a
            ``data.yaml`` or a folder with ``images/``) for distillation, or with targets for
            a task loss: ``(x, y)`` arrays, a DataLoader of ``(x, y)`` batches, a callable
            ``epoch -> iterable of (x, y)``, YOLO data with ``labels/``; ``y`` is whatever
            the loss takes.
        timesteps: the T the SNN will run; each neuron is modelled for exactly this T.
        loss: ``"distill"`` (label-free: match the source network, see
            :mod:`onnx2snn.calibration.distill`; labels are not used),
            ``callable(outputs, targets) -> scalar`` (or ``(scalar, parts)``), a zoo loss /
            preset name (``"tiny_yolo"``), or ``"cross_entropy"``. None (default):
            distillation when the data has no labels or is YOLO-format data, else
            cross-entropy on the labels.
        distill_weight: with a task loss, add this weight times the distillation loss
            (None / 0: task loss only).
        temperature: softmax temperature of the distillation term on classifier logits.
        rate_weight: weight of a spike-rate penalty (the mean number of spikes per neuron and
            step over the whole spiking core, straight-through gradient): trades accuracy for
            fewer spikes, i.e. less energy (0: off).
        feature_weight: weight of the per-neuron feature terms of the distillation (the
            normalised error of each neuron's input against the teacher's; 0: off).
        distill_mode: ``"auto"`` (KL for tensors entering a softmax / sigmoid or classifier
            logits, normalised squared error otherwise) or ``"mse"`` (normalised squared error
            for all).
        noise: ``"gaussian"`` (default), ``"uniform"`` or None; ``noise_scale`` is its
            standard deviation in spikes (units of theta / T), added before rounding.
        per_channel: one trainable theta per channel (True) or per layer.
        calibration_data: inputs for the initial thresholds (channel-wise, ``threshold`` as
            convert takes it, ``"mse"`` for this T); default: the first ``calibration_limit``
            training inputs.
        levels: spikes a neuron may fire per step (as convert takes it); the neuron model
            clips at ``levels * theta`` and convert uses the same by default.
        replace_activations: e.g. ``{"SiLU": "ReLU"}``, applied before fine-tuning
            (recorded on the twin so that convert and load repeat it). The distillation
            teacher keeps the original activations.
        preprocess: ``zoo.Preprocess`` for image paths (default: the model's input size,
            letterboxed for YOLO-format data).

    Many processes (``torchrun``, or ``distributed=True``): the twin is wrapped in
    DistributedDataParallel, every rank draws the same seeded batches and takes its share
    of each (batch ``batch_size`` is split over the ranks), and each rank's loss is weighted
    by its share, so that an update equals the one-process update on the whole batch for a
    loss that is a mean over samples. What differs from one process: the training noise
    (each rank draws its own, seeded ``seed + 1 + rank``) and the rounding of the gradient
    sums. Every rank returns the same twin.

    Returns the fine-tuned twin (eval mode) with its original activations,
    ``learned_thresholds`` (activation target -> [C] theta) and ``finetune_info``
    (settings and the per-epoch history of the loss and its parts).
    ``onnx2snn.convert(twin, timesteps=T)`` then needs no calibration data.
    """
    cfg, run = finetune_settings(config, settings_)
    return _finetune(source, train_data, **cfg.keywords(), **run.keywords())


def _finetune(source: Any, train_data: Any, timesteps, epochs, loss, lr, noise, noise_scale, per_channel,
              calibration_data, batch_size, seed, progress, device, example_input, input_shape, replace_activations,
              threshold, levels, calibration_limit, weight_decay, grad_clip, preprocess, distributed, distill_weight,
              temperature, feature_weight, rate_weight, distill_mode) -> fx.GraphModule:
    """finetune's work on its checked settings (one argument per row of FINETUNE)."""
    timesteps, epochs = checks.integer("timesteps", timesteps, 1), checks.integer("epochs", epochs, 0)
    lr = checks.real("lr", lr, 0.0, strict_min=True)
    check_noise(noise, noise_scale)
    per_channel, progress = checks.boolean("per_channel", per_channel), checks.boolean("progress", progress)
    batch_size, seed = checks.integer("batch_size", batch_size, 1), checks.integer("seed", seed, 0)
    percentile = checks.threshold(threshold)
    levels = checks.integer("levels", levels, 1)
    calibration_limit = checks.integer("calibration_limit", calibration_limit, 1)
    weight_decay = checks.real("weight_decay", weight_decay, 0.0)
    grad_clip = checks.optional_real("grad_clip", grad_clip, 0.0, strict_min=True)
    input_shape = checks.shape("input_shape", input_shape)
    replace_activations = checks.activation_map(replace_activations)
    distill_weight = checks.optional_real("distill_weight", distill_weight, 0.0)
    temperature = checks.real("temperature", temperature, 0.0, strict_min=True)
    feature_weight = checks.real("feature_weight", feature_weight, 0.0)
    rate_weight = checks.real("rate_weight", rate_weight, 0.0)
    distill_mode = checks.choice("distill_mode", distill_mode, DISTILL_MODES)
    if train_data is None:
        raise DataError("finetune needs train_data: inputs alone (a tensor, an image folder, YOLO data) for "
                        "distillation, or (x, y), a DataLoader of (x, y) batches, or a callable epoch -> iterable "
                        "of (x, y) for a task loss")
    if loss not in ("distill", None):
        resolve_loss(loss)  # an unknown name fails before any work
    torch.manual_seed(seed)
    try:
        dev = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r} is not valid: expected 'cpu', 'cuda', 'cuda:0', ...", "device") from None

    input_shape, shape_from = fill_input_shape(source, input_shape, train_data)
    base = to_twin(source, example_input, input_shape)
    info = resolve_task(base, train_data, require=False)  # what the files say, for the record
    if shape_from:
        info.inferred["input shape"] = f"{tuple(input_shape)} ({shape_from})"
    info.announce("finetune", progress)
    if isinstance(train_data, (str, os.PathLike)):
        if preprocess is None:
            preprocess = _default_preprocess(base, train_data)
        train_data = _open_path(train_data, preprocess)
    first = next(iter(_epoch_batches(train_data, 0, batch_size, torch.Generator().manual_seed(seed), preprocess)),
                 None)
    if first is None:
        raise DataError("training data: empty (no batches)")
    has_targets = first[1] is not None
    # loss=None: distillation for inputs alone and for YOLO data (no default detection loss), else cross-entropy
    distill_only = loss == "distill" or (loss is None and (not has_targets or isinstance(train_data, YoloDataset)))
    task_loss = None if distill_only else resolve_loss(loss)
    if not distill_only and not has_targets:
        raise DataError("training data has no targets for the loss: pass (x, y), a DataLoader of (x, y) batches, a "
                        "callable epoch -> iterable of (x, y), labelled YOLO data, or use loss='distill' (no labels)")
    use_distill = distill_only or bool(distill_weight)

    twin = _copy_twin(base)
    if replace_activations:
        replace_fn(twin, replace_activations)
        twin.replaced_activations = dict(getattr(base, "replaced_activations", None) or {}, **replace_activations)
    twin.to(dev).eval()
    targets = core_activations(twin)
    for p in twin.parameters():
        p.requires_grad_(True)

    first = _inputs_for_calibration(train_data, calibration_limit if calibration_data is None else 1, preprocess)
    check_fits(first, twin.onnx_info.input_shapes, "training data")
    calib = calibration_data if calibration_data is not None else first
    thresholds, _ = calibrate_thresholds(twin, calib, "channel" if per_channel else "layer", percentile,
                                         batch_size=max(batch_size, 64), preprocess=preprocess, progress=False,
                                         limit=calibration_limit if calibration_data is not None else None,
                                         timesteps=timesteps, levels=levels)
    dloss = student = teacher = None
    if use_distill:
        outs = spiking_outputs(twin)
        feats = neuron_inputs(twin) if feature_weight else []
        teacher = _copy_twin(base).to(dev).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher = probe(teacher, [t.node for t in outs] + feats, with_outputs=False)
        sample = next(iter_batches(calib, 256, preprocess=preprocess, limit=256)).to(dev)
        dloss = DistillLoss.build(teacher, outs, feats, sample, temperature=temperature,
                                  feature_weight=feature_weight, mode=distill_mode).to(dev)
    shard = init_distributed(distributed, dev)
    noise_gen = torch.Generator().manual_seed(seed + 1 + shard.rank)
    neurons = insert_quantized(twin, {t: thresholds[t] for t in targets}, timesteps, noise, noise_scale,
                               per_channel, generator=noise_gen, levels=levels)
    if use_distill:
        student = probe(twin, [t.node for t in dloss.targets] + dloss.features, with_outputs=task_loss is not None)
    weight = 1.0 if distill_only else float(distill_weight or 0.0)

    params = [p for p in twin.parameters() if p.requires_grad]
    model = dist.data_parallel(student if student is not None else twin, dev, shard)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    shuffle_gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = _steps(train_data, batch_size)
    sched = None
    if steps_per_epoch and epochs:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    twin.eval()  # BN statistics and dropout frozen: only the weights and thresholds learn
    for q in neurons.values():
        q.noise_on = True
        q.track_spikes = rate_weight > 0
    history, t0 = [], time.time()
    try:
        for epoch in range(epochs):
            total, count, sums = 0.0, 0, {}
            bar = progress_bar(_epoch_batches(train_data, epoch, batch_size, shuffle_gen, preprocess),
                               total=steps_per_epoch, desc=f"finetune T={timesteps} {epoch + 1}/{epochs}", unit="batch",
                               enabled=progress and shard.rank == 0)
            for xb, yb in bar:
                n_batch = len(xb)
                xb, yb, share = dist.batch_share(xb, yb, shard)
                xb = xb.to(dev)
                parts = {}
                if student is not None:
                    out = model(xb)
                    with torch.no_grad():
                        ref = teacher(xb)
                    n_out = student.n_outputs
                    value, parts = dloss(out[n_out:], ref)
                    value = weight * value
                    if task_loss is not None:
                        res = out[:n_out]
                        task = _scalar_loss(task_loss(res[0] if n_out == 1 else tuple(res), _to(yb, dev)))
                        parts["task"] = float(task.detach())
                        value = value + task
                else:
                    value = _scalar_loss(task_loss(model(xb), _to(yb, dev)))
                if rate_weight:
                    rate = _spike_rate(neurons.values())
                    parts["rate"] = float(rate.detach())
                    value = value + rate_weight * rate
                local = float(value.detach()) * len(xb) * (share > 0)
                value = value * share if shard.active else value
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
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v * len(xb)
                bar.set_postfix(loss=f"{float(value.detach()):.4f}")
            if shard.active:
                total = float(dist.all_reduce(torch.tensor(total, dtype=torch.float64), "sum", shard))
            if count == 0:
                raise DataError("training data: empty (no batches)")
            history.append({"epoch": epoch + 1, "loss": total / count, **{k: v / count for k, v in sums.items()},
                            "time_s": round(time.time() - t0, 2)})
    finally:
        for q in neurons.values():
            q.noise_on = q.track_spikes = False
            q.spikes = None
    twin.learned_thresholds = restore_activations(twin, neurons)
    kind = "distill" if distill_only else ("task+distill" if use_distill else "task")
    twin.finetune_info = {"timesteps": int(timesteps), "epochs": int(epochs), "loss": kind,
                          "distill_weight": weight if use_distill else 0.0,
                          "temperature": float(temperature), "feature_weight": float(feature_weight),
                          "distill_mode": distill_mode, "rate_weight": float(rate_weight), "noise": noise,
                          "levels": levels, "threshold": percentile,
                          "noise_scale": float(noise_scale), "per_channel": bool(per_channel), "lr": lr,
                          "seed": seed, "history": history, "seconds": round(time.time() - t0, 2),
                          "world_size": shard.world, "inferred": info.to_dict()}
    if use_distill:
        twin.finetune_info["distill_targets"] = [{"node": t.node, "kind": t.kind} for t in dloss.targets]
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin.eval()


def _default_preprocess(twin: fx.GraphModule, path: Any):
    """The model's input size and channels, pixels in [0, 1]; letterboxed for YOLO-format data."""
    return default_preprocess(twin.onnx_info.input_shapes, letterbox=is_yolo_source(path))


def _spike_rate(neurons) -> torch.Tensor:
    """Spikes per neuron and step over all neurons of the last forward pass (differentiable)."""
    fired = [q.spikes for q in neurons if q.spikes is not None]
    return sum(s for s, _ in fired) / max(1, sum(n for _, n in fired))


__all__ = ["finetune", "resolve_loss", "insert_quantized", "restore_activations", "core_activations",
           "quantized_twin", "DEFAULT_NOISE", "DEFAULT_NOISE_SCALE"]

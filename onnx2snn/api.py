"""The conversion API: ``onnx2snn.convert(source, calibration_data, timesteps=32, ...)``."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from . import checks, settings
from .calibration.correction import calibrate
from .data.batches import check_preprocess
from .calibration.quantized import finetuned_levels
from .calibration.reencode_plan import auto_plan
from .calibration.thresholds import (NORMALIZATIONS, calibrate_thresholds, check_mse_tolerance, collect_statistics,
                                     statistics_summary, thresholds_from_statistics)
from .errors import ConfigError, DataError
from .graph.analysis import analyze, prepare_averaged
from .graph.averaged import REENCODE_LEVELS
from .graph.piecewise import piecewise_activations
from .graph.source import copy_twin, replace_activations as replace_activations_fn, to_twin
from .snn.network import SpikingNetwork, build_spiking
from .task import fill_input_shape, resolve_task

ENCODINGS, REENCODE_CODINGS = settings.ENCODINGS, settings.REENCODE_CODINGS
_D = settings.CONVERT.defaults  # every default from the one table (onnx2snn.settings)


def convert(source: Any, calibration_data: Any = _D.calibration_data, timesteps: int = _D.timesteps,
            normalization: str = _D.normalization, percentile: "float | str" = _D.percentile,
            example_input: torch.Tensor | None = _D.example_input, input_shape=_D.input_shape,
            replace_activations: Mapping[str, str] | None = _D.replace_activations, encoding: str = _D.encoding,
            v_init: float = _D.v_init, signed_relu: bool = _D.signed_relu, signed_ibt: bool = _D.signed_ibt,
            levels: int | None = _D.levels, batch_size: int = _D.batch_size,
            calibration_limit: int | None = _D.calibration_limit, preprocess=_D.preprocess,
            progress: bool = _D.progress, seed: int = _D.seed, calibrate_timesteps: int | None = _D.calibrate_timesteps,
            distributed: "bool | None" = _D.distributed, mse_tolerance: float = _D.mse_tolerance,
            target: float | None = _D.target, objective: str = _D.objective,
            tune_options: Mapping[str, Any] | None = _D.tune_options,
            reencode_levels: "int | str" = _D.reencode_levels, reencode_coding: str = _D.reencode_coding,
            pwl_activations: bool = _D.pwl_activations) -> SpikingNetwork:
    """Convert an ANN into a spiking network. Each setting's default, command-line flag and help
    are in :data:`onnx2snn.settings.CONVERT`.

    Args:
        source: ONNX path / bytes / ModelProto, an ``nn.Module`` (with ``example_input``)
            or a twin from :func:`import_onnx`.
        calibration_data: sample inputs (float tensor, numpy array, DataLoader, ``.npz``
            with ``x``, or an image folder) that set the thresholds; samples must have the
            model's input shape (checked before any work).
        preprocess: :class:`onnx2snn.zoo.Preprocess` for image files and uint8 arrays
            (scaled by 1/255, then normalized); default for image files: resize to the
            model's input size, pixels in [0, 1].
        timesteps: default T of ``snn(x)``; ``snn(x, timesteps=8)`` overrides it.
        normalization: ``"channel"`` (one threshold per channel, default) or ``"layer"``.
        percentile: how thresholds are set from the calibration histograms: ``"mse"``
            (default: per channel, the threshold with the least squared error between the
            activation and what its neuron represents in ``timesteps`` steps, firing up to
            ``levels`` spikes per step: rare large values clipped against resolution for the
            many small ones; measured against the percentiles in
            docs/examples/thresholds/), a percentile in (0, 100] of the activation values,
            or ``"max"``.
        replace_activations: e.g. ``{"SiLU": "ReLU"}`` for activations with no spiking form
            (then fine-tune: the network no longer computes what it was trained for).
        encoding: ``"direct"`` (analog input every step) or ``"poisson"`` (rate coding of
            inputs in [0, 1]).
        v_init: initial membrane potential as a fraction of theta (0.5 rounds instead of
            flooring).
        signed_relu: negative spikes for ReLU neurons that take back over-firing (default:
            it matters most at small T, see scripts/accuracy_vs_t.py; a fine-tuned twin needs
            it too). ``False`` gives spikes of one sign only.
        signed_ibt: the same take-back for LeakyReLU/PReLU (IBT) neurons, in both
            directions (default).
        levels: multi-level firing: neurons may fire up to this many spikes per step (ReLU
            and, on the positive side, LeakyReLU / PReLU; 1 = ordinary binary spikes, as NIR
            and most hardware take them). Default None: a fine-tuned twin's levels, else 2: the
            second spike takes the values above theta instead of clipping them, and ``"mse"``
            thresholds are searched for that neuron (finer steps, more spikes; both measured in
            docs/examples/thresholds/).
        calibrate_timesteps: after converting, correct each neuron's per-channel bias and
            initial potential for this T on ``calibration_data`` (:func:`onnx2snn.calibrate`).
        distributed: under ``torchrun`` (default None: when it started this process) or with
            True, each rank observes its share of the calibration batches and the statistics are
            merged exactly: every rank builds the SNN one process builds.
        mse_tolerance: with ``percentile="mse"``, take per channel the largest theta whose
            squared error is at most ``1 + mse_tolerance`` times the least: fewer spikes for a
            little error (default 0; the trade is measured in docs/examples/thresholds/).
        reencode_levels: spikes per step (each way) of the two-sided neurons that turn a
            time-averaged operator's output (SiLU, GELU, LayerNorm, attention, ...) back into
            spikes; their thresholds are searched for it (the measured choice is in
            docs/examples/averaged/). ``"auto"``: chosen per layer (spikes per step, one-sided
            or not) by how much each layer's coarser encoding moves the output on calibration
            data (:mod:`onnx2snn.calibration.reencode_plan`).
        reencode_coding: how a re-encoding neuron sends ``k`` spikes in a step: ``"binary"``
            (default: thresholds theta, 2 theta, 4 theta, ...: one event per set bit of k, a
            multi-threshold neuron) or ``"unit"`` (k events of theta). The same values and
            outputs; verify counts the events (and so SynOps and energy) accordingly.
        pwl_activations: SiLU / GELU evaluated as 16-segment piecewise-linear fits (compares,
            a multiply and an add per element instead of exp and divide; max abs error < 0.01,
            :mod:`onnx2snn.graph.piecewise`): less float work in time-averaged operators, an
            approximation (off by default).
        target: search the settings (T up to ``timesteps``, threshold method and its parameter,
            levels unless given, v_init, ``reencode_levels`` when the network has time-averaged
            operators) for the cheapest SNN that keeps this share in (0, 1] of
            the ANN's quality on a held-out part of ``calibration_data`` (top-1 agreement; for
            detectors, with ``tune_options={"postprocess": ...}``, mAP against the ANN's detections;
            else 1 - relative output error), or on labeled ``tune_options={"validation": ...}`` (the
            real top-1 / mAP over the ANN's). The result, with every candidate and the frontier,
            is ``snn.tune_report`` (:class:`onnx2snn.tuning.TuneReport`); the choice is stored in
            ``snn.config["tune"]``. See :mod:`onnx2snn.tuning.search`.
        objective: with ``target``: ``"energy"`` (least estimated energy) or ``"timesteps"``
            (smallest T, then least energy).
        tune_options: with ``target``: postprocess, metric, holdout, max_validation,
            percentiles, mse_tolerances, levels, reencode_levels, v_init, allow_unsigned,
            max_runs, early_stop, gt_confidence, margin (held-out quality a point needs above
            ``target``; default ``"auto"``: one standard error on the held-out samples or
            objects), validation (labeled data as :func:`onnx2snn.verify` takes it; at most
            max_validation samples) and annotations, seed (see
            :data:`onnx2snn.tuning.search.DEFAULTS`).

    A twin from :func:`onnx2snn.finetune` brings ``learned_thresholds``: they are used
    as they are (no calibration data needed), as is its ``replaced_activations``.
    """
    timesteps = checks.integer("timesteps", timesteps, 1)
    normalization = checks.choice("normalization", normalization, NORMALIZATIONS)
    percentile = checks.percentile(percentile)
    input_shape = checks.shape("input_shape", input_shape)
    replace_activations = checks.activation_map(replace_activations)
    encoding = checks.choice("encoding", encoding, ENCODINGS)
    v_init = checks.real("v_init", v_init, -1.0, 2.0)
    signed_relu, signed_ibt = checks.boolean("signed_relu", signed_relu), checks.boolean("signed_ibt", signed_ibt)
    levels = None if levels is None else checks.integer("levels", levels, 1)
    mse_tolerance = check_mse_tolerance(mse_tolerance, percentile)
    if isinstance(reencode_levels, str) and reencode_levels != "auto":
        raise ConfigError(f"reencode_levels={reencode_levels!r}: pass spikes per step (an integer >= 1) or "
                          "'auto' (chosen per layer on the calibration data)", "reencode_levels")
    reencode_levels = reencode_levels if reencode_levels == "auto" else \
        checks.integer("reencode_levels", reencode_levels, 1)
    reencode_coding = checks.choice("reencode_coding", reencode_coding, REENCODE_CODINGS)
    pwl_activations = checks.boolean("pwl_activations", pwl_activations)
    batch_size = checks.integer("batch_size", batch_size, 1)
    calibration_limit = checks.optional_integer("calibration_limit", calibration_limit, 1)
    calibrate_timesteps = checks.optional_integer("calibrate_timesteps", calibrate_timesteps, 1)
    seed = checks.integer("seed", seed, 0)
    progress = checks.boolean("progress", progress)
    distributed = None if distributed is None else checks.boolean("distributed", distributed)
    if example_input is not None and not isinstance(example_input, torch.Tensor):
        raise ConfigError(f"example_input must be a torch.Tensor (a batch of the model's input shape), got "
                          f"{type(example_input).__name__}", "example_input")
    check_preprocess(preprocess)
    given_tune_options = tune_options
    if target is not None:
        from .tuning import check_objective, check_options, check_target

        target, objective, tune_options = check_target(target), check_objective(objective), check_options(tune_options)
    elif objective != _D.objective or tune_options is not None:
        raise ConfigError("objective= and tune_options= steer the settings search: pass target= too (e.g. 0.99)",
                          "target")
    if calibrate_timesteps and calibration_data is None:
        raise DataError("calibrate_timesteps needs calibration_data (sample inputs, no labels)")
    torch.manual_seed(seed)
    input_shape, shape_from = fill_input_shape(source, input_shape, calibration_data)
    twin = to_twin(source, example_input, input_shape)
    # what the files say (metadata, data, outputs): a detector's search scores mAP with its decoder
    given_post = None if tune_options is None else tune_options["postprocess"]
    info = resolve_task(twin, calibration_data if tune_options is None or tune_options["validation"] is None
                        else tune_options["validation"], None if tune_options is None else tune_options["annotations"],
                        postprocess=given_post, require=target is not None)
    if target is not None and given_post is None and info.postprocess is not None:
        from .tuning import check_options

        tune_options = check_options({**(given_tune_options or {}), "postprocess": info.postprocess})
    if shape_from:
        info.inferred["input shape"] = f"{tuple(input_shape)} ({shape_from})"
    info.announce("convert", progress)
    replace_activations = replace_activations or getattr(twin, "replaced_activations", None)
    if twin is source:  # never change the caller's twin (it may be a teacher)
        twin = copy_twin(twin)
    twin = replace_activations_fn(twin, replace_activations)
    twin = piecewise_activations(twin, pwl_activations)  # an approximation, off by default
    analyze(twin).check_spiking()  # every blocker (activations and other ops) at once, before calibration
    # spikes back after time-averaged ops, before weights
    twin = prepare_averaged(twin, REENCODE_LEVELS if reencode_levels == "auto" else reencode_levels)
    learned = getattr(twin, "learned_thresholds", None)  # set by onnx2snn.finetune
    levels_given = levels is not None  # with target: levels are searched unless given
    if levels is None:
        levels = finetuned_levels(twin)
    config = settings.snn_config(timesteps=timesteps, normalization=normalization, percentile=percentile,
                                 replace_activations=replace_activations, encoding=encoding, v_init=v_init,
                                 signed_relu=signed_relu, signed_ibt=signed_ibt, levels=levels, seed=seed,
                                 mse_tolerance=mse_tolerance, reencode_levels=reencode_levels,
                                 reencode_coding=reencode_coding, pwl_activations=pwl_activations)
    if info.inferred or info.task:
        config["inferred"] = {"task": info.task, "postprocess": info.postprocess if isinstance(info.postprocess, str)
                              else None, "names": info.names, "said": dict(info.inferred)}
        if shape_from:
            config["inferred"].update(input_shape=list(input_shape), input_shape_from=shape_from)
    report = None
    nodes = {n.name: n for n in twin.graph.nodes}
    missing = [] if learned is None else [a.name for a in analyze(twin).activations()
                                          if a.part == "core" and nodes[a.name].target not in learned]
    if target is not None:  # the settings searched on held-out calibration data (onnx2snn.tuning)
        from .tuning import search

        found = search(twin, calibration_data, config, target, objective, levels if levels_given else None,
                       tune_options, batch_size, calibration_limit, preprocess, progress, distributed)
        thresholds, stats, config, report = found.thresholds, found.stats, found.config, found.report
    elif learned is not None and not missing:
        thresholds, stats = {k: v.clone() for k, v in learned.items()}, {}
    elif learned is not None and calibration_data is None:
        raise DataError(f"the fine-tuned twin has time-averaged operators whose re-encoding neurons "
                        f"({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}) need thresholds: pass "
                        "calibration_data (sample inputs)")
    elif learned is not None:  # the learned thresholds, the re-encoding neurons' calibrated
        thresholds, stats = calibrate_thresholds(twin, calibration_data, normalization, percentile, batch_size,
                                                 calibration_limit, preprocess, progress, distributed=distributed,
                                                 timesteps=timesteps, v_init=v_init, levels=levels,
                                                 mse_tolerance=mse_tolerance)
        thresholds.update({k: v.clone() for k, v in learned.items()})
    elif reencode_levels == "auto" and calibration_data is not None:  # per-layer re-encoders by sensitivity
        obs = collect_statistics(twin, calibration_data, batch_size, calibration_limit, preprocess, progress,
                                 distributed)
        config["reencode_plan"] = auto_plan(twin, obs, calibration_data, normalization, percentile, timesteps,
                                            v_init, mse_tolerance, reencode_coding == "binary", REENCODE_LEVELS,
                                            preprocess)
        thresholds = thresholds_from_statistics(twin, obs, normalization, percentile, timesteps, v_init, levels,
                                                mse_tolerance)
        stats = statistics_summary(twin, obs)
    else:
        thresholds, stats = calibrate_thresholds(twin, calibration_data, normalization, percentile, batch_size,
                                                 calibration_limit, preprocess, progress, distributed=distributed,
                                                 timesteps=timesteps, v_init=v_init, levels=levels,
                                                 mse_tolerance=mse_tolerance)
    snn = build_spiking(twin, thresholds, config)
    snn.calibration_stats = stats
    snn.tune_report = report
    if calibrate_timesteps:
        calibrate(snn, calibration_data, timesteps=calibrate_timesteps, batch_size=batch_size,
                  limit=calibration_limit or 512, preprocess=preprocess, progress=progress, distributed=distributed)
    return snn


__all__ = ["convert"]

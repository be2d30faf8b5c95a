"""The conversion API: ``onnx2snn.convert(source, calibration_data, config=None, *, target=None,
search=None, **settings)``, each setting from the table in :mod:`onnx2snn.settings`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import torch

from . import checks, settings
from .calibration.correction import correct
from .config import ConvertConfig, ConvertRun, SearchConfig, convert_settings
from .data.batches import check_preprocess
from .calibration.quantized import finetuned_levels
from .calibration.reencode_plan import auto_plan
from .calibration.thresholds import (NORMALIZATIONS, calibrate_thresholds, check_mse_tolerance, collect_statistics,
                                     statistics_summary, thresholds_from_statistics)
from .errors import ConfigError, DataError
from .graph.analysis import analyze, prepare_averaged
from .graph.averaged import REENCODE_LEVELS, drop_operand_reencoders, has_operand_reencoders
from .graph.piecewise import piecewise_activations
from .graph.source import copy_twin, replace_activations as replace_activations_fn, to_twin
from .snn.batch_axes import check_layout
from .snn.network import SpikingNetwork, build_spiking
from .task import fill_input_shape, resolve_task

ENCODINGS, REENCODE_CODINGS = settings.ENCODINGS, settings.REENCODE_CODINGS


def convert(source: Any, calibration_data: Any = None, config: "ConvertConfig | Mapping | None" = None, *,
            target: float | None = None, search: "SearchConfig | Mapping | None" = None,
            **settings_: Any) -> SpikingNetwork:
    """Convert an ANN into a spiking network. ``config`` (:class:`onnx2snn.ConvertConfig`, what is
    saved with the SNN) and the keywords ``**settings_`` are the rows of
    :data:`onnx2snn.settings.CONVERT` (each with its default, command-line flag and help); a
    keyword replaces the field of ``config``; an unknown one is an error with the closest name.
    ``convert(m, x, timesteps=8)`` and ``convert(m, x, ConvertConfig(timesteps=8))`` are the same.

    Args:
        source: ONNX path / bytes / ModelProto, an ``nn.Module`` (with ``example_input``)
            or a twin from :func:`import_onnx`.
        calibration_data: sample inputs (float tensor, numpy array, DataLoader, ``.npz``
            with ``x``, or an image folder) that set the thresholds; samples must have the
            model's input shape (checked before any work).
        config: a :class:`onnx2snn.ConvertConfig`, a dict of its fields, or a saved
            ``snn.config`` (to convert again as before); keywords replace its fields.
        preprocess: :class:`onnx2snn.zoo.Preprocess` for image files and uint8 arrays
            (scaled by 1/255, then normalized); default for image files: resize to the
            model's input size, pixels in [0, 1].
        timesteps: default T of ``snn(x)``; ``snn(x, timesteps=8)`` overrides it.
        normalization: ``"channel"`` (one threshold per channel, default) or ``"layer"``.
        threshold: how thresholds are set from the calibration histograms: ``"mse"``
            (default: per channel, the threshold with the least squared error between the
            activation and what its neuron represents in ``timesteps`` steps, firing up to
            ``levels`` spikes per step: rare large values clipped against resolution for the
            many small ones; measured against the percentiles in
            docs/examples/thresholds/), a percentile in (0, 100] of the activation values,
            or ``"max"`` (``percentile=`` is its old name).
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
        correct_timesteps: after converting, correct each neuron's per-channel bias and
            initial potential for this T on ``calibration_data`` (:func:`onnx2snn.correct`;
            ``calibrate_timesteps=`` is its old name).
        distributed: under ``torchrun`` (default None: when it started this process) or with
            True, each rank observes its share of the calibration batches and the statistics are
            merged exactly: every rank builds the SNN one process builds.
        mse_tolerance: with ``threshold="mse"``, take per channel the largest theta whose
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
        spike_products: re-encode both operands of every product of two computed tensors
            (attention's ``Q K^T`` and ``A V``, gates) into spikes, so the product runs as an
            increment product whose work follows the operands' events (an approximation: the
            operands are quantised; measured in the bench's JSON). Default False (exact products).
        pwl_activations: SiLU / GELU evaluated as 16-segment piecewise-linear fits (compares,
            a multiply and an add per element instead of exp and divide; max abs error < 0.01,
            :mod:`onnx2snn.graph.piecewise`): less float work in time-averaged operators, an
            approximation (off by default).
        target: search the settings (T up to ``timesteps``, threshold method and its parameter,
            levels unless given, v_init, ``reencode_levels`` when the network has time-averaged
            operators) for the cheapest SNN that keeps this share in (0, 1] of
            the ANN's quality on a held-out part of ``calibration_data`` (top-1 agreement; for
            detectors, with ``search={"postprocess": ...}``, mAP against the ANN's detections;
            else 1 - relative output error), or on labeled ``search={"validation": ...}`` (the
            real top-1 / mAP over the ANN's). The result, with every candidate and the frontier,
            is ``snn.tune_report`` (:class:`onnx2snn.tuning.TuneReport`); the choice is stored in
            ``snn.config["tune"]``. See :mod:`onnx2snn.tuning.search`.
        objective: with ``target``: ``"energy"`` (least estimated energy) or ``"timesteps"``
            (smallest T, then least energy).
        search: with ``target``: a :class:`onnx2snn.SearchConfig` (or a dict of its fields:
            the rows of :data:`onnx2snn.settings.SEARCH`): postprocess, metric, holdout, max_validation,
            percentiles, mse_tolerances, levels, reencode_levels, v_init, allow_unsigned,
            max_runs, early_stop, gt_confidence, margin (held-out quality a point needs above
            ``target``; default ``"auto"``: one standard error on the held-out samples or
            objects), validation (labeled data as :func:`onnx2snn.verify` takes it; at most
            max_validation samples) and annotations, seed, spike_products (the choices tried
            for ``spike_products`` where the network has products of two computed tensors;
            default ``(False, True)``: exact products first). ``tune_options=`` is its old name.

    A twin from :func:`onnx2snn.finetune` brings ``learned_thresholds``: they are used
    as they are (no calibration data needed), as is its ``replaced_activations``.
    """
    cfg, run, sc, steered = convert_settings(config, search, settings_)
    cfg, run = check_config(cfg), check_run(run)
    if target is not None:
        from .tuning import check_options, check_target

        target, options = check_target(target), check_options(sc)
    elif steered:
        raise ConfigError("objective= and search= steer the settings search: pass target= too (e.g. 0.99)",
                          "target")
    if run.correct_timesteps and calibration_data is None:
        raise DataError("correct_timesteps needs calibration_data (sample inputs, no labels)")
    torch.manual_seed(cfg.seed)
    input_shape, shape_from = fill_input_shape(source, run.input_shape, calibration_data)
    twin = to_twin(source, run.example_input, input_shape)
    # what the files say (metadata, data, outputs): a detector's search scores mAP with its decoder
    given_post = None if target is None else options["postprocess"]
    info = resolve_task(twin, calibration_data if target is None or options["validation"] is None
                        else options["validation"], None if target is None else options["annotations"],
                        postprocess=given_post, require=target is not None)
    if target is not None and given_post is None and info.postprocess is not None:
        from .tuning import check_options

        options = check_options(replace(sc, postprocess=info.postprocess))
    if shape_from:
        info.inferred["input shape"] = f"{tuple(input_shape)} ({shape_from})"
    info.announce("convert", run.progress)
    replaced = cfg.replace_activations or getattr(twin, "replaced_activations", None)
    if twin is source:  # never change the caller's twin (it may be a teacher)
        twin = copy_twin(twin)
    twin = replace_activations_fn(twin, replaced)
    twin = piecewise_activations(twin, cfg.pwl_activations)  # an approximation, off by default
    analyze(twin).check_spiking()  # every blocker (activations and other ops) at once, before calibration
    learned = getattr(twin, "learned_thresholds", None)  # set by onnx2snn.finetune
    if learned is not None and calibration_data is None and target is None:
        cfg = replace(cfg, encode_analog="off")  # encoders need data for their thresholds: a fine-tuned twin needs none
    # spikes back after time-averaged ops and before weights (and before products' operands: spike_products)
    searched_products = target is not None and True in options["spike_products"]  # the search may choose them
    twin = prepare_averaged(twin, REENCODE_LEVELS if cfg.reencode_levels == "auto" else cfg.reencode_levels,
                            cfg.encode_analog, cfg.spike_products or searched_products)
    levels_given = cfg.levels is not None  # with target: levels are searched unless given
    cfg = replace(cfg, replace_activations=replaced, levels=cfg.levels if levels_given else finetuned_levels(twin))
    saved_config = cfg.to_dict()
    check_layout(twin, saved_config)  # a batch the engine cannot follow: refused before calibrating
    if info.inferred or info.task:
        saved_config["inferred"] = {"task": info.task, "postprocess": info.postprocess
                                    if isinstance(info.postprocess, str) else None, "names": info.names,
                                    "said": dict(info.inferred)}
        if shape_from:
            saved_config["inferred"].update(input_shape=list(input_shape), input_shape_from=shape_from)
    report = None
    nodes = {n.name: n for n in twin.graph.nodes}
    missing = [] if learned is None else [a.name for a in analyze(twin).activations()
                                          if a.part == "core" and nodes[a.name].target not in learned]
    if target is not None:  # the settings searched on held-out calibration data (onnx2snn.tuning)
        from .tuning import search as run_search

        found = run_search(twin, calibration_data, cfg, target, options["objective"],
                           cfg.levels if levels_given else None, options, run.batch_size, run.calibration_limit,
                           run.preprocess, run.progress, run.distributed)
        thresholds, stats, report = found.thresholds, found.stats, found.report
        saved_config = {**saved_config, **found.config}
        if not settings.saved(saved_config, "spike_products") and has_operand_reencoders(twin):  # exact chosen
            twin = drop_operand_reencoders(twin)
        twin = piecewise_activations(twin, settings.saved(saved_config, "pwl_activations"))  # as chosen
    elif learned is not None and not missing:
        thresholds, stats = {k: v.clone() for k, v in learned.items()}, {}
    elif learned is not None and calibration_data is None:
        raise DataError(f"the fine-tuned twin has time-averaged operators whose re-encoding neurons "
                        f"({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}) need thresholds: pass "
                        "calibration_data (sample inputs)")
    elif cfg.reencode_levels == "auto" and calibration_data is not None:  # per-layer re-encoders by sensitivity
        obs = collect_statistics(twin, calibration_data, run.batch_size, run.calibration_limit, run.preprocess,
                                 run.progress, run.distributed)
        saved_config["reencode_plan"] = auto_plan(twin, obs, calibration_data, cfg.normalization, cfg.threshold,
                                                  cfg.timesteps, cfg.v_init, cfg.mse_tolerance,
                                                  cfg.reencode_coding == "binary", REENCODE_LEVELS, run.preprocess)
        thresholds = thresholds_from_statistics(twin, obs, cfg.normalization, cfg.threshold, cfg.timesteps, cfg.v_init,
                                                cfg.levels, cfg.mse_tolerance)
        stats = statistics_summary(twin, obs)
    else:  # calibrated (a fine-tuned twin: only its re-encoding neurons, the rest learned)
        thresholds, stats = calibrate_thresholds(twin, calibration_data, cfg.normalization, cfg.threshold,
                                                 run.batch_size, run.calibration_limit, run.preprocess, run.progress,
                                                 distributed=run.distributed, timesteps=cfg.timesteps,
                                                 v_init=cfg.v_init, levels=cfg.levels, mse_tolerance=cfg.mse_tolerance)
        thresholds.update({k: v.clone() for k, v in (learned or {}).items()})
    snn = build_spiking(twin, thresholds, saved_config)
    snn.calibration_stats = stats
    snn.tune_report = report
    if run.correct_timesteps:
        correct(snn, calibration_data, timesteps=run.correct_timesteps, batch_size=run.batch_size,
                limit=run.calibration_limit or 512, preprocess=run.preprocess, progress=run.progress,
                distributed=run.distributed)
    return snn


def check_config(cfg: ConvertConfig) -> ConvertConfig:
    """Every field of ``cfg`` in its canonical type, or a ConfigError naming it."""
    threshold = checks.threshold(cfg.threshold)
    return replace(cfg, timesteps=checks.integer("timesteps", cfg.timesteps, 1),
                   normalization=checks.choice("normalization", cfg.normalization, NORMALIZATIONS),
                   threshold=threshold, replace_activations=checks.activation_map(cfg.replace_activations),
                   encoding=checks.choice("encoding", cfg.encoding, ENCODINGS),
                   v_init=checks.real("v_init", cfg.v_init, -1.0, 2.0),
                   signed_relu=checks.boolean("signed_relu", cfg.signed_relu),
                   signed_ibt=checks.boolean("signed_ibt", cfg.signed_ibt),
                   levels=None if cfg.levels is None else checks.integer("levels", cfg.levels, 1),
                   seed=checks.integer("seed", cfg.seed, 0),
                   mse_tolerance=check_mse_tolerance(cfg.mse_tolerance, threshold),
                   reencode_levels=check_reencode_levels(cfg.reencode_levels),
                   reencode_coding=checks.choice("reencode_coding", cfg.reencode_coding, REENCODE_CODINGS),
                   encode_analog=checks.choice("encode_analog", cfg.encode_analog, settings.ENCODE_ANALOG),
                   spike_products=checks.boolean("spike_products", cfg.spike_products),
                   pwl_activations=checks.boolean("pwl_activations", cfg.pwl_activations))


def check_reencode_levels(value: Any) -> "int | str":
    """Spikes per step of the re-encoding neurons (an integer >= 1) or ``"auto"`` (per layer)."""
    if isinstance(value, str):
        if value != "auto":
            raise ConfigError(f"reencode_levels={value!r}: pass spikes per step (an integer >= 1) or 'auto' (chosen "
                              "per layer on the calibration data)", "reencode_levels")
        return value
    return checks.integer("reencode_levels", value, 1)


def check_run(run: ConvertRun) -> ConvertRun:
    """The run-time matters checked."""
    if run.example_input is not None and not isinstance(run.example_input, torch.Tensor):
        raise ConfigError(f"example_input must be a torch.Tensor (a batch of the model's input shape), got "
                          f"{type(run.example_input).__name__}", "example_input")
    check_preprocess(run.preprocess)
    return replace(run, input_shape=checks.shape("input_shape", run.input_shape),
                   batch_size=checks.integer("batch_size", run.batch_size, 1),
                   calibration_limit=checks.optional_integer("calibration_limit", run.calibration_limit, 1),
                   correct_timesteps=checks.optional_integer("correct_timesteps", run.correct_timesteps, 1),
                   progress=checks.boolean("progress", run.progress),
                   distributed=None if run.distributed is None else checks.boolean("distributed", run.distributed))


__all__ = ["convert", "check_config", "check_run", "ConvertConfig", "ConvertRun", "SearchConfig"]

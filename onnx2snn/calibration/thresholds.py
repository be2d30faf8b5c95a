"""Thresholds from sample data: per-channel statistics of every core activation's input."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from .. import checks, settings
from ..config import keywords
from ..data.batches import (check_fits, check_preprocess, iter_batches, peek, progress_samples,  # noqa: F401
                            resolve_preprocess, sample_count)
from ..distributed import ALONE, Shard, init as init_distributed
from ..errors import ConfigError, DataError, Onnx2SnnError
from ..graph.analysis import analyze
from ..graph.source import module_device
from .observers import ActivationObserver, calibrate_twin
from .quantized import search_levels

NORMALIZATIONS = settings.NORMALIZATIONS
DEFAULT_PERCENTILE = settings.PERCENTILE  # per channel, the least squared error at the T of the conversion


def sample_batches(twin: fx.GraphModule, data: Any, batch_size: int, limit: int | None, preprocess,
                   where: str = "calibration data", shard: Shard = ALONE):
    """Input batches of ``data`` (this rank's share under ``shard``) checked against the
    twin's input shape on the first batch (before any long work), and the number of
    samples they hold when known."""
    shapes = getattr(getattr(twin, "onnx_info", None), "input_shapes", {}) or {}
    preprocess = resolve_preprocess(data, preprocess, shapes)
    total = sample_count(data, limit, preprocess)
    if total is not None and shard.active:
        total = shard.samples(total, batch_size)
    batches = iter_batches(data, batch_size, preprocess=preprocess, limit=limit, shard=shard)
    if shard.active and total == 0:  # a rank with no batch of its own still joins the merge
        return iter(()), 0
    first, batches = peek(batches)
    check_fits(first, shapes, where)
    return batches, total


def check_mse_tolerance(mse_tolerance: Any, percentile: "float | str") -> float:
    """``mse_tolerance`` as a float >= 0; a nonzero one only with ``percentile="mse"`` (the
    least-squared-error search it widens), an error otherwise rather than ignored."""
    mse_tolerance = checks.real("mse_tolerance", mse_tolerance, 0.0)
    if mse_tolerance and percentile != "mse":
        raise ConfigError(f"mse_tolerance applies to threshold='mse' (the least-squared-error search), "
                          f"not threshold={percentile!r}", "mse_tolerance")
    return mse_tolerance


def calibrate_thresholds(twin: fx.GraphModule, data: Any, normalization: str = "channel",
                         threshold: "float | str" = DEFAULT_PERCENTILE, batch_size: int = 64, limit: int | None = None,
                         preprocess=None, progress: bool = True, distributed: "bool | None" = None,
                         timesteps: int = 32, v_init: float = 0.5, levels: int = 1, mse_tolerance: float = 0.0,
                         **old: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """Per-channel thresholds for every activation in the spiking core, from sample data.

    ``threshold`` (``percentile=``, its old name, warns): a percentile in (0, 100], ``"max"``, or
    ``"mse"``: the threshold that
    minimises the squared error of a neuron (initial potential ``v_init``) firing at most
    ``levels`` spikes per step (capped neurons: one, see :func:`search_levels`) over
    ``timesteps`` steps, from the same histograms (see :meth:`StreamingHistogram.mse_threshold`);
    ``mse_tolerance`` > 0 takes the largest threshold whose error is within that fraction of the
    least (fewer spikes for a little error).

    Returns (activation module target -> [C] theta, target -> statistics summary).
    Under ``torchrun`` (or ``distributed=True``) each rank observes its share of the
    batches and the statistics are merged exactly: every rank gets the thresholds one
    process gets on the same data (see :mod:`onnx2snn.distributed`)."""
    if not isinstance(twin, fx.GraphModule):
        raise ConfigError(f"calibrate_thresholds needs a twin from onnx2snn.import_onnx, got {type(twin).__name__}",
                          "twin")
    if old:  # percentile=, the old name of threshold=
        threshold = keywords("calibrate_thresholds", old, ("threshold",), stacklevel=3)["threshold"]
    normalization = checks.choice("normalization", normalization, NORMALIZATIONS)
    percentile = checks.threshold(threshold)
    batch_size = checks.integer("batch_size", batch_size, 1)
    limit = checks.optional_integer("limit", limit, 1)
    progress = checks.boolean("progress", progress)
    timesteps, levels = checks.integer("timesteps", timesteps, 1), checks.integer("levels", levels, 1)
    mse_tolerance = check_mse_tolerance(mse_tolerance, percentile)  # all checked before the data pass
    obs = collect_statistics(twin, data, batch_size, limit, preprocess, progress, distributed)
    return thresholds_from_statistics(twin, obs, normalization, percentile, timesteps, v_init, levels,
                                      mse_tolerance), statistics_summary(twin, obs)


def collect_statistics(twin: fx.GraphModule, data: Any, batch_size: int = 64, limit: int | None = None,
                       preprocess=None, progress: bool = True, distributed: "bool | None" = None
                       ) -> dict[str, ActivationObserver]:
    """One pass over ``data``: an observer (histograms) on the input of every core activation,
    keyed by node name (merged over ranks under ``torchrun``). Thresholds for any setting
    then come from them without another pass (:func:`thresholds_from_statistics`)."""
    analysis = analyze(twin)
    names = [a.name for a in analysis.activations() if a.part == "core"]
    if not names:
        raise Onnx2SnnError("the model has no activations in its spiking part: nothing to convert")
    if data is None:
        raise DataError("calibration data is required (sample inputs: a tensor, DataLoader, .npz or image folder)")
    shard = init_distributed(distributed, module_device(twin))
    batches, total = sample_batches(twin, data, batch_size, limit, preprocess, shard=shard)
    return calibrate_twin(twin, names, progress_samples(batches, total, "calibrating", progress and shard.rank == 0),
                          progress=False, shard=shard)


def thresholds_from_statistics(twin: fx.GraphModule, obs: dict[str, ActivationObserver], normalization: str,
                               percentile: "float | str", timesteps: int, v_init: float, levels: int,
                               mse_tolerance: float = 0.0) -> dict[str, torch.Tensor]:
    """Activation module target -> [C] theta for one setting, from collected observers (cheap:
    histograms only, no data)."""
    nodes = {n.name: n for n in twin.graph.nodes}

    def neuron(target: str) -> dict:
        return {"timesteps": timesteps, "levels": search_levels(twin.get_submodule(target), levels),
                "v_init": float(v_init), "tolerance": mse_tolerance}
    return {nodes[k].target: o.threshold(normalization, percentile, neuron(nodes[k].target)) for k, o in obs.items()}


def statistics_summary(twin: fx.GraphModule, obs: dict[str, ActivationObserver]) -> dict:
    """Activation module target -> statistics summary (samples, max, percentiles)."""
    nodes = {n.name: n for n in twin.graph.nodes}
    return {nodes[k].target: o.summary() for k, o in obs.items()}


__all__ = ["DEFAULT_PERCENTILE", "calibrate_thresholds", "collect_statistics", "thresholds_from_statistics",
           "statistics_summary", "check_mse_tolerance", "sample_batches", "resolve_preprocess"]

"""Thresholds from sample data: per-channel statistics of every core activation's input."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.fx as fx

from ..errors import DataError, Onnx2SnnError
from ..graph.analysis import analyze
from .data import dataset_length, iter_batches
from .observers import calibrate_twin


def calibrate_thresholds(twin: fx.GraphModule, data: Any, normalization: str = "channel",
                         percentile: "float | str" = 99.99, batch_size: int = 64, limit: int | None = None,
                         preprocess=None, progress: bool = True, timesteps: int | None = None
                         ) -> tuple[dict[str, torch.Tensor], dict]:
    """Per-channel thresholds for every activation in the spiking core, from sample data."""
    analysis = analyze(twin)
    nodes = {n.name: n for n in twin.graph.nodes}
    names = [a.name for a in analysis.activations() if a.part == "core"]
    if not names:
        raise Onnx2SnnError("the model has no activations in its spiking part: nothing to convert")
    if data is None:
        raise DataError("calibration data is required (sample inputs: a tensor, DataLoader, .npz or image folder)")
    n = dataset_length(data) if not isinstance(data, (str, os.PathLike)) else None
    total = None if n is None else (-(-n // batch_size) if isinstance(data, torch.Tensor) else n)
    obs = calibrate_twin(twin, names, iter_batches(data, batch_size, preprocess=preprocess, limit=limit),
                         progress=progress, total=total)
    if percentile == "mse" and not timesteps:
        raise Onnx2SnnError("percentile='mse' sets thresholds for a number of timesteps: pass timesteps=")
    thresholds = {nodes[k].target: o.threshold(normalization, percentile, timesteps) for k, o in obs.items()}
    stats = {nodes[k].target: o.summary() for k, o in obs.items()}
    return thresholds, stats


__all__ = ["calibrate_thresholds"]

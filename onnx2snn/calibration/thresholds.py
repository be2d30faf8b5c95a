"""Thresholds from sample data: per-channel statistics of every core activation's input."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.fx as fx

from ..distributed import init as init_distributed
from ..errors import DataError, Onnx2SnnError
from ..graph.analysis import analyze
from .data import dataset_length, iter_batches
from .observers import calibrate_twin


def calibrate_thresholds(twin: fx.GraphModule, data: Any, normalization: str = "channel",
                         percentile: "float | str" = 99.99, batch_size: int = 64, limit: int | None = None,
                         preprocess=None, progress: bool = True, distributed: "bool | None" = None
                         ) -> tuple[dict[str, torch.Tensor], dict]:
    """Per-channel thresholds for every activation in the spiking core, from sample data.

    Under ``torchrun`` (or ``distributed=True``) each rank observes its share of the
    batches and the statistics are merged exactly: every rank gets the thresholds one
    process gets on the same data (see :mod:`onnx2snn.distributed`)."""
    analysis = analyze(twin)
    nodes = {n.name: n for n in twin.graph.nodes}
    names = [a.name for a in analysis.activations() if a.part == "core"]
    if not names:
        raise Onnx2SnnError("the model has no activations in its spiking part: nothing to convert")
    if data is None:
        raise DataError("calibration data is required (sample inputs: a tensor, DataLoader, .npz or image folder)")
    shard = init_distributed(distributed, next(twin.parameters()).device)
    n = dataset_length(data) if not isinstance(data, (str, os.PathLike)) else None
    total = None if n is None else (-(-n // batch_size) if isinstance(data, torch.Tensor) else n)
    if total is not None and shard.active:
        total = len(shard.batches(total))
    obs = calibrate_twin(twin, names, iter_batches(data, batch_size, preprocess=preprocess, limit=limit, shard=shard),
                         progress=progress, total=total, shard=shard)
    thresholds = {nodes[k].target: o.threshold(normalization, percentile) for k, o in obs.items()}
    stats = {nodes[k].target: o.summary() for k, o in obs.items()}
    return thresholds, stats


__all__ = ["calibrate_thresholds"]

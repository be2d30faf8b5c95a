"""Saving and loading spiking networks: ``snn.save(path)`` writes, :func:`load` reads.

The file holds the source ONNX bytes, the conversion config, the twin's weights and the
neurons' thresholds and state; loading re-imports the ONNX, replays the activation
replacements and rebuilds (and re-folds) the network. Read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os

import torch

from ..errors import InvalidModelError
from ..graph.importer import import_onnx
from ..graph.source import replace_activations
from .fold import fold_thresholds
from .network import FORMAT, SpikingNetwork, build_spiking


def load(path: "str | os.PathLike") -> SpikingNetwork:
    """Load a SpikingNetwork written by ``snn.save(path)`` (weights_only, safe)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InvalidModelError(f"{path}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InvalidModelError(f"{path}: not a readable onnx2snn file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InvalidModelError(f"{path}: not an onnx2snn spiking network (format {FORMAT} expected); "
                                "write one with snn.save(path)")
    config = json.loads(blob["config"])
    shapes = {k: tuple(v) for k, v in json.loads(blob["input_shapes"]).items()}
    twin = import_onnx(bytes(blob["onnx"].numpy().tobytes()), input_shape=shapes)
    twin = replace_activations(twin, config.get("replace_activations"))
    twin.load_state_dict(blob["ann_state"])
    folded = config.pop("folded", False)
    snn = build_spiking(twin, blob["thresholds"], config)
    for n, m in snn.neurons().items():
        if n in blob["neuron_state"]:
            m.load_state_dict({**blob["neuron_state"][n], "theta": blob["thresholds"][n]}, strict=False)
    if folded:
        snn = fold_thresholds(snn)
    return snn


__all__ = ["load"]

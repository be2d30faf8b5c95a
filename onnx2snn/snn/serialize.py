"""Saving and loading spiking networks: ``snn.save(path)`` writes, :func:`load` reads.

The file holds the source ONNX bytes, the conversion config, the twin's weights and the
neurons' thresholds and state; loading re-imports the ONNX, replays the activation
replacements and rebuilds (and re-folds) the network. Read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import zipfile

import onnx
import torch

from ..errors import ConfigError, InvalidModelError
from ..settings import saved
from ..calibration.reencode_plan import apply_plan
from ..graph.analysis import prepare_averaged
from ..graph.averaged import REENCODE_LEVELS
from ..graph.importer import import_onnx
from ..graph.piecewise import piecewise_activations
from ..graph.source import replace_activations
from .fold import fold_thresholds
from .network import FORMAT, SpikingNetwork, build_spiking


def describe_file(path: str) -> str:
    """What a file that is not an onnx2snn network is, in words, with what to do instead."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if zipfile.is_zipfile(path):
        names = zipfile.ZipFile(path).namelist()
        if any(n.endswith("data.pkl") for n in names):
            return ("a PyTorch checkpoint (torch.save), not an onnx2snn spiking network. Export the model to ONNX "
                    "(onnx2snn.export_onnx(model, example_input, 'model.onnx')) and convert that file "
                    "(onnx2snn convert model.onnx --calib ...)")
        if any(n.endswith(".npy") for n in names):
            return "a numpy .npz archive (data, not a network); pass it as --calib / --data"
        return "a zip archive, not an onnx2snn spiking network"
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(head if len(head) < (1 << 16) else open(path, "rb").read())
        is_onnx = proto.HasField("graph") and len(proto.graph.node) > 0
    except Exception:  # noqa: BLE001 - not protobuf
        is_onnx = False
    if is_onnx:
        return ("an ONNX model, not a spiking network: convert it first (onnx2snn convert "
                f"{os.path.basename(path)} --calib data.npz -o model.snn.pt, or onnx2snn.convert(path, data))")
    if head[:1] in (b"{", b"["):
        return "a JSON file, not an onnx2snn spiking network (write one with snn.save(path))"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        return "an image, not an onnx2snn spiking network"
    if not head:
        return "an empty file"
    return "not an onnx2snn spiking network (unknown content, or a truncated file); write one with snn.save(path)"


def load(path: "str | os.PathLike") -> SpikingNetwork:
    """Load a SpikingNetwork written by ``snn.save(path)`` (weights_only, safe)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"load takes a file path, got {type(path).__name__}", "path")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InvalidModelError(f"{path}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch's message advises unsafe loading: say what the file is instead
        raise InvalidModelError(f"{path}: {describe_file(path)}") from None
    if not isinstance(blob, dict) or "format" not in blob:
        raise InvalidModelError(f"{path}: {describe_file(path)}")
    if blob.get("format") != FORMAT:
        raise InvalidModelError(f"{path}: an onnx2snn file of format {blob.get('format')!r}; this version reads "
                                f"{FORMAT!r}. Convert the ONNX model again with this version")
    missing = [k for k in ("onnx", "input_shapes", "config", "ann_state", "thresholds", "neuron_state")
               if k not in blob]
    if missing:
        raise InvalidModelError(f"{path}: an incomplete onnx2snn file (missing {missing}); save it again")
    config = json.loads(blob["config"])
    shapes = {k: tuple(v) for k, v in json.loads(blob["input_shapes"]).items()}
    twin = import_onnx(bytes(blob["onnx"].numpy().tobytes()), input_shape=shapes)
    levels = saved(config, "reencode_levels")
    twin = piecewise_activations(replace_activations(twin, saved(config, "replace_activations")),
                                 saved(config, "pwl_activations"))
    twin = prepare_averaged(twin, REENCODE_LEVELS if levels == "auto" else levels, saved(config, "encode_analog"),
                            saved(config, "spike_products"))
    apply_plan(twin, config.get("reencode_plan"))  # per-layer re-encoders (reencode_levels="auto")
    twin.load_state_dict(blob["ann_state"])
    folded = config.pop("folded", False)
    # files written before thresholds followed the feature axis: every neuron's on dim 1
    axes = json.loads(blob["channel_axes"]) if "channel_axes" in blob else {k: 1 for k in blob["thresholds"]}
    snn = build_spiking(twin, blob["thresholds"], config, channel_axes=axes)
    for n, m in snn.neurons().items():
        if n in blob["neuron_state"]:
            m.load_state_dict({**blob["neuron_state"][n], "theta": blob["thresholds"][n]}, strict=False)
    if folded:
        snn = fold_thresholds(snn)
    return snn


__all__ = ["load"]

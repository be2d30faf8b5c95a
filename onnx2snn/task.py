"""What the files say: the task, the decoder, the class names and the input size, inferred from
the ONNX metadata (:mod:`onnx2snn.graph.metadata`), the data (a YOLO ``data.yaml`` / folder or a
COCO json is detection data) and the model's outputs (one ``[B, 4 + nc, anchors]`` output is a
YOLOv8-style detection head), for convert, the settings search, verify, finetune and the CLI.

What the user passes wins; what is inferred is said once (one line on stderr unless quiet) and
stored (``snn.config["inferred"]``, ``report.config["inferred"]``). A conflict (detection data
with a classifier, a postprocess with ``task="classification"``, a ``classify`` model on
detection data) is a :class:`ConfigError` naming both sides, never a silent choice.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError, DataError
from .graph.metadata import ULTRALYTICS_TASKS, ModelMetadata, read_metadata

TASKS = ("classification", "detection")
DETECTION_DECODER = "yolov8"  # the library's own decoder of [B, 4 + nc, anchors] (Ultralytics' validation)
STRIDE_SETS = ((8, 16, 32), (8, 16, 32, 64), (4, 8, 16))  # P3-P5, P3-P6, P2-P4 heads


# -- the data ------------------------------------------------------------------------------
def detection_data(data: Any, annotations: Any = None) -> str | None:
    """Why ``data`` is detection data (a short description), or None when it is not known to be:
    YOLO-format data (a data.yaml, a folder with images/ + labels/), a COCO json, an image
    folder or tensor with ``annotations=``, annotated images in memory (the zoo's scenes)."""
    from .data.loaders import CocoImages
    from .data.yolo_format import YoloDataset, is_yolo_source

    if isinstance(data, YoloDataset):
        return f"YOLO-format data ({data.source})"
    if isinstance(data, CocoImages):
        return f"COCO data ({data.json_path})"
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if p.suffix in (".yaml", ".yml") or (p.exists() and is_yolo_source(p)):
            return f"YOLO-format data ({p})"
        if p.suffix == ".json" and p.is_file() and _coco_json(p):
            return f"a COCO json ({p})"
    if annotations is not None:
        return "data with COCO annotations="
    if isinstance(data, (list, tuple)) and data and hasattr(type(data[0]), "ground_truth") \
            and hasattr(type(data[0]), "batch_tensors"):
        return f"{len(data)} annotated images ({type(data[0]).__name__})"
    return None


def _coco_json(p: Path) -> bool:
    try:
        with open(p) as f:
            head = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(head, dict) and "images" in head and ("annotations" in head or "categories" in head)


def data_names(data: Any) -> list[str] | None:
    """Class names a YOLO data.yaml (or dataset) lists, else None."""
    from .data.yolo_format import YoloDataset, read_data_yaml

    if isinstance(data, YoloDataset):
        return list(data.names) if data.names else None
    if isinstance(data, (str, os.PathLike)) and Path(data).suffix in (".yaml", ".yml") and Path(data).is_file():
        return list(read_data_yaml(data)["names"])
    return None


# -- the outputs -----------------------------------------------------------------------------
def yolov8_classes(output_shapes: Sequence[tuple | None], input_hw: tuple | None) -> int | None:
    """The number of classes when the model has one output ``[B, 4 + nc, anchors]`` with one
    anchor per cell of the stride 8 / 16 / 32 (/ 64), or 4 / 8 / 16, grids of its input; else None."""
    if len(output_shapes) != 1 or not output_shapes[0] or len(output_shapes[0]) != 3:
        return None
    _, c, a = output_shapes[0]
    if not isinstance(c, int) or not isinstance(a, int) or c < 5 or not input_hw or len(input_hw) != 2:
        return None
    h, w = input_hw
    if not isinstance(h, int) or not isinstance(w, int):
        return None
    for strides in STRIDE_SETS:
        if a == sum(math.ceil(h / s) * math.ceil(w / s) for s in strides):
            return c - 4
    return None


def model_facts(model: Any) -> tuple[ModelMetadata, list, tuple | None]:
    """(metadata, output shapes, input (H, W)) of a twin or spiking network."""
    info = getattr(getattr(model, "ann", model), "onnx_info", None)
    meta = read_metadata(model)
    outs = list((getattr(info, "output_shapes", None) or {}).values())
    shapes = list((getattr(info, "input_shapes", None) or {}).values())
    hw = tuple(shapes[0][2:]) if len(shapes) == 1 and len(shapes[0]) == 4 else None
    return meta, outs, hw


# -- the inference ---------------------------------------------------------------------------
@dataclass
class TaskInfo:
    """The task and decoder to use, the class names, and what of it was inferred (and from what)."""

    task: str | None
    postprocess: Any = None
    names: list[str] | None = None
    inferred: dict[str, str] = field(default_factory=dict)  # what -> "value (from where)"

    def to_dict(self) -> dict:
        return dict(self.inferred)

    def message(self, where: str) -> str:
        return f"onnx2snn {where}: " + "; ".join(f"{k} {v}" for k, v in self.inferred.items())

    def announce(self, where: str, enabled: bool = True) -> None:
        """Say once what was inferred (stderr; nothing when quiet or when nothing was)."""
        if enabled and self.inferred:
            print(self.message(where), file=sys.stderr)


def _decoder_for(meta: ModelMetadata, nc: int | None, outputs: Sequence, why_detection: str) -> str:
    """The built-in decoder for a detector the user named no decoder for, or an error saying why none fits."""
    if meta.end2end:
        raise ConfigError(f"the model is an NMS-free end-to-end detector (end2end=True, head "
                          f"{meta.head or 'unnamed'!r} in {meta.where}'s metadata): its [B, max_det, 6] output is not "
                          "supported yet. Re-export it with end2end=False (one output [B, 4 + nc, anchors]), or pass "
                          "postprocess= a callable(outputs, batch_meta) -> COCO detections", "postprocess")
    known = [tuple(s) for s in outputs if s]
    if nc is not None or (not known and meta.task == "detect") or \
            (meta.task == "detect" and len(known) == 1 and any(d is None for d in known[0])):
        return DETECTION_DECODER
    raise ConfigError(f"{why_detection}, which needs postprocess= here: its outputs {known} are not the "
                      "[B, 4 + nc, anchors] of a YOLOv8-style head the built-in decoder reads. Pass a decoder name "
                      "('yolov8', 'tiny-yolo', 'yolo_relu') or a callable(outputs, batch_meta) -> COCO detections",
                      "postprocess")


def resolve_task(model: Any, data: Any = None, annotations: Any = None, task: str | None = None,
                 postprocess: Any = None, reference: Any = None, require: bool = True,
                 stored: Mapping | None = None) -> TaskInfo:
    """The task, decoder and names for ``model`` (a twin or spiking network) on ``data``.

    ``task`` / ``postprocess``: what the user passed (None: infer). ``reference``: an ONNX file
    whose metadata is read first (verify's reference). ``require``: a task the library cannot
    score ('segment', 'pose', 'obb', an end-to-end head) is an error (else it is left unset).
    ``stored``: what an earlier step inferred (``snn.config["inferred"]``), a last resort.
    """
    meta, outputs, hw = model_facts(model)
    if reference is not None and not isinstance(reference, (bytes, bytearray)):
        ref_meta = read_metadata(reference)
        if ref_meta:
            meta = ref_meta
    nc = yolov8_classes(outputs, hw)
    det_data = detection_data(data, annotations)
    inferred: dict[str, str] = {}
    src = f"{meta.where}'s metadata"
    names, names_from = meta.names, src
    if names is None and data is not None:
        names, names_from = data_names(data), "the data"

    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS} or None (inferred), got {task!r}", "task")
    if task == "classification":
        if postprocess is not None:
            raise ConfigError(f"task='classification' with postprocess={_name(postprocess)!r}: a postprocess "
                              "decodes detections. Pass task='detection' (or no task: it is inferred), or leave "
                              "postprocess out", "task")
        if det_data:
            raise ConfigError(f"task='classification' on {det_data}, which is detection data: pass "
                              "task='detection' (or no task: it is inferred), or classification data "
                              "((x, y), an .npz with y, class folders)", "task")
        return TaskInfo("classification", None, names if names_from == src else None, inferred)

    if task is None:
        why = None
        if postprocess is not None:
            why = f"postprocess={_name(postprocess)!r} given"
        elif meta.task is not None:
            ours = ULTRALYTICS_TASKS.get(meta.task, "unknown")
            if ours == "classification":
                if det_data:
                    raise ConfigError(f"{src} says task={meta.task!r} (a classifier), but the data is {det_data}: "
                                      "pass classification data, or the detector's ONNX file", "task")
                inferred["task"] = f"classification (task={meta.task!r} in {src})"
                return TaskInfo("classification", None, names if names_from == src else None, inferred)
            if ours is None or ours == "unknown":
                if require:
                    raise ConfigError(f"{src} says task={meta.task!r}: onnx2snn scores 'classify' and 'detect' "
                                      "models; a {0!r} model has no decoder yet. Pass task= and postprocess= a "
                                      "callable(outputs, batch_meta) -> COCO detections to score it your way"
                                      .format(meta.task), "task")
                return TaskInfo(None, None, names, inferred)
            why = f"task={meta.task!r} in {src}"
        elif det_data:
            why = det_data
        elif nc is not None:
            why = f"its output {list(outputs[0])} is a YOLOv8-style [B, 4 + nc, anchors] head"
        elif stored and stored.get("task") in TASKS:
            task = stored["task"]
            said = (stored.get("said") or {}).get("task", task)
            inferred["task"] = f"{task} (at conversion: {said})"
            if task == "classification":
                return TaskInfo(task, None, None, inferred)
            why = "inferred at conversion"
            if stored.get("postprocess"):
                postprocess = stored["postprocess"]
                inferred["postprocess"] = f"{postprocess!r} (at conversion)"
            names = names if names is not None else stored.get("names")
            names_from = "the conversion" if names is not None and names_from != src else names_from
        if why is None:
            return TaskInfo(None, None, None, inferred)
        if "task" not in inferred:
            inferred["task"] = f"detection ({why})"
        task = "detection"
    else:
        why = "task='detection'"
    if postprocess is None:
        if meta.task is not None and meta.task != "detect" and ULTRALYTICS_TASKS.get(meta.task) is None and require:
            raise ConfigError(f"task='detection' given, but {src} says task={meta.task!r}: the built-in decoder "
                              "reads plain detection heads only. Pass postprocess= a callable(outputs, batch_meta) "
                              "-> COCO detections", "postprocess")
        try:
            postprocess = _decoder_for(meta, nc, outputs, why if why == "task='detection'"
                                       else f"the model is taken for a detector ({why})")
        except ConfigError:
            if require:
                raise
            return TaskInfo(task, None, names, inferred)
        inferred["postprocess"] = f"{postprocess!r} (" + (f"task='detect' in {src}" if meta.task == "detect"
                                                          else f"output [B, {4 + nc}, anchors]" if nc is not None
                                                          else why) + ")"
    if names is not None:
        if nc is not None and len(names) != nc and _is_builtin(postprocess):
            raise DataError(f"the model detects {nc} classes (output [B, {4 + nc}, anchors]), but {names_from} "
                            f"names {len(names)}: {'pass data of this model' if names_from == 'the data' else 'fix the metadata'}")
        inferred["names"] = f"{len(names)} class names ({names_from})"
    return TaskInfo(task, postprocess, names, inferred)


def _name(postprocess: Any) -> str:
    return postprocess if isinstance(postprocess, str) else getattr(postprocess, "__name__", type(postprocess).__name__)


def _is_builtin(postprocess: Any) -> bool:
    return isinstance(postprocess, str) and postprocess.lower() in ("yolov8", "ultralytics")


# -- the input size ---------------------------------------------------------------------------
def _dynamic_dims(source: Any) -> "tuple[list, Any] | None":
    """(dims of the model's single input, its proto) when a non-batch dim is dynamic; else None."""
    import onnx

    from . import onnx_io

    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            return None
        try:
            proto = onnx.load(os.fspath(source), load_external_data=False)
        except Exception:  # noqa: BLE001 - the importer reports a bad file
            return None
    elif isinstance(source, onnx.ModelProto):
        proto = source
    elif isinstance(source, (bytes, bytearray)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(source))
        except Exception:  # noqa: BLE001
            return None
    else:
        return None
    inputs = onnx_io.graph_inputs(proto)
    if len(inputs) != 1:
        return None
    dims = onnx_io.input_dims(inputs[0])
    if not any(not (isinstance(d, int) and d > 0) for d in dims[1:]):
        return None
    return dims, proto


def _first_sample_shape(data: Any) -> tuple | None:
    """The per-sample shape of in-memory data or an .npz (None where it would take reading images)."""
    import numpy as np
    import torch

    if isinstance(data, Mapping) and "x" in data:
        data = data["x"]
    if isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape"):
        data = data[0]
    if isinstance(data, (str, os.PathLike)) and Path(data).suffix == ".npz" and Path(data).is_file():
        try:
            with np.load(data) as f:
                data = f["x"][:1] if "x" in f else None
        except (OSError, ValueError):
            return None
    if isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim >= 2:
        return tuple(int(d) for d in data.shape[1:])
    if isinstance(data, torch.utils.data.DataLoader):
        try:
            first = next(iter(data))
        except (StopIteration, TypeError):
            return None
        x = first[0] if isinstance(first, (tuple, list)) else first
        return tuple(int(d) for d in x.shape[1:]) if hasattr(x, "shape") else None
    return None


def fill_input_shape(source: Any, input_shape: Any, data: Any = None) -> tuple[Any, str | None]:
    """``input_shape`` for a file whose input leaves height / width (or channels) dynamic:
    the given one; else the calibration data's sample shape (tensors, arrays, .npz,
    DataLoaders: what will run); else the ``imgsz`` of its metadata (images are resized to it). Returns (shape or the given value, where it
    came from or None)."""
    if input_shape is not None:
        return input_shape, None
    found = _dynamic_dims(source)
    if found is None:
        return None, None
    dims, proto = found
    meta = read_metadata(proto)
    sample = _first_sample_shape(data)
    if sample is not None and len(sample) + 1 == len(dims) and all(
            not (isinstance(d, int) and d > 0) or d == s for d, s in zip(dims[1:], sample)):
        return (1,) + tuple(sample), "the calibration data's samples"
    if meta.imgsz is not None and len(dims) == 4:
        c = dims[1] if isinstance(dims[1], int) and dims[1] > 0 else (meta.channels or 3)
        return (1, c) + meta.imgsz, f"imgsz {list(meta.imgsz)} in {meta.where}'s metadata"
    return None, None


__all__ = ["TaskInfo", "resolve_task", "detection_data", "data_names", "yolov8_classes", "fill_input_shape",
           "model_facts", "TASKS", "DETECTION_DECODER"]

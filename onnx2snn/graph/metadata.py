"""What an ONNX file says about itself: its ``metadata_props``, read with onnx's own API.

Ultralytics writes (all values strings): ``task`` ('detect', 'segment', 'classify', 'pose',
'obb'), ``names`` (a Python dict literal ``"{0: 'person', 1: 'bicycle'}"``), ``imgsz``
(``'[640, 640]'``), ``stride`` (``'32'``), ``batch``, ``channels``, ``end2end`` ('True' for the
NMS-free heads of YOLOv10 / YOLO26), ``head``, ``args``, ``description``, ``version``,
``license``, ``date``. :func:`read_metadata` parses the ones onnx2snn uses (literals with
:func:`ast.literal_eval`, never ``eval``) and keeps every key as it is; a value that does
not parse is an :class:`InvalidModelError` naming the key.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import onnx

from ..errors import InvalidModelError

# Ultralytics' task names -> ours (None: no decoder in onnx2snn yet)
ULTRALYTICS_TASKS = {"detect": "detection", "classify": "classification", "segment": None, "pose": None,
                     "obb": None}


@dataclass(frozen=True)
class ModelMetadata:
    """The parsed ``metadata_props`` of a model (empty when the file has none)."""

    props: Mapping[str, str] = field(default_factory=dict)
    where: str = "the model"

    def __bool__(self) -> bool:
        return bool(self.props)

    @property
    def task(self) -> str | None:
        """The task as the file spells it ('detect', 'classify', ...), or None."""
        t = self.props.get("task")
        return t.strip() if isinstance(t, str) and t.strip() else None

    @property
    def names(self) -> list[str] | None:
        """Class names by index, from ``names`` (a dict literal {0: 'a', ...} or a list literal)."""
        raw = self.props.get("names")
        if raw is None:
            return None
        value = self._literal("names", raw)
        if isinstance(value, dict):
            try:
                keys = sorted(int(k) for k in value)
            except (TypeError, ValueError):
                raise self._bad("names", raw, "a dict {class index: name}") from None
            if keys != list(range(len(keys))):
                raise self._bad("names", raw, f"class indices 0..{len(keys) - 1} without gaps (got {keys[:8]})")
            return [str(value[k] if k in value else value[str(k)]) for k in keys]
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        raise self._bad("names", raw, "a dict {class index: name} or a list")

    @property
    def imgsz(self) -> tuple[int, int] | None:
        """(height, width) the model was exported for, from ``imgsz`` ('[640, 640]' or '640')."""
        raw = self.props.get("imgsz")
        if raw is None:
            return None
        value = self._literal("imgsz", raw)
        if isinstance(value, int):
            value = [value, value]
        if not (isinstance(value, (list, tuple)) and len(value) in (1, 2)
                and all(isinstance(v, int) and v > 0 for v in value)):
            raise self._bad("imgsz", raw, "[height, width] in pixels")
        return (int(value[0]), int(value[-1]))

    @property
    def stride(self) -> int | None:
        raw = self.props.get("stride")
        if raw is None:
            return None
        value = self._literal("stride", raw)
        if isinstance(value, (list, tuple)) and value:
            value = max(value)
        if not isinstance(value, (int, float)) or value <= 0:
            raise self._bad("stride", raw, "a positive number")
        return int(value)

    @property
    def channels(self) -> int | None:
        raw = self.props.get("channels")
        if raw is None:
            return None
        value = self._literal("channels", raw)
        if not isinstance(value, int) or value <= 0:
            raise self._bad("channels", raw, "a positive integer")
        return value

    @property
    def end2end(self) -> bool:
        """The NMS-free head (YOLOv10 / YOLO26 exports with end2end=True)."""
        return str(self.props.get("end2end", "False")).strip().lower() in ("true", "1", "yes")

    @property
    def head(self) -> str | None:
        h = self.props.get("head")
        return h.strip() if isinstance(h, str) and h.strip() else None

    @property
    def describes(self) -> str:
        """A short text naming the file's producer, e.g. "Ultralytics YOLOv8n" (for messages)."""
        d = self.props.get("description") or self.props.get("author") or ""
        return d.strip() or "the ONNX metadata"

    def _literal(self, key: str, raw: str) -> Any:
        try:
            return ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise self._bad(key, raw, "a Python literal") from None

    def _bad(self, key: str, raw: str, want: str) -> InvalidModelError:
        shown = raw if len(raw) <= 60 else raw[:57] + "..."
        return InvalidModelError(f"{self.where}: metadata_props[{key!r}] = {shown!r} is not {want}. Fix or remove "
                                 f"the key (onnx.helper.set_model_props), or re-export the model")

    def to_dict(self) -> dict:
        """The keys onnx2snn reads, parsed (for reports and the saved config)."""
        out: dict[str, Any] = {}
        for key in ("task", "imgsz", "stride", "end2end", "head"):
            if key in self.props:
                out[key] = getattr(self, key)
        if "names" in self.props:
            out["names"] = len(self.names or [])
        return out


def metadata_from_proto(proto: onnx.ModelProto, where: str = "the model") -> ModelMetadata:
    """The metadata of a ModelProto (``proto.metadata_props``)."""
    return ModelMetadata({p.key: p.value for p in proto.metadata_props}, where)


def read_metadata(source: Any) -> ModelMetadata:
    """The metadata of an ONNX path (read without its weights), bytes, ModelProto, a twin
    (``twin.onnx_info.metadata``) or a spiking network (its twin's); empty for anything else."""
    if isinstance(source, onnx.ModelProto):
        return metadata_from_proto(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            return ModelMetadata({}, path)
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception:  # noqa: BLE001 - the importer reports a bad file; no metadata here
            return ModelMetadata({}, path)
        return metadata_from_proto(proto, path)
    if isinstance(source, (bytes, bytearray)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(source))
        except Exception:  # noqa: BLE001
            return ModelMetadata({})
        return metadata_from_proto(proto, "the given bytes")
    ann = getattr(source, "ann", None)  # a SpikingNetwork
    info = getattr(ann if ann is not None else source, "onnx_info", None)
    props = getattr(info, "metadata", None)
    if props:
        return ModelMetadata(dict(props), getattr(info, "source", "") or "the model")
    return ModelMetadata({})


def set_metadata(proto: onnx.ModelProto, props: Mapping[str, Any]) -> onnx.ModelProto:
    """Write ``props`` into ``proto.metadata_props`` (values as strings, as Ultralytics writes
    them; existing keys replaced) with onnx's API; returns ``proto``."""
    kept = {p.key: p.value for p in proto.metadata_props}
    kept.update({str(k): str(v) for k, v in props.items()})
    onnx.helper.set_model_props(proto, kept)
    return proto


__all__ = ["ModelMetadata", "read_metadata", "metadata_from_proto", "set_metadata", "ULTRALYTICS_TASKS"]

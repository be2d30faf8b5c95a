"""Detection decoders by name, for ``verify(postprocess="...")`` and the settings search.

The library registers its own decoder (``decode_ultralytics``: "yolov8", "ultralytics");
packages above it register theirs (importing :mod:`onnx2snn.zoo` registers the zoo's
"tiny-yolo" and "yolo_relu"). A name is looked up case-insensitively among every alias.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .detection import decode_ultralytics


@dataclass(frozen=True)
class Decoder:
    """A decoder ``fn(outputs, **kwargs) -> per-image {"boxes", "scores", "labels"}``,
    the keyword arguments mAP is measured with, and the name reports show for it."""

    fn: Callable
    kwargs: dict = field(default_factory=dict)
    label: str = ""


DECODERS: dict[str, Decoder] = {}  # canonical name -> decoder
DECODER_ALIASES: dict[str, str] = {}  # every accepted name (lower case) -> canonical name


def register_decoder(name: str, fn: Callable, aliases=(), kwargs: dict | None = None, label: str | None = None) -> None:
    """Make ``fn`` available as ``postprocess=name`` (and each alias)."""
    DECODERS[name] = Decoder(fn, dict(kwargs or {}), label or f"{fn.__module__}.{fn.__name__}")
    for a in (name, *aliases):
        DECODER_ALIASES[a.lower()] = name


def find_decoder(name: str) -> tuple[str, Decoder] | None:
    """(canonical name, decoder) for any registered name, or None."""
    key = DECODER_ALIASES.get(str(name).lower())
    return None if key is None else (key, DECODERS[key])


# Ultralytics exports are decoded exactly as its validation does: every class above 0.001 per
# anchor, class-aware NMS at IoU 0.7, 300 kept (mAP wants a low score threshold).
register_decoder("decode_ultralytics", decode_ultralytics, aliases=("yolov8", "ultralytics"),
                 kwargs={"conf_thres": 0.001, "iou_thres": 0.7, "max_det": 300, "multi_label": True})

__all__ = ["Decoder", "DECODERS", "DECODER_ALIASES", "register_decoder", "find_decoder"]

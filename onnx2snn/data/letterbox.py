"""The letterbox geometry of Ultralytics' validation (shared by Preprocess and the YOLO reader)."""
from __future__ import annotations

import math


def letterbox_geometry(h0: int, w0: int, size: tuple[int, int]) -> tuple[tuple[int, int], float, float, int, int]:
    """Ultralytics' validation geometry for an image of (h0, w0) and input ``size`` (H, W):
    resize by r = min(H / h0, W / w0) to (min(ceil(h0 r), H), min(ceil(w0 r), W)), then pad
    centred (top = round(dh - 0.1), left = round(dw - 0.1)). Returns ((h, w), gain x =
    w / w0, gain y = h / h0, pad left, pad top); boxes map back as (box - pad) / gain.
    (Ultralytics' scale_boxes divides both axes by the height gain; the two differ by the
    ceil rounding only, under one input pixel.)"""
    H, W = size
    r = min(H / h0, W / w0)
    h, w = (min(math.ceil(h0 * r), H), min(math.ceil(w0 * r), W)) if r != 1 else (h0, w0)
    top, left = round((H - h) / 2 - 0.1), round((W - w) / 2 - 0.1)
    return (h, w), w / w0, h / h0, left, top


__all__ = ["letterbox_geometry"]

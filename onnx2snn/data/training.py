"""Training data for :func:`onnx2snn.finetune`, in every form it takes: ``(x, y)`` arrays or
inputs alone (shuffled per epoch with a seeded generator), a dict with ``x``, a path (YOLO
data, image folder, ``.npz``), a Dataset, a callable ``epoch -> batches`` or a DataLoader,
as ``(x, targets or None)`` batches; the first inputs for the initial thresholds."""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np
import torch

from ..errors import DataError
from .batches import input_tensor, open_path
from .yolo_format import YoloDataset, collate


def _as_tensor(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else torch.as_tensor(a)


def _open_path(path: Any, preprocess) -> Any:
    """A training path as data: YOLO-format data as its train images, with labels where it
    has them; else what calibration reads (an .npz, an image folder)."""
    return open_path(path, preprocess, labels=None)


def _epoch_batches(data: Any, epoch: int, batch_size: int, gen: torch.Generator, preprocess=None) -> Iterable:
    """(x, target or None) batches of one epoch.

    ``data``: ``(x, y)`` arrays or inputs alone (shuffled with the seeded generator every
    epoch), a dict with ``x`` (and ``y``), a path (YOLO ``data.yaml`` or folder, image
    folder, ``.npz``), a Dataset, a callable ``epoch -> iterable of batches`` (fresh data per
    epoch, e.g. generated detection scenes), or an iterable of batches (a DataLoader); a
    batch is ``x``, ``(x, y)`` or a dict. Targets go to the loss as they are (class labels,
    lists of box dicts, ...); None where the data has none.
    """
    if isinstance(data, (str, os.PathLike)):
        data = _open_path(data, preprocess)
    if isinstance(data, dict):
        if "x" not in data:
            raise DataError(f"training data dict needs key 'x' (and 'y' for a task loss), has {sorted(data)}")
        data = (data["x"], data.get("y"))
    if isinstance(data, (np.ndarray, torch.Tensor)):
        data = (data, None)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (np.ndarray, torch.Tensor)):
        x, y = input_tensor(data[0], "training data"), data[1]
        y = _as_tensor(y) if isinstance(y, np.ndarray) else y
        if x.dim() == 0 or len(x) == 0:
            raise DataError("training data: empty (no samples)")
        if y is not None and len(y) != len(x):
            raise DataError(f"training data: {len(x)} inputs but {len(y)} targets")
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            yield x[idx], (None if y is None else y[idx] if isinstance(y, torch.Tensor) else [y[j] for j in idx.tolist()])
        return
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen,
                                           collate_fn=collate if isinstance(data, YoloDataset) else None)
    source = data(epoch) if callable(data) else data
    try:
        it = iter(source)
    except TypeError:
        raise DataError(f"cannot read training batches from a {type(source).__name__}") from None
    for k, batch in enumerate(it):
        if isinstance(batch, dict):
            batch = (batch.get("x", batch.get("image")), batch.get("y", batch.get("label")))
        if isinstance(batch, (np.ndarray, torch.Tensor)):
            batch = (batch, None)
        if not isinstance(batch, (tuple, list)) or not batch:
            raise DataError(f"training batch {k}: expected x or (x, y), got {type(batch).__name__}")
        y = batch[1] if len(batch) > 1 else None
        if _no_labels(y):
            y = None
        yield input_tensor(batch[0], f"training batch {k}"), y


def _no_labels(y: Any) -> bool:
    """Targets that carry nothing: None, -1 labels (a flat image folder), dicts with only an image id."""
    if y is None:
        return True
    if isinstance(y, torch.Tensor) and y.dtype in (torch.int64, torch.int32) and y.numel() and bool((y < 0).all()):
        return True
    if isinstance(y, dict) and set(y) <= {"image_id"}:
        return True
    if isinstance(y, (list, tuple)) and y and all(isinstance(t, dict) and set(t) <= {"image_id"} for t in y):
        return True
    return False


def _inputs_for_calibration(data: Any, limit: int, preprocess=None) -> torch.Tensor:
    """Up to ``limit`` training inputs (the first ones, unshuffled) for the initial thresholds."""
    xs, n = [], 0
    if isinstance(data, (str, os.PathLike)):
        data = _open_path(data, preprocess)
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=256, shuffle=False,
                                           collate_fn=collate if isinstance(data, YoloDataset) else None)
    for xb, _ in _epoch_batches(data, 0, 256, torch.Generator().manual_seed(0), preprocess):
        xs.append(xb)
        n += len(xb)
        if n >= limit:
            break
    if not xs:
        raise DataError("training data: empty (no batches)")
    return torch.cat(xs)[:limit]


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def _steps(data: Any, batch_size: int) -> int | None:
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return -(-len(data) // batch_size)
    if isinstance(data, dict) and "x" in data:
        return -(-len(data["x"]) // batch_size)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (np.ndarray, torch.Tensor)):
        return -(-len(data[0]) // batch_size)
    if callable(data) or isinstance(data, (str, os.PathLike)):
        return None
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        return -(-len(data) // batch_size)
    try:
        return len(data)
    except TypeError:
        return None


epoch_batches, inputs_for_calibration, steps_per_epoch = _epoch_batches, _inputs_for_calibration, _steps

__all__ = ["epoch_batches", "inputs_for_calibration", "steps_per_epoch"]

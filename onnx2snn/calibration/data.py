"""Sample data in the forms users have, as a stream of float32 input batches.

Accepted: a tensor or numpy array [N, ...]; an iterable of batches (a DataLoader; a
batch may be ``x`` or ``(x, y, ...)``); an ``.npz`` file with an array ``x``; an image
folder or a COCO json (with a preprocessing spec: size, mean, std).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import DataError


def check_batch(x: torch.Tensor, where: str) -> torch.Tensor:
    """A batch of inputs as given to a model: not empty and all finite, else DataError."""
    if x.numel() == 0:
        raise DataError(f"{where}: empty batch")
    if not torch.isfinite(x).all():
        raise DataError(f"{where}: the data holds NaN or infinite values; clean or re-normalize it")
    return x


def _as_tensor(x: Any, where: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise DataError(f"{where}: array of objects, expected numbers")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{where}: expected a tensor or numpy array, got {type(x).__name__}")
    return x.float()


def dataset_length(data: Any) -> int | None:
    """Number of batches when known (for progress bars)."""
    try:
        return len(data)
    except TypeError:
        return None


def iter_batches(data: Any, batch_size: int = 64, preprocess=None, limit: int | None = None,
                 with_labels: bool = False, shard=None) -> Iterator:
    """Yield float32 input batches (or ``(x, y)`` when ``with_labels``) from ``data``.

    ``limit`` caps the number of samples. Labels are None where the data has none.
    ``shard`` (an :class:`onnx2snn.distributed.Shard`): only the batches of this rank
    (batch k of the one-process stream when ``k % world == rank``); tensors, arrays and
    datasets are cut without reading the other ranks' samples.
    """
    if shard is not None and shard.active:
        yield from _sharded(data, batch_size, preprocess, limit, with_labels, shard)
        return
    seen = 0
    if isinstance(data, (str, os.PathLike)):
        data = _open_path(Path(data), preprocess)
    if isinstance(data, dict):  # {"x": ..., "y": ...}
        data = (data["x"], data.get("y"))
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (np.ndarray, torch.Tensor)):
        xs, ys = data
        ys = None if ys is None else _as_tensor(ys, "labels").long()
        data = xs
    else:
        ys = None
    if isinstance(data, (np.ndarray, torch.Tensor)):
        xs = _as_tensor(data, "data")
        if xs.dim() == 0 or xs.shape[0] == 0:
            raise DataError("data: empty (no samples)")
        n = xs.shape[0] if limit is None else min(limit, xs.shape[0])
        for i in range(0, n, batch_size):
            xb = check_batch(xs[i:min(n, i + batch_size)], f"data[{i}:{i + batch_size}]")
            yield (xb, None if ys is None else ys[i:min(n, i + batch_size)]) if with_labels else xb
        return
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    any_batch = False
    try:
        iterator = iter(data)
    except TypeError:
        raise DataError(f"cannot read samples from a {type(data).__name__}: pass a tensor, a numpy array, "
                        "a DataLoader, an .npz file with 'x', or an image folder") from None
    for k, batch in enumerate(iterator):
        if isinstance(batch, (tuple, list)):
            xb, yb = batch[0], (batch[1] if len(batch) > 1 else None)
        elif isinstance(batch, dict):
            xb, yb = batch.get("x", batch.get("image")), batch.get("y", batch.get("label"))
        else:
            xb, yb = batch, None
        xb = check_batch(_as_tensor(xb, f"batch {k}"), f"batch {k}")
        if limit is not None and seen + xb.shape[0] > limit:
            xb = xb[: limit - seen]
            yb = None if yb is None else yb[: limit - seen]
        seen += xb.shape[0]
        any_batch = True
        if with_labels:
            yb = None if yb is None or not isinstance(yb, (torch.Tensor, np.ndarray)) else _as_tensor(yb, "labels").long()
            yield xb, yb
        else:
            yield xb
        if limit is not None and seen >= limit:
            break
    if not any_batch:
        raise DataError("data: empty (the iterable yielded no batches)")


def _sharded(data, batch_size, preprocess, limit, with_labels, shard) -> Iterator:
    """This rank's batches; a map-style dataset (image folders too) loads only its own samples."""
    if isinstance(data, (str, os.PathLike)):
        data = _open_path(Path(data), preprocess)
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        n = len(data) if limit is None else min(limit, len(data))
        if n == 0:
            raise DataError("data: empty (no samples)")
        mine = [list(range(i, min(n, i + batch_size))) for k, i in enumerate(range(0, n, batch_size))
                if shard.owns(k)]
        if mine:
            yield from iter_batches(torch.utils.data.DataLoader(data, batch_sampler=mine), batch_size,
                                    with_labels=with_labels)
        return
    for k, b in enumerate(iter_batches(data, batch_size, preprocess, limit, with_labels)):
        if shard.owns(k):
            yield b


def _open_path(path: Path, preprocess):
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        with np.load(path) as f:
            if "x" not in f:
                raise DataError(f"{path}: the .npz has no array 'x' (it has {sorted(f.files)})")
            return (f["x"], f["y"] if "y" in f else None)
    if path.is_dir() or path.suffix == ".json":
        if preprocess is None:
            raise DataError(f"{path}: an image folder or COCO json needs a preprocessing spec "
                            "(onnx2snn.zoo.Preprocess(size=(H, W), mean=..., std=...))")
        from ..zoo import open_dataset
        return open_dataset(path, preprocess)
    raise DataError(f"{path}: unknown data format (want .npz with 'x', an image folder, or a COCO .json)")

"""Sample data in the forms users have, as a stream of float32 input batches (calibration,
fine-tuning, correction; :mod:`onnx2snn.data.evaluation` adds labels and detection targets).

Accepted: a float tensor or numpy array [N, ...]; an iterable of batches (a DataLoader; a
batch may be ``x`` or ``(x, y, ...)``); an ``.npz`` file with an array ``x``; an image
folder or a COCO json (with a preprocessing spec: size, mean, std). Integer data (uint8
images) is refused unless a preprocessing spec says how to scale it: a model never sees
pixels in [0, 255] by accident. Before any long work, :func:`check_fits` compares the
first batch with the model's input shape.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch

from ..checks import PREPROCESS_HINT
from ..errors import ConfigError, DataError, Onnx2SnnWarning, ShapeError
from ..progress import bar as progress_bar
from .loaders import Preprocess, open_dataset
from .yolo_format import YoloDataset, is_yolo_source


def check_batch(x: torch.Tensor, where: str) -> torch.Tensor:
    """A batch of inputs as given to a model: not empty and all finite, else DataError."""
    if x.numel() == 0:
        raise DataError(f"{where}: empty batch")
    if not torch.isfinite(x).all():
        raise DataError(f"{where}: the data holds NaN or infinite values; clean or re-normalize it")
    return x


def check_preprocess(preprocess: Any) -> None:
    """None or a preprocessing spec (:class:`onnx2snn.data.Preprocess` or alike), else ConfigError."""
    if preprocess is not None and not (hasattr(preprocess, "normalize") and hasattr(preprocess, "image_to_tensor")):
        raise ConfigError(f"preprocess must be an onnx2snn.zoo.Preprocess(size=(H, W), mean=..., std=..., "
                          f"channels=...), got {type(preprocess).__name__}", "preprocess")


def _integer_error(dtype, where: str) -> DataError:
    return DataError(
        f"{where}: the data is {str(dtype).replace('torch.', '')} (integers), but the model takes float input. "
        "Scale it as the model was trained, e.g. x.astype('float32') / 255 for 8-bit images (then normalize), "
        f"or pass {PREPROCESS_HINT} to scale uint8 images by 1/255 and normalize them")


def input_tensor(x: Any, where: str, preprocess=None) -> torch.Tensor:
    """Model input as float32: floats as given; uint8 images scaled by 1/255 and
    normalized with ``preprocess``; any other integer data refused (DataError)."""
    x = _as_tensor(x, where)
    if x.is_floating_point():
        return x.float()
    if x.is_complex():
        raise DataError(f"{where}: complex data; the model takes real numbers")
    if preprocess is None or x.dtype != torch.uint8:
        raise _integer_error(x.dtype, where)
    x = x.float() / 255.0
    if x.dim() == 3:  # [N, H, W] grayscale
        x = x[:, None]
    if x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC
        x = x.permute(0, 3, 1, 2)
    return preprocess.normalize(x)


def _as_tensor(x: Any, where: str) -> torch.Tensor:
    """Labels and other non-input arrays: any numbers, as a tensor."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise DataError(f"{where}: array of objects, expected numbers")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{where}: expected a tensor or numpy array, got {type(x).__name__}")
    return x


def dataset_length(data: Any) -> int | None:
    """Number of batches when known."""
    try:
        return len(data)
    except TypeError:
        return None


def _npz_rows(path: Path) -> int | None:
    """Rows of ``x`` in an .npz, read from the array header (the data is not loaded)."""
    try:
        with zipfile.ZipFile(path) as z, z.open("x.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(fh)[0]
        return int(shape[0]) if shape else None
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        return None


def sample_count(data: Any, limit: int | None = None, preprocess=None) -> int | None:
    """Number of samples ``iter_batches`` will yield, when it can be told without reading
    the data (for progress bars that count samples)."""
    n = None
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if p.suffix == ".npz" and p.is_file():
            n = _npz_rows(p)
        elif p.exists() and preprocess is not None:
            try:
                n = len(open_dataset(p, preprocess))
            except Exception:  # noqa: BLE001 - the real read reports the problem
                n = None
    elif isinstance(data, Mapping) and "x" in data:
        n = len(data["x"])
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (np.ndarray, torch.Tensor)):
        n = len(data[0])
    elif isinstance(data, (np.ndarray, torch.Tensor)):
        n = len(data) if data.ndim else None
    elif isinstance(data, torch.utils.data.DataLoader):
        ds = data.dataset
        if not isinstance(ds, torch.utils.data.IterableDataset):
            n = dataset_length(ds)
            if n is not None and data.drop_last and data.batch_size:
                n = n // data.batch_size * data.batch_size
    elif isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        n = dataset_length(data)
    elif isinstance(data, (list, tuple)) and data:
        try:
            n = sum(len(b[0] if isinstance(b, (tuple, list)) else b) for b in data)
        except TypeError:
            n = None
    return n if n is None or limit is None else min(n, limit)


def progress_samples(batches: Iterable, total: int | None, desc: str, enabled: bool = True) -> Iterator:
    """Pass ``batches`` through, counting samples (not batches) on a progress bar
    (:mod:`onnx2snn.progress`); an item is a batch or a tuple whose first element is the
    batch. The bar advances once the consumer is done with a batch."""
    with progress_bar(total=total, desc=desc, unit="sample", enabled=enabled) as bar:
        for item in batches:
            yield item
            first = item[0] if isinstance(item, (tuple, list)) else item
            bar.update(len(first))


def peek(batches: Iterable) -> tuple[Any, Iterator]:
    """The first item of ``batches`` and an iterator that still yields it."""
    it = iter(batches)
    try:
        first = next(it)
    except StopIteration:
        raise DataError("data: empty (no samples)") from None

    def chain():
        yield first
        yield from it
    return first, chain()


def check_fits(x: torch.Tensor, input_shapes: Mapping[str, tuple], where: str = "calibration data") -> None:
    """ShapeError unless a batch ``x`` has the model's input shape per sample."""
    if len(input_shapes) != 1:
        return
    name, full = next(iter(input_shapes.items()))
    want, got = tuple(int(d) for d in full[1:]), tuple(x.shape[1:])
    if got == want:
        return
    hint = ""
    if int(np.prod(got or (1,))) == int(np.prod(want or (1,))) and len(got) + 1 == len(want):
        hint = " (it lacks the channel dim: use x[:, None])"
    elif len(got) == len(want) == 3 and got[1:] == want[1:] and got[0] != want[0]:
        hint = f" ({got[0]} channels where the model takes {want[0]}: convert the images, e.g. to " + \
            ("grayscale)" if want[0] == 1 else "RGB)")
    elif len(got) == len(want) == 3 and got[0] == want[0]:
        hint = f" (images of {got[1]}x{got[2]} where the model takes {want[1]}x{want[2]}: resize them)"
    elif len(got) == 3 and got[-1] == want[0] and got[:2] == want[1:]:
        hint = " (channels last: use x.permute(0, 3, 1, 2))"
    raise ShapeError(
        f"{where}: samples have shape {got}, but the model's input {name!r} takes {want} per sample "
        f"([N, {', '.join(map(str, want))}] in all){hint}. Feed data of that shape, or import the model with "
        "input_shape= matching the data when the file leaves its dims dynamic.")


def default_preprocess(input_shapes: Mapping[str, tuple], letterbox: bool = False):
    """For image files with no spec: resize (or letterbox) to the model's input size, pixels in [0, 1]."""
    if len(input_shapes) != 1:
        return None
    full = next(iter(input_shapes.values()))
    if len(full) != 4 or full[1] not in (1, 3):
        return None
    return Preprocess(size=tuple(int(d) for d in full[2:]), channels=int(full[1]), letterbox=letterbox)


def resolve_preprocess(data: Any, preprocess, input_shapes) -> Any:
    """The preprocessing for ``data``: the given spec, or for an image folder / COCO json
    the default one (resize to the model's input size, pixels in [0, 1]); YOLO-format data
    (a data.yaml, a folder with images/ and labels/) is letterboxed, as Ultralytics does."""
    check_preprocess(preprocess)
    if preprocess is None and isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if is_yolo_source(p):
            preprocess = default_preprocess(input_shapes, letterbox=True)
        elif p.is_dir() or p.suffix == ".json":
            preprocess = default_preprocess(input_shapes)
    return preprocess


def iter_batches(data: Any, batch_size: int = 64, preprocess=None, limit: int | None = None,
                 with_labels: bool = False, shard=None) -> Iterator:
    """Yield float32 input batches (or ``(x, y)`` when ``with_labels``) from ``data``.

    ``limit`` caps the number of samples. Labels are None where the data has none.
    ``preprocess`` reads image files and scales uint8 arrays; float arrays are taken as
    model input as they are. ``shard`` (an :class:`onnx2snn.distributed.Shard`): only the
    batches of this rank (batch k of the one-process stream when ``k % world == rank``);
    tensors, arrays and datasets are cut without reading the other ranks' samples.
    """
    if shard is not None and shard.active:
        yield from _sharded(data, batch_size, preprocess, limit, with_labels, shard)
        return
    seen = 0
    if isinstance(data, (str, os.PathLike)):
        data = open_path(data, preprocess)
    if isinstance(data, Mapping) and "x" in data:  # {"x": ..., "y": ...}
        data = (data["x"], data.get("y"))
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (np.ndarray, torch.Tensor)):
        xs, ys = data
        ys = None if ys is None else _as_tensor(ys, "labels").long()
        data = xs
    else:
        ys = None
    if isinstance(data, (np.ndarray, torch.Tensor)):
        if data.ndim == 0 or data.shape[0] == 0:
            raise DataError("data: empty (no samples)")
        if preprocess is not None and (data.dtype.kind == "f" if isinstance(data, np.ndarray)
                                       else data.is_floating_point()):
            warnings.warn("preprocess= is not applied to float arrays: they are taken as model input as they are "
                          "(it reads image files and scales uint8 arrays)", Onnx2SnnWarning, stacklevel=3)
        if ys is not None and len(ys) != len(data):
            raise DataError(f"data: {len(data)} inputs but {len(ys)} labels")
        n = data.shape[0] if limit is None else min(limit, data.shape[0])
        for i in range(0, n, batch_size):
            where = f"data[{i}:{min(n, i + batch_size)}]"
            xb = check_batch(input_tensor(data[i:min(n, i + batch_size)], where, preprocess), where)
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
        elif isinstance(batch, Mapping):
            xb, yb = batch.get("x", batch.get("image")), batch.get("y", batch.get("label"))
        else:
            xb, yb = batch, None
        xb = check_batch(input_tensor(xb, f"batch {k}", preprocess), f"batch {k}")
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
        data = open_path(data, preprocess)
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


def open_path(path: str | os.PathLike, preprocess, labels: bool | None = False):
    """A path as data: an ``.npz`` as its arrays ``(x, y or None)``; YOLO-format data as the
    :class:`YoloDataset` of its train images (``labels`` as YoloDataset takes it: False for
    inputs alone, None for labels where the data has them); an image folder or COCO json as
    its dataset. DataError for a missing path, an unknown format or a missing ``preprocess``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        try:
            f = np.load(path)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
        with f:
            if "x" not in f:
                raise DataError(f"{path}: the .npz has no array 'x' (it has {sorted(f.files)})")
            return (f["x"], f["y"] if "y" in f else None)
    if is_yolo_source(path):  # Ultralytics data.yaml / images + labels: the training images
        if preprocess is None:
            raise DataError(f"{path}: YOLO-format data needs a preprocessing spec "
                            "(onnx2snn.zoo.Preprocess(size=(H, W), channels=3, letterbox=True))")
        return YoloDataset(path, "train", preprocess, labels=labels)
    if path.is_dir() or path.suffix == ".json":
        if preprocess is None:
            raise DataError(f"{path}: an image folder or COCO json needs a preprocessing spec ({PREPROCESS_HINT})")
        return open_dataset(path, preprocess)
    raise DataError(f"{path}: unknown data format (want .npz with 'x', an image folder, or a COCO .json)")


__all__ = ["iter_batches", "check_fits", "check_batch", "check_preprocess", "input_tensor", "sample_count",
           "progress_samples", "peek", "default_preprocess", "resolve_preprocess", "open_path", "dataset_length"]

"""Evaluation data as batches: inputs with labels (classification) or inputs with the
image ids and sizes that tie detections to COCO ground truth (detection).

Classification takes every form :func:`onnx2snn.data.iter_batches` takes
(tensor, ``(x, y)``, DataLoader, Dataset, ``.npz`` with ``x`` and ``y``, image folder).
Detection takes a COCO json (images in ``<json dir>/images``), an image folder with an
``annotations`` json, YOLO-format data (a ``data.yaml``, a folder with ``images/`` and
``labels/``, or a :class:`~onnx2snn.data.YoloDataset`), a
:class:`~onnx2snn.data.CocoImages`, annotated images in memory (the zoo's digit scenes:
a list of objects whose class offers ``batch_tensors(items)`` and ``ground_truth(items)``),
or a tensor whose rows follow the ``images`` of an ``annotations`` json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import DataError
from .batches import check_batch, input_tensor, iter_batches, sample_count
from .loaders import CocoImages
from .yolo_format import YoloDataset, is_yolo_source


@dataclass
class BatchMeta:
    """What a detection post-processing needs besides the outputs: per image its COCO id
    and original size (height, width), and the model's input size (height, width).
    ``geometry`` (letterboxed data): per image (gain x, gain y, pad left, pad top) with
    input = original * gain + pad."""

    image_ids: list[int]
    sizes: list[tuple[int, int]]
    input_size: tuple[int, int]
    geometry: list[tuple[float, float, float, float]] | None = None

    def to_original(self, boxes: torch.Tensor, i: int) -> torch.Tensor:
        """xyxy boxes in input pixels of image ``i`` -> pixels of the original image
        (through the letterbox and clipped to the image, as Ultralytics' scale_boxes)."""
        if self.geometry is not None:
            gx, gy, px, py = self.geometry[i]
            h, w = self.sizes[i]
            out = (boxes - boxes.new_tensor([px, py, px, py])) / boxes.new_tensor([gx, gy, gx, gy])
            return torch.stack([out[:, 0].clamp(0, w), out[:, 1].clamp(0, h), out[:, 2].clamp(0, w),
                                out[:, 3].clamp(0, h)], 1)
        h, w = self.sizes[i]
        sy, sx = h / self.input_size[0], w / self.input_size[1]
        if sx == 1.0 and sy == 1.0:
            return boxes
        return boxes * boxes.new_tensor([sx, sy, sx, sy])


@dataclass
class DetectionData:
    """Batches of (x, BatchMeta), the COCO ground truth and the number of images."""

    batches: Iterator[tuple[torch.Tensor, BatchMeta]]
    ground_truth: dict
    n: int
    description: str = ""
    extra: dict = field(default_factory=dict)


def classification_batches(data: Any, batch_size: int, limit: int | None, preprocess
                           ) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor | None]], int | None]:
    """(x, labels or None) batches and the number of samples when known (for the progress bar)."""
    total = sample_count(data, limit, preprocess)

    def gen():
        for xb, yb in iter_batches(data, batch_size, preprocess=preprocess, limit=limit, with_labels=True):
            if yb is not None:
                if yb.dim() == 2 and yb.shape[1] > 1:  # one-hot or soft labels
                    yb = yb.argmax(1)
                yb = yb.reshape(-1)
                if len(yb) != len(xb):
                    raise DataError(f"a batch has {len(xb)} inputs but {len(yb)} labels")
                if (yb < 0).all():  # ImageFolder without class folders, NpzArrays without y
                    yb = None
            yield xb, yb

    return gen(), total


def _subset(gt: dict, ids: list[int]) -> dict:
    keep = set(ids)
    out = dict(gt)
    out["images"] = [i for i in gt.get("images", []) if int(i["id"]) in keep]
    out["annotations"] = [a for a in gt.get("annotations", []) if int(a["image_id"]) in keep]
    out.setdefault("categories", [])
    return out


def _read_json(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such annotations file (want a COCO json with images, annotations, categories)")
    try:
        gt = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not a readable COCO json ({e})") from None
    if not isinstance(gt, dict) or "images" not in gt:
        raise DataError(f"{p}: not COCO ground truth (no 'images' list)")
    return gt


def detection_batches(data: Any, annotations: Any, batch_size: int, limit: int | None, preprocess) -> DetectionData:
    """Detection inputs in batches with their COCO image ids, and the ground truth restricted
    to the images that are evaluated (so ``limit`` does not count unseen images as misses)."""
    if _annotated_images(data):
        scenes = list(data)[:limit]
        kind = type(scenes[0])
        gt = kind.ground_truth(scenes)

        def gen_scenes():
            for i in range(0, len(scenes), batch_size):
                chunk = scenes[i:i + batch_size]
                x = kind.batch_tensors(chunk)
                yield check_batch(x, f"scenes[{i}:{i + len(chunk)}]"), BatchMeta(
                    [int(s.image_id) for s in chunk], [tuple(s.image.shape[:2]) for s in chunk], tuple(x.shape[-2:]))
        return DetectionData(gen_scenes(), gt, len(scenes), f"{len(scenes)} digit scenes")

    if isinstance(data, (str, os.PathLike)) and annotations is None and is_yolo_source(data):
        if not Path(data).exists():
            raise DataError(f"{data}: no such file or folder")
        data = YoloDataset(data, "val", preprocess, labels=True)
    if isinstance(data, YoloDataset):
        return _yolo_dataset(data, batch_size, limit)
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
        if p.suffix == ".json":
            if annotations is not None and Path(annotations).resolve() != p.resolve():
                raise DataError(f"data {p} is already the COCO json: pass it alone (images in <json dir>/images), "
                                "or pass the images folder as data= and the json as annotations=")
            ds = CocoImages(_annotations_path(p), None, preprocess)
        elif p.is_dir():
            if annotations is None:
                raise DataError(f"{p}: detection on an image folder needs annotations='instances.json' "
                                "(COCO ground truth whose file_name entries name the images)")
            ds = CocoImages(_annotations_path(annotations), p, preprocess)
        else:
            raise DataError(f"{p}: detection data must be a COCO json, an image folder (+ annotations=), or "
                            "the zoo's digit scenes")
        data = ds
    if isinstance(data, CocoImages):
        return _coco_dataset(data, batch_size, limit)

    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (np.ndarray, torch.Tensor)):
        data = data[0]
    if isinstance(data, (np.ndarray, torch.Tensor)):
        if annotations is None:
            raise DataError("detection on a tensor needs annotations= (a COCO json or dict whose 'images', in "
                            "order, are the tensor's rows)")
        gt = annotations if isinstance(annotations, dict) else _read_json(annotations)
        x = input_tensor(data, "data", preprocess)
        images = gt.get("images", [])
        n = len(x) if limit is None else min(limit, len(x))
        if n == 0:
            raise DataError("data: empty (no samples)")
        if len(images) < n:
            raise DataError(f"the annotations list {len(images)} images but the data has {n} rows: they must "
                            "match, row i being images[i]")
        images = images[:n]

        def gen_tensor():
            for i in range(0, n, batch_size):
                xb = check_batch(x[i:i + batch_size][: n - i], f"data[{i}:{i + batch_size}]")
                imgs = images[i:i + len(xb)]
                sizes = [(int(im.get("height", xb.shape[-2])), int(im.get("width", xb.shape[-1]))) for im in imgs]
                yield xb, BatchMeta([int(im["id"]) for im in imgs], sizes, tuple(xb.shape[-2:]))
        return DetectionData(gen_tensor(), _subset(gt, [int(im["id"]) for im in images]), n, f"{n} images")
    raise DataError(f"detection data of type {type(data).__name__} is not understood: pass a COCO json, an image "
                    "folder with annotations=, a CocoImages, the zoo's digit scenes, or a tensor with annotations=")


def _annotated_images(data: Any) -> bool:
    """A list of annotated in-memory images (e.g. the zoo's Scene): objects of one class
    with ``image`` [H, W], ``image_id`` and the class functions ``batch_tensors(items) -> x``
    and ``ground_truth(items) -> COCO dict``."""
    if not isinstance(data, (list, tuple)) or not data:
        return False
    kind = type(data[0])
    return (hasattr(kind, "batch_tensors") and hasattr(kind, "ground_truth")
            and all(type(s) is kind for s in data))


def _annotations_path(annotations) -> Path:
    if isinstance(annotations, dict):
        raise DataError("with an image folder, annotations= must be the path of the COCO json")
    p = Path(annotations)
    _read_json(p)  # clear error before CocoImages parses it
    return p


def _coco_dataset(ds, batch_size: int, limit: int | None) -> DetectionData:
    from PIL import Image

    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise DataError(f"{ds.json_path}: no images listed")
    images = ds.images[:n]

    def size_of(info) -> tuple[int, int]:
        if "height" in info and "width" in info:
            return int(info["height"]), int(info["width"])
        path = ds.image_dir / info["file_name"]
        try:
            with Image.open(path) as im:
                return im.size[1], im.size[0]
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the image listed in {ds.json_path} ({type(e).__name__}: {e})") \
                from None

    def gen():
        for i in range(0, n, batch_size):
            idx = range(i, min(n, i + batch_size))
            try:
                x = torch.stack([ds[j][0] for j in idx])
            except FileNotFoundError as e:
                raise DataError(f"{e.filename}: image listed in {ds.json_path} not found in {ds.image_dir}") from None
            yield check_batch(x, f"images {i}..{i + len(idx) - 1}"), BatchMeta(
                [int(images[j]["id"]) for j in idx], [size_of(images[j]) for j in idx], tuple(x.shape[-2:]))
    return DetectionData(gen(), _subset(ds.coco, [int(im["id"]) for im in images]), n,
                         f"{n} images of {ds.json_path}")


def _yolo_dataset(ds, batch_size: int, limit: int | None) -> DetectionData:
    n = len(ds) if limit is None else min(limit, len(ds))
    gt = _subset(ds.coco(), list(range(1, n + 1)))

    def gen():
        for i in range(0, n, batch_size):
            idx = range(i, min(n, i + batch_size))
            x = torch.stack([ds[j][0] for j in idx])
            yield check_batch(x, f"images {i}..{i + len(idx) - 1}"), BatchMeta(
                [j + 1 for j in idx], [ds.image_size(j) for j in idx], tuple(x.shape[-2:]),
                [ds.geometry(j) for j in idx])
    return DetectionData(gen(), gt, n, f"{n} images of {ds.source} ({ds.split})")


__all__ = ["BatchMeta", "DetectionData", "classification_batches", "detection_batches"]

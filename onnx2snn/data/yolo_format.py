"""The Ultralytics YOLO dataset format, read without Ultralytics (the zoo writes it: ``onnx2snn.zoo.write_yolo``).

A dataset is a ``data.yaml``::

    path: .              # dataset root (relative: to the yaml's folder)
    train: images/train  # a folder of images, a .txt listing images, or a list of those
    val: images/val
    names: {0: zero, 1: one}   # or a list

Each image ``.../images/<...>/name.png`` has a label file ``.../labels/<...>/name.txt``
(the last ``images`` component of the path replaced by ``labels``) with one line per
object, ``class cx cy w h``, normalised to [0, 1] by the image's width and height
(a polygon ``class x1 y1 x2 y2 ...`` counts as its bounding box). Labels become COCO
ground truth in memory (category id = class index, boxes in original image pixels), so
pycocotools scores them. A folder of images without labels serves calibration and
distillation.

Bad data raises :class:`~onnx2snn.errors.DataError` naming the file and line: a missing
label file (write an empty one for an image without objects, or pass
``missing_labels="empty"``), a class index beyond ``names``, a box outside [0, 1], an
unreadable image.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .letterbox import letterbox_geometry  # noqa: F401  (re-exported)
from .loaders import IMAGE_EXTENSIONS, Preprocess

SPLITS = ("train", "val", "test")
_TOL = 1e-6  # slack for coordinates written as 1.0000001


# -- data.yaml ---------------------------------------------------------------------------
def read_data_yaml(path: str | os.PathLike) -> dict:
    """Parse a ``data.yaml``: returns {"root": Path, "names": [str], "train"/"val"/"test": [Path] or None}."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such data.yaml")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not readable YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{p}: a data.yaml must be a mapping with train/val paths and names")
    names = raw.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DataError(f"{p}: 'names' keys must be class indices 0..N-1") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{p}: 'names' must number the classes 0..{len(keys) - 1} without gaps, got {keys}")
        names = [str(names[k] if k in names else names[str(k)]) for k in keys]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    elif names is None and "nc" in raw:
        names = [f"class{i}" for i in range(int(raw["nc"]))]
    else:
        raise DataError(f"{p}: needs 'names' (a list, or a mapping index -> name)")
    if "nc" in raw and int(raw["nc"]) != len(names):
        raise DataError(f"{p}: nc is {raw['nc']} but 'names' lists {len(names)} classes")
    root = Path(raw.get("path") or ".")
    if not root.is_absolute():
        root = (p.parent / root).resolve()
    out = {"root": root, "names": names, "yaml": p}
    for split in SPLITS:
        v = raw.get(split)
        if v is None:
            out[split] = None
            continue
        out[split] = [(root / s) if not Path(s).is_absolute() else Path(s) for s in (v if isinstance(v, list) else [v])]
    if out["train"] is None and out["val"] is None:
        raise DataError(f"{p}: lists neither 'train' nor 'val' images")
    return out


def _images_of(spec: Path) -> list[Path]:
    """Images of a folder (recursively, sorted) or of a .txt list (paths relative to the list's folder)."""
    if spec.is_dir():
        return sorted(q for q in spec.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
    if spec.is_file() and spec.suffix == ".txt":
        out = []
        for line in spec.read_text().splitlines():
            line = line.strip()
            if line:
                q = Path(line)
                out.append(q if q.is_absolute() else (spec.parent / q).resolve())
        return out
    raise DataError(f"{spec}: no such image folder or image list (.txt)")


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_labels(path: Path, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One label file -> (classes int64 [K], boxes cx, cy, w, h float64 [K, 4], normalised)."""
    classes, boxes = [], []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the label file ({e})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DataError(f"{where}: not numbers: {line.strip()!r} (want 'class cx cy w h')") from None
        if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
            raise DataError(f"{where}: {len(values)} values; want 'class cx cy w h' (5) or a polygon "
                            "'class x1 y1 x2 y2 ...' (odd count)")
        c = values[0]
        if c != int(c) or c < 0:
            raise DataError(f"{where}: class {fields[0]!r} is not an index >= 0")
        if num_classes is not None and int(c) >= num_classes:
            raise DataError(f"{where}: class {int(c)} is beyond names (which has {num_classes} classes, 0.."
                            f"{num_classes - 1})")
        coords = np.asarray(values[1:], np.float64)
        if not np.isfinite(coords).all() or coords.min() < -_TOL or coords.max() > 1 + _TOL:
            raise DataError(f"{where}: coordinates {fields[1:]} outside [0, 1]: YOLO labels are normalised by the "
                            "image width and height")
        if len(coords) == 4:
            box = coords
        else:  # polygon -> its bounding box
            xs, ys = coords[0::2], coords[1::2]
            box = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, xs.max() - xs.min(),
                            ys.max() - ys.min()])
        cx, cy, w, h = box
        if w < 0 or h < 0 or cx - w / 2 < -_TOL or cy - h / 2 < -_TOL or cx + w / 2 > 1 + _TOL or cy + h / 2 > 1 + _TOL:
            raise DataError(f"{where}: box (cx {cx:g}, cy {cy:g}, w {w:g}, h {h:g}) reaches outside the image [0, 1]")
        classes.append(int(c))
        boxes.append(box)
    return np.asarray(classes, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the header; DataError when the image cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
            return im.size[1], im.size[0]
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def is_yolo_source(source: Any) -> bool:
    """Whether a path is YOLO-format data: a ``.yaml``, a folder with ``images/``, or an
    ``images`` folder with a matching ``labels`` folder."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    p = Path(source)
    if p.suffix in (".yaml", ".yml"):
        return True
    if not p.is_dir():
        return False
    if (p / "images").is_dir():
        return True
    return "images" in p.parts and label_path(p / "x.png").parent.is_dir() and label_path(p / "x.png").parent != p


# -- the dataset ---------------------------------------------------------------------------
class YoloDataset(torch.utils.data.Dataset):
    """YOLO-format images (and labels) as model input.

    ``source``: a ``data.yaml`` (images of ``split``), a dataset folder with ``images/``
    (and ``labels/``; ``images/<split>`` when it has split folders), an ``images`` folder,
    or any folder of images (no labels). ``preprocess``: how images become input; default
    ``Preprocess(size, letterbox=True)`` as Ultralytics validates. ``labels``: None reads
    labels where the dataset has them, False never, True requires them.

    Items are ``(x [C, H, W], target)`` with target {"image_id", "boxes" [K, 4] xyxy in
    input pixels (after the letterbox), "labels" [K]}; :meth:`coco` gives the ground truth
    in original pixels, :meth:`geometry` how boxes map back.
    """

    def __init__(self, source: str | os.PathLike, split: str = "val", preprocess: Preprocess | None = None,
                 labels: bool | None = None, missing_labels: str = "error", size: tuple[int, int] | None = None,
                 channels: int = 3):
        if missing_labels not in ("error", "empty"):
            raise DataError(f"missing_labels must be 'error' or 'empty', not {missing_labels!r}")
        if split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}, not {split!r}")
        p = Path(source)
        self.source, self.split, self.names = p, split, None
        if p.suffix in (".yaml", ".yml"):
            spec = read_data_yaml(p)
            self.names = spec["names"]
            if spec[split] is None:
                raise DataError(f"{p}: has no '{split}' images (it lists "
                                f"{', '.join(s for s in SPLITS if spec[s]) or 'none'})")
            self.images = [q for d in spec[split] for q in _images_of(d)]
        elif p.is_dir():
            img_dir = p / "images" if (p / "images").is_dir() else p
            if (img_dir / split).is_dir():
                img_dir = img_dir / split
            self.images = _images_of(img_dir)
            names_file = p / "classes.txt"
            if names_file.is_file():
                self.names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
        else:
            raise DataError(f"{p}: no such data.yaml or image folder")
        if not self.images:
            raise DataError(f"{p}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
        # labelled when any image has its label file (then a missing one is an error)
        has_labels = any(label_path(q).is_file() for q in self.images)
        if labels is True and not has_labels:
            raise DataError(f"{p}: no labels folder next to the images (expected {label_path(self.images[0]).parent})")
        self.has_labels = has_labels if labels is None else bool(labels) and has_labels
        self.missing_labels = missing_labels
        if preprocess is None:
            if size is None:
                raise DataError("YOLO data needs preprocess= (e.g. Preprocess(size=(640, 640), channels=3, "
                                "letterbox=True)) or size=")
            preprocess = Preprocess(size=size, channels=channels, letterbox=True)
        self.preprocess = preprocess
        self._labels: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._sizes: list[tuple[int, int] | None] = [None] * len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    # labels and sizes are read once, on first use, so that image-only use stays cheap
    def labels(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image (classes [K], boxes cx cy w h normalised [K, 4]); checks every file."""
        if self._labels is None:
            out = []
            n = len(self.names) if self.names is not None else None
            for img in self.images:
                lp = label_path(img)
                if not lp.is_file():
                    if self.missing_labels == "empty":
                        out.append((np.zeros(0, np.int64), np.zeros((0, 4))))
                        continue
                    raise DataError(f"{lp}: missing label file for image {img}; write an empty .txt for an image "
                                    "without objects, or pass missing_labels='empty'")
                out.append(parse_labels(lp, n))
            self._labels = out
        return self._labels

    def image_size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i`` in its file."""
        if self._sizes[i] is None:
            self._sizes[i] = _image_size(self.images[i])
        return self._sizes[i]

    def geometry(self, i: int) -> tuple[float, float, float, float]:
        """(gain x, gain y, pad left, pad top) of image ``i``: input = original * gain + pad."""
        h, w = self.image_size(i)
        return self.preprocess.geometry(h, w)

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        path = self.images[i]
        try:
            with Image.open(path) as im:
                im.load()
                x = self.preprocess.image_to_tensor(im)
                self._sizes[i] = (im.size[1], im.size[0])
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
        target = {"image_id": i + 1}
        if self.has_labels:
            cls, b = self.labels()[i]
            h, w = self._sizes[i]
            gx, gy, px, py = self.preprocess.geometry(h, w)
            xyxy = np.stack([(b[:, 0] - b[:, 2] / 2) * w, (b[:, 1] - b[:, 3] / 2) * h,
                             (b[:, 0] + b[:, 2] / 2) * w, (b[:, 1] + b[:, 3] / 2) * h], 1) if len(b) else \
                np.zeros((0, 4))
            xyxy = xyxy * np.array([gx, gy, gx, gy]) + np.array([px, py, px, py])
            target.update(boxes=torch.as_tensor(xyxy, dtype=torch.float32), labels=torch.as_tensor(cls))
        return x, target

    def coco(self) -> dict:
        """COCO ground truth of the labels, in original image pixels (category id = class index)."""
        if not self.has_labels:
            raise DataError(f"{self.source}: images without labels have no ground truth (put labels/*.txt next to "
                            "images/, or pass a data.yaml)")
        labels = self.labels()
        n_classes = len(self.names) if self.names is not None else \
            1 + max((int(c.max()) for c, _ in labels if len(c)), default=-1)
        names = self.names or [str(k) for k in range(n_classes)]
        images, anns = [], []
        for i, (path, (cls, b)) in enumerate(zip(self.images, labels)):
            h, w = self.image_size(i)
            images.append({"id": i + 1, "file_name": str(path), "height": h, "width": w})
            for c, (cx, cy, bw, bh) in zip(cls.tolist(), b.tolist()):
                box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c), "bbox": box,
                             "area": box[2] * box[3], "iscrowd": 0})
        cats = [{"id": k, "name": n} for k, n in enumerate(names)]
        return {"images": images, "annotations": anns, "categories": cats}


def collate(batch):
    """DataLoader collate: stacked inputs and the list of targets."""
    xs, ts = zip(*batch)
    return torch.stack(xs), list(ts)


__all__ = ["YoloDataset", "read_data_yaml", "parse_labels", "label_path", "is_yolo_source",
           "letterbox_geometry", "collate", "SPLITS"]

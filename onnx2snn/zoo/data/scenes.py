"""Digit scenes: a small, exact detection data set built from real handwritten digits.

Each scene is a grayscale canvas with 1-6 scikit-learn digits pasted (max-blended) at
random places and sizes, some overlapping, plus optional clutter strokes and noise.
Because every digit is pasted by us, its box is known exactly: the tight box of its
ink pixels (value >= ``INK_THRESHOLD`` after resizing), in xyxy pixel edges. Max
blending keeps every ink pixel of every digit visible, so the box is also the box of
its visible ink. Images are quantized to 1/255 so PNG round trips are exact.

Train and val scenes draw their digits from disjoint source images (the digits
train/test split), so val measures generalisation to unseen handwriting.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ... import checks
from .digits import _raw_digits, split_indices

INK_THRESHOLD = 0.25
SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003}
DEFAULT_COUNTS = {"train": 4000, "val": 500}
CATEGORIES = [{"id": i, "name": str(i), "supercategory": "digit"} for i in range(10)]


@dataclass
class Scene:
    """One canvas: image float32 [H, W] in [0, 1]; boxes float32 [K, 4] xyxy; labels int64 [K]."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int = 0
    file_name: str = ""
    masks: np.ndarray | None = field(default=None, repr=False)  # bool [K, H, W] digit ink

    # what onnx2snn.data.evaluation asks of annotated in-memory images
    @staticmethod
    def batch_tensors(scenes: list["Scene"]) -> torch.Tensor:
        """Input x float32 [B, 1, H, W] of ``scenes``."""
        return scenes_to_tensors(scenes)[0]

    @staticmethod
    def ground_truth(scenes: list["Scene"]) -> dict:
        """COCO ground truth of ``scenes`` (:func:`coco_dict`)."""
        return coco_dict(scenes)


def _resize_patch(img8: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.from_numpy(img8)[None, None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp_(0, 1).numpy()


def _box_iou(a: np.ndarray, boxes: list[np.ndarray]) -> float:
    if not boxes:
        return 0.0
    b = np.stack(boxes)
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])  # noqa: E731
    return float((inter / (area(a) + area(b) - inter)).max())


def _draw_clutter(canvas: np.ndarray, rng: np.random.Generator, n: int) -> None:
    """Faint straight strokes: ink that is not a digit, so detectors learn to ignore it."""
    size_h, size_w = canvas.shape
    for _ in range(n):
        x0, y0 = rng.uniform(0, size_w), rng.uniform(0, size_h)
        ang, length = rng.uniform(0, np.pi), rng.uniform(4, 12)
        val = rng.uniform(0.2, 0.5)
        for s in np.linspace(0, length, int(length * 2) + 1):
            xi, yi = int(x0 + s * np.cos(ang)), int(y0 + s * np.sin(ang))
            if 0 <= xi < size_w and 0 <= yi < size_h:
                canvas[yi, xi] = max(canvas[yi, xi], val)


def make_scene(
    rng: np.random.Generator,
    sources: np.ndarray,
    size: int = 64,
    min_digits: int = 1,
    max_digits: int = 6,
    min_px: int = 12,
    max_px: int = 28,
    max_overlap: float = 0.3,
    clutter: int = 2,
    noise: float = 0.03,
    return_masks: bool = False,
) -> Scene:
    """Paste 1-6 random digits from ``sources`` (indices into the raw digits) on a canvas."""
    raw_x, raw_y = _raw_digits()
    canvas = np.zeros((size, size), np.float32)
    boxes, labels, masks = [], [], []
    want = int(rng.integers(min_digits, max_digits + 1))
    for _ in range(want * 10):  # rejection sampling keeps overlaps moderate
        if len(boxes) == want:
            break
        src = int(sources[rng.integers(len(sources))])
        h = int(rng.integers(min_px, max_px + 1))
        w = max(min_px, int(round(h * rng.uniform(0.8, 1.1))))
        w = min(w, size)
        patch = _resize_patch(raw_x[src], h, w)
        ink = patch >= INK_THRESHOLD
        if not ink.any():
            continue
        y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        rows, cols = np.nonzero(ink)
        box = np.array([x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1], np.float32)
        if _box_iou(box, boxes) > max_overlap:
            continue
        region = canvas[y0 : y0 + h, x0 : x0 + w]
        np.maximum(region, patch, out=region)
        boxes.append(box)
        labels.append(int(raw_y[src]))
        if return_masks:
            m = np.zeros((size, size), bool)
            m[y0 : y0 + h, x0 : x0 + w] = ink
            masks.append(m)
    if clutter:
        _draw_clutter(canvas, rng, int(rng.integers(0, clutter + 1)))
    if noise:
        canvas += rng.normal(0.0, noise, canvas.shape).astype(np.float32)
    image = (np.round(np.clip(canvas, 0, 1) * 255) / 255).astype(np.float32)
    return Scene(
        image=image,
        boxes=np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32),
        labels=np.asarray(labels, np.int64),
        masks=np.stack(masks) if return_masks and masks else (np.zeros((0, size, size), bool) if return_masks else None),
    )


def make_scenes(n: int, split: str = "train", seed: int = 0, size: int = 64, **kwargs) -> list[Scene]:
    """``n`` deterministic scenes of ``split`` ("train" or "val"); kwargs go to :func:`make_scene`."""
    split = checks.choice("split", split, tuple(SPLIT_SEED_OFFSET))
    n, seed, size = checks.integer("n", n, 0), checks.integer("seed", seed, 0), checks.integer("size", size, 8)
    sources = split_indices("train" if split == "train" else "test")
    rng = np.random.default_rng(seed + SPLIT_SEED_OFFSET[split])
    scenes = []
    for i in range(n):
        s = make_scene(rng, sources, size=size, **kwargs)
        s.image_id, s.file_name = i + 1, f"{split}_{i + 1:06d}.png"
        scenes.append(s)
    return scenes


def digit_scenes(split: str = "val", n: int | None = None, seed: int = 0, size: int = 64, **kwargs) -> list[Scene]:
    """The zoo's standard digit scenes: 4000 train or 500 val by default."""
    split = checks.choice("split", split, tuple(DEFAULT_COUNTS))
    return make_scenes(DEFAULT_COUNTS[split] if n is None else n, split, seed=seed, size=size, **kwargs)


def scenes_to_tensors(scenes: list[Scene]) -> tuple[torch.Tensor, list[dict]]:
    """Batch scenes as x float32 [B, 1, H, W] and targets [{"boxes", "labels"}]."""
    x = torch.from_numpy(np.stack([s.image for s in scenes]))[:, None]
    targets = [{"boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels)} for s in scenes]
    return x, targets


def coco_dict(scenes: list[Scene]) -> dict:
    """COCO ground truth (images, annotations with bbox xywh, categories) for ``scenes``."""
    images, anns = [], []
    for s in scenes:
        h, w = s.image.shape
        images.append({"id": int(s.image_id), "file_name": s.file_name or f"{s.image_id:06d}.png", "height": h, "width": w})
        for box, label in zip(s.boxes.tolist(), s.labels.tolist()):
            bw, bh = box[2] - box[0], box[3] - box[1]
            anns.append({
                "id": len(anns) + 1, "image_id": int(s.image_id), "category_id": int(label),
                "bbox": [box[0], box[1], bw, bh], "area": bw * bh, "iscrowd": 0,
            })
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def write_coco(scenes: list[Scene], out_dir: str | os.PathLike) -> Path:
    """Write out_dir/images/*.png (8-bit grayscale) and out_dir/instances.json; returns the json path."""
    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    gt = coco_dict(scenes)
    for s, info in zip(scenes, gt["images"]):
        Image.fromarray(np.round(s.image * 255).astype(np.uint8), mode="L").save(out / "images" / info["file_name"])
    path = out / "instances.json"
    path.write_text(json.dumps(gt))
    return path


def read_coco(json_path: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> list[Scene]:
    """Read a COCO json (+ grayscale images) back into scenes; image_dir defaults to <json dir>/images."""
    from PIL import Image

    json_path = Path(json_path)
    image_dir = Path(image_dir) if image_dir is not None else json_path.parent / "images"
    gt = json.loads(json_path.read_text())
    by_image: dict[int, list[dict]] = {}
    for a in gt.get("annotations", []):
        by_image.setdefault(int(a["image_id"]), []).append(a)
    scenes = []
    for info in gt["images"]:
        img = np.asarray(Image.open(image_dir / info["file_name"]).convert("L"), np.float32) / 255.0
        anns = by_image.get(int(info["id"]), [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([a["category_id"] for a in anns], np.int64)
        scenes.append(Scene(image=img, boxes=boxes, labels=labels, image_id=int(info["id"]), file_name=info["file_name"]))
    return scenes

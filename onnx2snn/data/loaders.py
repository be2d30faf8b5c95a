"""Loaders for the data users bring: image folders, .npz arrays, COCO json + images.

Every loader applies a :class:`Preprocess` spec (the one stored with each zoo preset)
and yields float32 tensors, so calibration and verification see exactly what the
model was trained on. (Also importable as ``onnx2snn.zoo.Preprocess`` etc.)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import checks
from ..errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocess:
    """How raw images become model input: resize to ``size`` (H, W), scale to [0, 1],
    then (x - mean) / std per channel; ``channels`` 1 (grayscale) or 3 (RGB).
    ``crop_fraction`` < 1 first resizes the shorter side to size / crop_fraction and
    centre-crops ``size`` (ImageNet evaluation: 0.875, i.e. 256 -> 224). ``letterbox``
    keeps the aspect ratio as Ultralytics validates: the image is scaled to fit ``size``
    (area averaging when shrinking, bilinear when enlarging) and padded centred with
    ``pad_value`` (114/255); :meth:`geometry` says how boxes map between the two."""

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: int = 1
    resize: str = "bilinear"
    crop_fraction: float = 1.0
    letterbox: bool = False
    pad_value: float = 114 / 255

    def __post_init__(self):
        size = (self.size, self.size) if isinstance(self.size, int) and not isinstance(self.size, bool) else self.size
        self.size = checks.shape("size", size, False, "(224, 224)")
        if len(self.size) != 2:
            raise ConfigError(f"size={self.size!r} is not valid: expected (H, W) such as (224, 224)", "size")
        self.channels = checks.choice("channels", self.channels, (1, 3))
        for name in ("mean", "std"):
            v = getattr(self, name)
            v = (v,) if isinstance(v, (int, float)) else tuple(v)
            v = tuple(checks.real(name, x, 0.0 if name == "std" else None, strict_min=name == "std") for x in v)
            if len(v) not in (1, self.channels):
                raise ConfigError(f"{name}={v!r} is not valid: give one value, or one per channel ({self.channels})",
                                  name)
            setattr(self, name, v)
        self.resize = checks.choice("resize", self.resize, ("nearest", "bilinear", "bicubic"))
        self.crop_fraction = checks.real("crop_fraction", self.crop_fraction, 0.0, 1.0, strict_min=True)
        self.letterbox = checks.boolean("letterbox", self.letterbox)
        self.pad_value = checks.real("pad_value", self.pad_value, 0.0, 1.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"], d["mean"], d["std"] = list(self.size), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(**d)

    def geometry(self, h0: int, w0: int) -> tuple[float, float, float, float]:
        """(gain x, gain y, pad left, pad top) of an (h0, w0) image: input = original * gain + pad."""
        if self.letterbox:
            from .letterbox import letterbox_geometry

            return letterbox_geometry(h0, w0, self.size)[1:]
        if self.crop_fraction < 1.0:
            raise ConfigError("box geometry of a centre crop is not supported: use crop_fraction=1 for detection", "crop_fraction")
        return self.size[1] / w0, self.size[0] / h0, 0.0, 0.0

    def _letterbox(self, x: torch.Tensor) -> torch.Tensor:
        from .letterbox import letterbox_geometry

        (h, w), _, _, left, top = letterbox_geometry(x.shape[-2], x.shape[-1], self.size)
        if (h, w) != tuple(x.shape[-2:]):
            shrink = h < x.shape[-2]
            x = F.interpolate(x, size=(h, w), mode="area" if shrink else "bilinear",
                              **({} if shrink else {"align_corners": False}))
        H, W = self.size
        return F.pad(x, (left, W - w - left, top, H - h - top), value=self.pad_value)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Resize and normalize float [C, H, W] or [N, C, H, W] already scaled to [0, 1]."""
        batched = x.dim() == 4
        x = x if batched else x[None]
        if x.shape[1] != self.channels:
            if x.shape[1] == 3 and self.channels == 1:  # ITU-R 601 luma, as PIL's "L"
                x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            elif x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            else:
                raise DataError(f"images with {x.shape[1]} channels cannot become {self.channels}-channel input")
        if self.letterbox:
            x = self._letterbox(x.float())
        elif tuple(x.shape[-2:]) != self.size:
            kw = {"align_corners": False} if self.resize in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=self.size, mode=self.resize, **kw)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = ((x.float() - mean) / std).contiguous()
        return x if batched else x[0]

    def image_to_tensor(self, image) -> torch.Tensor:
        """PIL image (or path) -> float32 [C, H, W]."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            path = image
            try:
                image = Image.open(path)
                image.load()
            except (OSError, ValueError, SyntaxError) as e:  # PIL: truncated, corrupt or not an image
                raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e}); remove or replace "
                                "the file") from None
        image = image.convert("L" if self.channels == 1 else "RGB")
        resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[self.resize]
        if self.letterbox:
            from .letterbox import letterbox_geometry

            (h, w), _, _, left, top = letterbox_geometry(image.size[1], image.size[0], self.size)
            if (w, h) != image.size:
                image = image.resize((w, h), Image.BOX if h < image.size[1] else Image.BILINEAR)
            canvas = Image.new(image.mode, (self.size[1], self.size[0]),
                               (round(self.pad_value * 255),) * len(image.getbands()))
            canvas.paste(image, (left, top))
            image = canvas
        if self.crop_fraction < 1.0:
            h, w = self.size
            short = round(max(h, w) / self.crop_fraction)
            scale = short / min(image.size)
            rw, rh = max(w, round(image.size[0] * scale)), max(h, round(image.size[1] * scale))
            image = image.resize((rw, rh), resample)
            left, top = (rw - w) // 2, (rh - h) // 2
            image = image.crop((left, top, left + w, top + h))
        if tuple(image.size[::-1]) != self.size:
            image = image.resize((self.size[1], self.size[0]), resample)
        arr = np.asarray(image, dtype=np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return self.normalize(torch.from_numpy(np.ascontiguousarray(arr)))


def _spec(preprocess):
    """Image loaders need a Preprocess (size, mean, std): ConfigError otherwise."""
    if not hasattr(preprocess, "image_to_tensor"):
        raise ConfigError(f"preprocess must be an onnx2snn.zoo.Preprocess(size=(H, W), mean=..., std=...), got "
                          f"{type(preprocess).__name__}", "preprocess")
    return preprocess


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


class ImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>`` (label = index of the sorted class name) or a flat folder (label -1)."""

    def __init__(self, root: str | os.PathLike, preprocess: Preprocess):
        self.root, self.preprocess = Path(root), _spec(preprocess)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder")
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if classes:
            self.classes = classes
            self.samples = [(p, i) for i, c in enumerate(classes) for p in sorted((self.root / c).iterdir()) if _is_image(p)]
        else:
            self.classes = []
            self.samples = [(p, -1) for p in sorted(self.root.iterdir()) if _is_image(p)]
        if not self.samples:
            raise DataError(f"{self.root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}"
                            f"{' in its class folders' if classes else ''})")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.preprocess.image_to_tensor(path), label


class NpzArrays(torch.utils.data.Dataset):
    """An .npz with ``x`` ([N, C, H, W], [N, H, W, C] or [N, H, W]; uint8 is scaled by 1/255,
    floats are taken as already in [0, 1]) and optional ``y``; label -1 without ``y``.
    With ``preprocess=None`` x is returned as stored (as float32, channel-first)."""

    def __init__(self, path: str | os.PathLike, preprocess: Preprocess | None = None):
        try:
            data = np.load(path)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
        with data:
            if "x" not in data:
                raise DataError(f"{path}: the .npz has no array 'x' (it has {sorted(data.files)})")
            x = data["x"]
            self.y = data["y"].astype(np.int64) if "y" in data else np.full(len(x), -1, np.int64)
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        self.x = torch.from_numpy(np.ascontiguousarray(x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)))
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.x[i]
        return (x if self.preprocess is None else self.preprocess.normalize(x)), int(self.y[i])


class CocoImages(torch.utils.data.Dataset):
    """COCO json + images: (x [C, H, W], target {"image_id", "boxes" xyxy in input pixels, "labels" category ids}).

    Boxes are rescaled with the image when the preprocess size differs from the file's size.
    """

    def __init__(self, json_path: str | os.PathLike, image_dir: str | os.PathLike | None, preprocess: Preprocess):
        self.json_path = Path(json_path)
        self.image_dir = Path(image_dir) if image_dir is not None else self.json_path.parent / "images"
        self.preprocess = _spec(preprocess)
        try:
            self.coco = json.loads(self.json_path.read_text())
            self.images = self.coco["images"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self.json_path}: not a readable COCO json with an 'images' list "
                            f"({type(e).__name__}: {e})") from None
        self.anns: dict[int, list[dict]] = {}
        for a in self.coco.get("annotations", []):
            self.anns.setdefault(int(a["image_id"]), []).append(a)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        from PIL import Image

        info = self.images[i]
        path = self.image_dir / info["file_name"]
        try:
            image = Image.open(path)
            image.load()
        except FileNotFoundError:
            raise DataError(f"{path}: image listed in {self.json_path} not found") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e}); remove or replace it") from None
        w0, h0 = image.size
        x = self.preprocess.image_to_tensor(image)
        sy, sx = self.preprocess.size[0] / h0, self.preprocess.size[1] / w0
        anns = [a for a in self.anns.get(int(info["id"]), []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([[a["bbox"][0] * sx, a["bbox"][1] * sy, (a["bbox"][0] + a["bbox"][2]) * sx,
                               (a["bbox"][1] + a["bbox"][3]) * sy] for a in anns], dtype=torch.float32).view(-1, 4)
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        return x, {"image_id": int(info["id"]), "boxes": boxes, "labels": labels}


def open_dataset(source: str | os.PathLike, preprocess: Preprocess, image_dir=None) -> torch.utils.data.Dataset:
    """Pick the loader from the path: a folder -> ImageFolder, .npz -> NpzArrays, .json -> CocoImages."""
    p = Path(source)
    if p.is_dir():
        return ImageFolder(p, preprocess)
    if p.suffix == ".npz":
        return NpzArrays(p, preprocess)
    if p.suffix == ".json":
        return CocoImages(p, image_dir, preprocess)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    raise DataError(f"{p}: unknown data source (want an image folder, .npz or COCO .json)")


def load_batch(source, preprocess: Preprocess, limit: int | None = None, image_dir=None) -> torch.Tensor:
    """The first ``limit`` inputs of ``source`` stacked as float32 [N, C, H, W] (e.g. calibration data)."""
    limit = checks.optional_integer("limit", limit, 1)
    ds = open_dataset(source, preprocess, image_dir)
    n = len(ds) if limit is None else min(limit, len(ds))
    return torch.stack([ds[i][0] for i in range(n)])


__all__ = ["Preprocess", "ImageFolder", "NpzArrays", "CocoImages", "open_dataset", "load_batch", "IMAGE_EXTENSIONS",
           "IMAGENET_MEAN", "IMAGENET_STD"]

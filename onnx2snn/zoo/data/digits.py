"""Real handwritten digits (scikit-learn's 1797 8x8 images), upsampled for small CNNs.

The split is fixed and stratified so that every input size sees the same train and
test images, and so that digit scenes can draw their train/val digits from disjoint
source images (see :mod:`onnx2snn.zoo.data.scenes`).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ... import checks
from ...errors import ConfigError

TEST_FRACTION = 0.2


@lru_cache(maxsize=4)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 [N, 8, 8] in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    return x, bunch.target.astype(np.int64)


@lru_cache(maxsize=4)
def split_indices(split: str, seed: int = 0) -> np.ndarray:
    """Indices of the raw digits in ``split`` ("train" or "test"), stratified 80/20."""
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ConfigError(f"split={split!r} is not valid: expected 'train' or 'test'", "split")
    _, y = _raw_digits()
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=TEST_FRACTION, random_state=seed, stratify=y)
    out = np.sort(train if split == "train" else test)
    out.setflags(write=False)
    return out


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly resize float [N, h, w] images to [N, size, size], clipped to [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t[:, 0].clamp_(0.0, 1.0).numpy()


def load_digits(size: int = 16, split: str = "train", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Digits of ``split`` as (x float32 [N, 1, size, size] in [0, 1], y int64 [N])."""
    size, seed = checks.integer("size", size, 1), checks.integer("seed", seed, 0)
    split = checks.choice("split", split, ("train", "test"))
    x, y = _raw_digits()
    idx = split_indices(split, seed)
    return upsample(x[idx], size)[:, None].copy(), y[idx].copy()

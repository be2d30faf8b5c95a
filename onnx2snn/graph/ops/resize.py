"""Resize / Upsample.

Resize is separable: along each resized axis every output entry is a fixed combination of
input entries. The importer computes that combination from the ONNX definition (coordinate
transform, nearest rounding, linear / cubic / antialias coefficients, exclude_outside,
tf_crop_and_resize extrapolation) for the static shape, and the twin applies it: an index
per output entry for nearest (exact for every dtype), an [out, in] matrix for linear and
cubic. ``F.interpolate`` is used where it computes the same thing (the common exports:
nearest up-sampling by powers of two, half-pixel / align-corners linear and cubic), so
that those twins read as usual.
"""

from __future__ import annotations

import math

import numpy as np
import torch.nn.functional as F

from .. import dtypes
from .. import functional as OF
from ..builder import ConversionFailure, NodeContext
from ..registry import register

_LINEAR = {3: "linear", 4: "bilinear", 5: "trilinear"}
_COORDS = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
           "half_pixel_symmetric", "tf_crop_and_resize"}


# -- the ONNX definition, one axis at a time ---------------------------------------------------
def _source_coords(coord: str, out: int, n: int, scale: float, roi: tuple[float, float] | None):
    """Source coordinate of each output index, and which ones extrapolate (tf_crop_and_resize)."""
    y = np.arange(out, dtype=np.float64)
    width = scale * n  # ONNX uses the unrounded output length here
    extra = np.zeros(out, dtype=bool)
    if coord == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif coord == "pytorch_half_pixel":
        x = np.full(out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif coord == "half_pixel_symmetric":
        offset = n / 2 * (1 - out / width)
        x = offset + (y + 0.5) / scale - 0.5
    elif coord == "align_corners":
        x = np.zeros(out) if width == 1 else y * (n - 1) / (width - 1)
    elif coord == "asymmetric":
        x = y / scale
    elif coord == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    else:  # tf_crop_and_resize
        r0, r1 = roi
        x = np.full(out, (r1 - r0) * (n - 1) / 2) if width == 1 else y * (r1 - r0) * (n - 1) / (width - 1)
        x = x + r0 * (n - 1)
        extra = (x < 0) | (x > n - 1)
    return x, extra


def _cubic(ratio: np.ndarray, a: float) -> np.ndarray:
    def k(t):
        t = np.abs(t)
        return np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                        np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))
    r = ratio[:, None]
    return k(np.concatenate([r + 1, r, 1 - r, 2 - r], axis=1))


def _coefficients(mode: str, ratio: np.ndarray, scale: float, nearest: str, a: float, antialias: bool):
    """[out, taps] weights of the taps around each source coordinate."""
    if mode == "nearest":
        frac = ratio
        pick_right = {"round_prefer_floor": frac > 0.5, "round_prefer_ceil": frac >= 0.5,
                      "floor": np.zeros_like(frac, dtype=bool), "ceil": np.ones_like(frac, dtype=bool)}[nearest]
        pick_right = np.where(frac == 1.0, True, pick_right)  # an integer coordinate: the tap on it
        return np.stack([~pick_right, pick_right], axis=1).astype(np.float64)
    if not antialias or scale >= 1.0:
        if mode == "linear":
            return np.stack([1 - ratio, ratio], axis=1)
        return _cubic(ratio, a)
    # antialias when down-sampling: the kernel stretched by 1 / scale, normalized
    if mode == "linear":
        start = int(np.floor(-1 / scale) + 1)
        taps = np.arange(start, 2 - start)
        w = np.clip(1 - np.abs((taps[None, :] - ratio[:, None]) * scale), 0, 1)
    else:
        start = int(np.floor(-2 / scale) + 1)
        taps = np.arange(start, 2 - start)
        t = np.abs(scale * (taps[None, :] - ratio[:, None]))
        w = np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                     np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))
    return w / w.sum(axis=1, keepdims=True)


def axis_weights(mode: str, coord: str, n: int, out: int, scale: float, nearest: str = "round_prefer_floor",
                 a: float = -0.75, exclude_outside: bool = False, antialias: bool = False,
                 roi: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The [out, n] matrix of one axis of an ONNX Resize, and the rows that extrapolate."""
    x, extra = _source_coords(coord, out, n, scale, roi)
    x_int = np.floor(x)
    ratio = np.where(x == x_int, 1.0, x - x_int)
    coeffs = _coefficients(mode, ratio, scale, nearest, a, antialias)
    taps = coeffs.shape[1]
    pad = int(math.ceil(taps / 2))
    xp = x + pad
    p = np.floor(xp).astype(np.int64)
    frac = xp - p
    if taps % 2 == 0:  # the taps nearest to x, ties to the smaller index
        offset = np.where(frac == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        base = -((taps - 1) // 2)
        offset = np.where(frac <= 0.5, base, base + 1)
    idx = (p + offset)[:, None] + np.arange(taps)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((idx < 0) | (idx >= n), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    w = np.zeros((out, n))
    np.add.at(w, (np.repeat(np.arange(out), taps), np.clip(idx, 0, n - 1).reshape(-1)), coeffs.reshape(-1))
    w[extra] = 0.0
    return w, extra


# -- converters -----------------------------------------------------------------------------
def _plan(ctx: NodeContext, scales, sizes, axes, policy: str):
    """(scale, output length) per axis of the input, as ONNX determines them."""
    shape = ctx.shape(0)
    r = len(shape)
    axes = list(range(r)) if axes is None else [a % r for a in axes]
    scale = [1.0] * r
    out = list(shape)
    if sizes is not None:
        if len(sizes) != len(axes):
            raise ConversionFailure(f"Resize sizes {list(sizes)} do not match the axes {axes}")
        ratios = {a: s / shape[a] for a, s in zip(axes, sizes)}
        if policy == "stretch":
            for a, s in zip(axes, sizes):
                scale[a], out[a] = ratios[a], int(s)
        else:
            s = min(ratios.values()) if policy == "not_larger" else max(ratios.values())
            for a in axes:
                scale[a], out[a] = s, int(s * shape[a] + 0.5)
    else:
        if len(scales) != len(axes):
            raise ConversionFailure(f"Resize scales {list(scales)} do not match the axes {axes}")
        for a, s in zip(axes, scales):
            scale[a], out[a] = float(s), int(float(s) * shape[a])
    return shape, scale, out, axes


def _resize(ctx: NodeContext, scales, sizes, mode: str, coord: str, nearest: str, axes=None,
            roi=None, policy: str = "stretch"):
    if mode not in ("nearest", "linear", "cubic"):
        raise ConversionFailure(f"Resize mode {mode!r} is not supported")
    if coord not in _COORDS:
        raise ConversionFailure(f"Resize coordinate_transformation_mode {coord!r} is not supported")
    a = float(ctx.attr("cubic_coeff_a", -0.75))
    exclude = bool(ctx.attr("exclude_outside", 0))
    antialias = bool(ctx.attr("antialias", 0)) and mode != "nearest"
    extrapolation = float(ctx.attr("extrapolation_value", 0.0))
    shape, scale, out, axes = _plan(ctx, scales, sizes, axes, policy)
    r = len(shape)
    if roi is not None and roi.size:
        roi = [float(v) for v in roi.reshape(-1)]
        if len(roi) == 2 * len(axes) and len(axes) != r:
            full = [0.0] * r + [1.0] * r
            for i, ax in enumerate(axes):
                full[ax], full[r + ax] = roi[i], roi[len(axes) + i]
            roi = full
    else:
        roi = None
    if coord == "tf_crop_and_resize" and roi is None:
        raise ConversionFailure("Resize with tf_crop_and_resize needs a constant roi")
    moved = [k for k in range(r) if out[k] != shape[k] or not math.isclose(scale[k], 1.0)
             or (coord == "tf_crop_and_resize" and (roi[k], roi[r + k]) != (0.0, 1.0))]
    x = ctx.inputs[0]
    if not moved:
        return [x]
    if 0 in moved and ctx.builder.static_batch is not None:
        raise ConversionFailure("Resize of the batch dim is not supported (the twin takes any batch size)")
    fast = _interpolate(ctx, x, shape, scale, out, moved, mode, coord, nearest, a, exclude, antialias,
                        scales is not None)
    if fast is not None:
        return [fast]
    mats, extras = [], []
    for k in moved:
        w, extra = axis_weights(mode, coord, shape[k], out[k], scale[k], nearest, a, exclude, antialias,
                                None if roi is None else (roi[k], roi[r + k]))
        mats.append(w)
        extras.append(extra)
    one_hot = all(((w == 0) | (w == 1)).all() and (w.sum(axis=1) == 1).all() for w in mats)
    if one_hot and not any(e.any() for e in extras):
        idx = [np.argmax(w, axis=1).astype(np.int64) for w in mats]
        return [ctx.function(OF.index_axes, x, moved, idx)]
    if not ctx.is_float(0):
        raise ConversionFailure(f"Resize {mode} of {dtypes.name(ctx.dtype(0) or 0)} tensors is not supported")
    wdt = np.float64 if ctx.dtype(0) == dtypes.TP.DOUBLE else np.float32
    biases = [np.where(e, extrapolation, 0.0).astype(wdt) if e.any() else None for e in extras]
    if any(b is not None for b in biases):
        return [ctx.function(OF.matmul_axes, x, moved, [w.astype(wdt) for w in mats],
                             [b if b is not None else np.zeros(len(w), wdt) for b, w in zip(biases, mats)])]
    return [ctx.function(OF.matmul_axes, x, moved, [w.astype(wdt) for w in mats])]


def _interpolate(ctx, x, shape, scale, out, moved, mode, coord, nearest, a, exclude, antialias, by_scale):
    """F.interpolate where it equals the ONNX definition, else None."""
    r = len(shape)
    if min(moved) < 2 or r not in (3, 4, 5) or not ctx.is_float(0) or antialias:
        return None
    spatial = list(range(2, r))
    kwargs: dict = {}
    if by_scale:
        kwargs = {"scale_factor": tuple(float(scale[k]) for k in spatial), "recompute_scale_factor": False}
    else:
        kwargs = {"size": tuple(int(out[k]) for k in spatial)}
    if mode == "nearest":
        pow2 = all(float(scale[k]).is_integer() and int(scale[k]) >= 1 and (int(scale[k]) & (int(scale[k]) - 1)) == 0
                   and out[k] == shape[k] * int(scale[k]) for k in spatial)
        ok = pow2 and ((coord == "asymmetric" and nearest == "floor") or
                       (coord in ("half_pixel", "pytorch_half_pixel") and nearest.startswith("round_prefer")))
        return ctx.function(F.interpolate, x, mode="nearest", **kwargs) if ok else None
    if exclude or any(out[k] <= 1 for k in spatial):
        return None
    if coord in ("half_pixel", "pytorch_half_pixel"):
        align = False
    elif coord == "align_corners" and all(float(scale[k] * shape[k]) == out[k] for k in spatial):
        align = True
    else:
        return None
    if mode == "cubic":
        if r != 4 or abs(a + 0.75) > 1e-12:
            return None
        tmode = "bicubic"
    else:
        tmode = _LINEAR[r]
    return ctx.function(F.interpolate, x, mode=tmode, align_corners=align, **kwargs)


@register("Resize", since=10)
def resize(ctx: NodeContext):
    roi = None
    if ctx.opset >= 11:
        scales = ctx.const(2, "scales") if ctx.has_input(2) else None
        sizes = ctx.const(3, "sizes") if ctx.has_input(3) else None
        scales = None if scales is None or not scales.size else scales
        sizes = None if sizes is None or not sizes.size else sizes
        coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
        roi = ctx.const(1, "roi") if ctx.has_input(1) else None
    else:
        scales, sizes = ctx.const(1, "scales"), None
        coord = "asymmetric"
    if scales is None and sizes is None:
        raise ConversionFailure("Resize needs constant scales or sizes")
    mode = ctx.attr("mode", "nearest")
    nearest = ctx.attr("nearest_mode", "round_prefer_floor")
    if ctx.opset < 11 and mode == "nearest":
        nearest = "floor"
    return _resize(ctx, None if scales is None else [float(s) for s in scales],
                   None if sizes is None else [int(s) for s in sizes], mode, coord, nearest,
                   axes=ctx.attr("axes"), roi=roi, policy=ctx.attr("keep_aspect_ratio_policy", "stretch"))


@register("Upsample")
def upsample(ctx: NodeContext):
    scales = ctx.const(1, "scales") if ctx.has_input(1) else np.asarray(ctx.attr("scales"))
    mode = ctx.attr("mode", "nearest")
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    return _resize(ctx, [float(s) for s in scales], None, mode, "asymmetric", "floor")

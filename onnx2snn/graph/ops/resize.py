"""Resize / Upsample: nearest and (bi/tri)linear and cubic, mapped onto F.interpolate
where the ONNX coordinate mode has an exact torch equivalent."""

from __future__ import annotations

import torch.nn.functional as F

from ..builder import ConversionFailure, NodeContext
from ..registry import register

_LINEAR = {3: "linear", 4: "bilinear", 5: "trilinear"}


def _interp(ctx: NodeContext, scales, sizes, mode: str, coord: str, nearest_mode: str):
    rank = ctx.rank(0)
    x = ctx.inputs[0]
    if scales is not None and any(abs(s - 1.0) > 0 for s in scales[:2]):
        raise ConversionFailure(f"Resize of the batch or channel dim (scales {list(scales)}) is not supported")
    if sizes is not None:
        in_shape = ctx.input_shapes[0]
        if in_shape is not None and list(sizes[:2]) != list(in_shape[:2]) and in_shape[0] == sizes[0]:
            raise ConversionFailure("Resize of the channel dim is not supported")
    kwargs: dict = {}
    if sizes is not None:
        kwargs["size"] = tuple(int(s) for s in sizes[2:])
    else:
        sf = tuple(float(s) for s in scales[2:])
        kwargs["scale_factor"] = sf
    if mode == "nearest":
        if coord == "asymmetric" and nearest_mode == "floor":
            tmode = "nearest"
        elif coord in ("half_pixel", "pytorch_half_pixel") and nearest_mode in ("round_prefer_ceil",):
            tmode = "nearest-exact"
        elif coord in ("half_pixel", "pytorch_half_pixel") and _integer_upscale(ctx, scales, sizes):
            tmode = "nearest"  # integer up-sampling: every rounding picks floor(dst / scale)
        else:
            raise ConversionFailure(
                f"Resize nearest with coordinate_transformation_mode={coord!r}, nearest_mode="
                f"{nearest_mode!r} is not supported")
        if "scale_factor" in kwargs and tmode == "nearest":
            kwargs["recompute_scale_factor"] = False
        return [ctx.function(F.interpolate, x, mode=tmode, **kwargs)]
    if mode in ("linear", "cubic"):
        if coord in ("half_pixel", "pytorch_half_pixel"):
            align = False
        elif coord == "align_corners":
            align = True
        else:
            raise ConversionFailure(f"Resize {mode} with coordinate_transformation_mode={coord!r} "
                                    "is not supported (half_pixel, pytorch_half_pixel, align_corners are)")
        if mode == "cubic":
            if rank != 4:
                raise ConversionFailure("cubic Resize is supported on 4-D tensors only")
            if abs(float(ctx.attr("cubic_coeff_a", -0.75)) + 0.75) > 1e-6:
                raise ConversionFailure("cubic Resize with cubic_coeff_a != -0.75 is not supported")
            tmode = "bicubic"
        else:
            tmode = _LINEAR.get(rank)
            if tmode is None:
                raise ConversionFailure(f"linear Resize on a rank-{rank} tensor is not supported")
        if "scale_factor" in kwargs:
            kwargs["recompute_scale_factor"] = False
        return [ctx.function(F.interpolate, x, mode=tmode, align_corners=align, **kwargs)]
    raise ConversionFailure(f"Resize mode {mode!r} is not supported")


def _integer_upscale(ctx: NodeContext, scales, sizes) -> bool:
    if sizes is not None:
        in_shape = ctx.input_shapes[0]
        return in_shape is not None and all(
            isinstance(i, int) and i > 0 and o % i == 0 for i, o in zip(in_shape[2:], sizes[2:]))
    return all(float(s).is_integer() and s >= 1 for s in scales[2:])


@register("Resize", since=10)
def resize(ctx: NodeContext):
    if ctx.opset >= 11:
        scales = ctx.const(2, "scales") if ctx.has_input(2) and ctx.const(2).size else None
        sizes = ctx.const(3, "sizes") if ctx.has_input(3) and ctx.const(3).size else None
        coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    else:
        scales, sizes = ctx.const(1, "scales"), None
        coord = "asymmetric"
    if ctx.attr("antialias", 0):
        raise ConversionFailure("Resize with antialias=1 is not supported")
    if ctx.attr("axes") is not None:
        raise ConversionFailure("Resize with axes is not supported")
    if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ConversionFailure("Resize with keep_aspect_ratio_policy is not supported")
    if coord == "tf_crop_and_resize":
        raise ConversionFailure("Resize with tf_crop_and_resize is not supported")
    mode = ctx.attr("mode", "nearest")
    return _interp(ctx, None if scales is None else [float(s) for s in scales],
                   None if sizes is None else [int(s) for s in sizes], mode, coord,
                   ctx.attr("nearest_mode", "round_prefer_floor"))


@register("Upsample")
def upsample(ctx: NodeContext):
    scales = ctx.const(1, "scales") if ctx.has_input(1) else ctx.attr("scales")
    mode = ctx.attr("mode", "nearest")
    coord = "asymmetric"
    if mode != "nearest":
        raise ConversionFailure("Upsample with linear mode (asymmetric coordinates) is not supported; "
                                "re-export with opset >= 11 to get Resize")
    return _interp(ctx, [float(s) for s in scales], None, mode, coord, "floor")

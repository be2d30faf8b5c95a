"""Small functions the ANN twin calls where ONNX semantics differ from one torch call.

They are plain module-level functions so that ``print(twin.code)`` shows them by name
and a twin can be pickled or scripted.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def reshape_keep_batch(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Reshape to ``(x.shape[0], *shape)``: the exporter's batch size made flexible."""
    return x.reshape((x.shape[0],) + tuple(shape))


def expand_keep_batch(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Expand to ``(x.shape[0], *shape)``, broadcasting as ONNX Expand does."""
    target = (x.shape[0],) + tuple(shape)
    return x.expand(torch.broadcast_shapes(x.shape, target))


def reshape_affine(x: torch.Tensor, base: Sequence[int], slope: Sequence[int], numel0: int, batch0: int,
                   allowzero: bool = False) -> torch.Tensor:
    """Reshape to a target that follows the batch size: ``base + slope * (B - batch0)``,
    where B is ``x``'s batch (its size over its size ``numel0`` at ``batch0``)."""
    batch = x.numel() * batch0 // numel0 if numel0 else batch0
    target = [b + s * (batch - batch0) for b, s in zip(base, slope)]
    if not allowzero:
        target = [x.shape[i] if t == 0 else t for i, t in enumerate(target)]
    return x.reshape(target)


def expand_affine(x: torch.Tensor, base: Sequence[int], slope: Sequence[int], numel0: int,
                  batch0: int) -> torch.Tensor:
    """ONNX Expand to a target that follows the batch size (see :func:`reshape_affine`)."""
    batch = x.numel() * batch0 // numel0 if numel0 else batch0
    target = [b + s * (batch - batch0) for b, s in zip(base, slope)]
    return x.expand(torch.broadcast_shapes(x.shape, tuple(target)))


def shape_of(x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
    """ONNX Shape at run time: ``x.shape[start:end]`` as an int64 tensor on ``x``'s device
    (where the index arithmetic built from it meets the twin's buffers)."""
    return torch.tensor(tuple(x.shape)[start:end], dtype=torch.int64, device=x.device)


def onnx_range(start, limit, delta, dtype: torch.dtype | None = None) -> torch.Tensor:
    """ONNX Range with scalar tensors (or numbers): ``start, start + delta, ...`` below ``limit``."""
    tensors = [v for v in (start, limit, delta) if isinstance(v, torch.Tensor)]
    if dtype is None:
        dtype = tensors[0].dtype if tensors else None
    device = tensors[0].device if tensors else None
    vals = [v.item() if isinstance(v, torch.Tensor) else v for v in (start, limit, delta)]
    return torch.arange(*vals, dtype=dtype, device=device)


def expand_batch_like(c: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """A batch-1 constant repeated to the batch of ``ref`` (concatenated next to it)."""
    return c.expand((ref.shape[0],) + tuple(c.shape[1:]))


def onnx_expand(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """ONNX Expand: broadcast of the input shape and the target shape."""
    return x.expand(torch.broadcast_shapes(x.shape, tuple(shape)))


def flatten_2d(x: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Flatten: a 2-D tensor of shape (prod(dims[:axis]), prod(dims[axis:]))."""
    axis = axis % x.dim() if x.dim() else 0
    lead = 1
    for d in x.shape[:axis]:
        lead *= d
    return x.reshape(lead, -1)


def pad_then(x: torch.Tensor, pads: Sequence[int], value: float, mode: str = "constant") -> torch.Tensor:
    """F.pad with ONNX's mode names; ``pads`` in torch order (last dim first)."""
    return F.pad(x, list(pads), mode=mode, value=value if mode == "constant" else None)


def softmax_2d(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Softmax as ONNX opset < 13 defines it: over all dims from ``axis`` on."""
    shape = x.shape
    return torch.softmax(x.reshape(*shape[:axis], -1), dim=-1).reshape(shape)


def log_softmax_2d(x: torch.Tensor, axis: int) -> torch.Tensor:
    shape = x.shape
    return torch.log_softmax(x.reshape(*shape[:axis], -1), dim=-1).reshape(shape)


def int_div(a: torch.Tensor, b) -> torch.Tensor:
    """ONNX Div on integers truncates toward zero."""
    return torch.div(a, b, rounding_mode="trunc")


def hard_sigmoid(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


def gather(x: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Gather: index ``x`` along ``axis`` with an index tensor of any rank."""
    n = x.shape[axis]
    idx = torch.where(indices < 0, indices + n, indices).long()
    flat = torch.index_select(x, axis, idx.reshape(-1))
    return flat.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def onnx_slice(x: torch.Tensor, starts: Sequence[int], ends: Sequence[int],
               axes: Sequence[int], steps: Sequence[int]) -> torch.Tensor:
    """ONNX Slice with negative steps (torch slicing takes only positive ones)."""
    for s, e, a, st in zip(starts, ends, axes, steps):
        n = x.shape[a]
        if st > 0:
            x = x.narrow(a, 0, n)[(slice(None),) * a + (slice(s, e, st),)]
        else:
            s = max(-1, min(n - 1, s + n if s < 0 else s))
            e = max(-1, min(n - 1, e + n if e < -1 else e)) if e >= -n - 1 else -1
            idx = torch.arange(s, e, st, device=x.device)
            x = torch.index_select(x, a, idx)
    return x


def prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, x * slope)


def clip(x: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
    return torch.clamp(x, lo, hi)


def pow_as_base(a: torch.Tensor, b) -> torch.Tensor:
    """ONNX Pow with operands of different types: the result has the base's type (an
    integer base is raised in float64 and truncated, as numpy's astype does)."""
    if not a.dtype.is_floating_point:
        return torch.pow(a.double(), b).to(a.dtype)
    return torch.pow(a, b).to(a.dtype)


_F8_NAN_ABOVE = {torch.float8_e4m3fn: 464.0}  # e4m3fn has no inf: ONNX gives NaN past max + half a step


def cast_float8(x: torch.Tensor, dtype: torch.dtype, saturate: bool) -> torch.Tensor:
    """ONNX Cast to a float8 type: with ``saturate`` out-of-range values (and inf) clip to
    the largest finite value, otherwise they become inf or NaN as the type allows."""
    x = x.float()
    if saturate:
        info = torch.finfo(dtype)
        return x.clamp(info.min, info.max).to(dtype)
    y = x.to(dtype)
    limit = _F8_NAN_ABOVE.get(dtype)
    if limit is not None:
        nan = torch.tensor(float("nan"), dtype=torch.float32).to(dtype)
        y = torch.where(x.abs() > limit, nan, y)
    return y


def clamp_tensors(x: torch.Tensor, lo, hi) -> torch.Tensor:
    """ONNX Clip with bounds that are tensors (or None); min > max gives max, as numpy."""
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype) if isinstance(lo, torch.Tensor) else torch.tensor(lo, dtype=x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype) if isinstance(hi, torch.Tensor) else torch.tensor(hi, dtype=x.dtype))
    return x


def shrink(x: torch.Tensor, lambd: float, bias: float) -> torch.Tensor:
    """ONNX Shrink: x - bias above lambd, x + bias below -lambd, 0 between."""
    zero = torch.zeros((), dtype=x.dtype)
    return torch.where(x > lambd, x - bias, torch.where(x < -lambd, x + bias, zero)).to(x.dtype)


def hardmax(x: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Hardmax (opset >= 13): one-hot of the first maximum along ``axis``."""
    idx = torch.argmax(x, dim=axis, keepdim=True)
    return torch.zeros_like(x).scatter_(axis, idx, 1)


def arg_last(x: torch.Tensor, axis: int, keepdim: bool, largest: bool) -> torch.Tensor:
    """ArgMax / ArgMin with select_last_index=1: the last index of the extreme value."""
    flipped = torch.flip(x, [axis])
    idx = torch.argmax(flipped, dim=axis, keepdim=keepdim) if largest else torch.argmin(flipped, dim=axis, keepdim=keepdim)
    return x.shape[axis] - 1 - idx


def reduce_empty(x: torch.Tensor, axes: Sequence[int], keepdim: bool, value: float) -> torch.Tensor:
    """A reduction over an empty set of elements: ``value`` (0 for sums, 1 for products,
    -inf / +inf for max / min) in the reduced shape."""
    shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if keepdim else \
        [d for i, d in enumerate(x.shape) if i not in axes]
    if x.dtype == torch.bool:
        return torch.full(shape, bool(value > 0) if value in (float("inf"), float("-inf")) else bool(value),
                          dtype=x.dtype, device=x.device)
    if not x.dtype.is_floating_point and value in (float("inf"), float("-inf")):
        info = torch.iinfo(x.dtype)
        value = info.max if value > 0 else info.min
    return torch.full(shape, value, dtype=x.dtype, device=x.device)


def depth_to_space_dcr(x: torch.Tensor, bs: int) -> torch.Tensor:
    """ONNX DepthToSpace in DCR mode (depth, column, row)."""
    b, c, h, w = x.shape
    y = x.reshape(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(b, c // (bs * bs), h * bs, w * bs)


def space_to_depth(x: torch.Tensor, bs: int) -> torch.Tensor:
    """ONNX SpaceToDepth: blocks of bs x bs pixels to channels (block position major)."""
    b, c, h, w = x.shape
    y = x.reshape(b, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(b, c * bs * bs, h // bs, w // bs)


def gather_elements(x: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX GatherElements (negative indices count from the end)."""
    idx = indices.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    return torch.gather(x, axis, idx)


def gather_nd(x: torch.Tensor, indices: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """ONNX GatherND: index the leading dims of ``x`` (after ``batch_dims`` batch dims) with
    the vectors in the last dim of ``indices``."""
    idx = indices.long()
    bshape = tuple(x.shape[:batch_dims])
    nb = 1
    for d in bshape:
        nb *= d
    k = idx.shape[-1]
    data = x.reshape((nb,) + tuple(x.shape[batch_dims:]))
    dims = torch.tensor(x.shape[batch_dims:batch_dims + k], dtype=torch.long, device=x.device)
    idx = idx.reshape(nb, -1, k)
    idx = torch.where(idx < 0, idx + dims, idx)
    flat = torch.zeros(idx.shape[:2], dtype=torch.long, device=x.device)
    for j in range(k):  # row-major linear index into the k indexed dims
        flat = flat * int(x.shape[batch_dims + j]) + idx[..., j]
    rest = tuple(x.shape[batch_dims + k:])
    data = data.reshape((nb, -1) + rest)
    out = torch.stack([data[i].index_select(0, flat[i]) for i in range(nb)]) if nb else data[:, :0]
    return out.reshape(bshape + tuple(indices.shape[batch_dims:-1]) + rest)


def index_axes(x: torch.Tensor, axes: Sequence[int], indices: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pick entries along several axes, one index vector per axis (nearest-neighbour Resize)."""
    for a, i in zip(axes, indices):
        x = torch.index_select(x, a, i)
    return x


def matmul_axes(x: torch.Tensor, axes: Sequence[int], weights: Sequence[torch.Tensor],
                biases: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Apply one [out, in] matrix (and an optional bias per output entry) along each axis,
    one axis after the other (separable linear / cubic Resize)."""
    dtype = x.dtype
    for k, (a, w) in enumerate(zip(axes, weights)):
        y = torch.movedim(x, a, -1).to(w.dtype) @ w.t()
        if biases is not None:
            y = y + biases[k]
        x = torch.movedim(y, -1, a)
    return x.to(dtype)


def pool_sum_div(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                 pads: Sequence[int], divisor: torch.Tensor) -> torch.Tensor:
    """Average pooling as ONNX defines it in every case torch's pools do not cover
    (dilations, asymmetric pads, count_include_pad=0 with large pads, ceil mode): zero-pad
    (``pads`` in F.pad order), sum each window with a ones kernel, divide by ``divisor``
    (the count of the window's elements that take part, per output position)."""
    n, c = x.shape[:2]
    s = _pool_sum(F.pad(x, list(pads)), kernel, stride, dilation)
    return (s.reshape((n, c) + tuple(s.shape[2:])) / divisor).to(x.dtype)


def _pool_sum(xp: torch.Tensor, kernel, stride, dilation) -> torch.Tensor:
    nd = len(kernel)
    n, c = xp.shape[:2]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    ones = torch.ones((1, 1) + tuple(kernel), dtype=xp.dtype, device=xp.device)
    return conv(xp.reshape((n * c, 1) + tuple(xp.shape[2:])), ones, stride=tuple(stride), dilation=tuple(dilation))


def crop_pad(x: torch.Tensor, pads: Sequence[int]) -> torch.Tensor:
    """F.pad with zeros where ``pads`` (F.pad order) are positive, a crop where negative."""
    return F.pad(x, list(pads))


def layer_norm_stats(x: torch.Tensor, axis: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNormalization's optional outputs: the mean and 1/std over dims ``axis..``."""
    dims = tuple(range(axis, x.dim()))
    xf = x.float()
    mean = xf.mean(dim=dims, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=dims, keepdim=True)
    return mean, torch.rsqrt(var + eps)


def rms_norm(x: torch.Tensor, axis: int, eps: float, scale) -> torch.Tensor:
    """ONNX RMSNormalization: x / sqrt(mean(x^2 over dims axis..) + eps) * scale, in float32."""
    dims = tuple(range(axis, x.dim()))
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=dims, keepdim=True) + eps)
    return (y * scale).to(x.dtype)


def lp_normalize(x: torch.Tensor, axis: int, p: int) -> torch.Tensor:
    """ONNX LpNormalization: x / ||x||_p along ``axis`` (0 where the norm is 0)."""
    n = torch.linalg.vector_norm(x, ord=p, dim=axis, keepdim=True)
    return torch.where(n == 0, torch.zeros_like(x), x / n)


def instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """ONNX InstanceNormalization (per sample and channel, over the spatial dims)."""
    return F.instance_norm(x, weight=weight, bias=bias, eps=eps)


def flat_indices(idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MaxPool indices as ONNX counts them (over the whole tensor, not per channel plane)."""
    n, c = x.shape[:2]
    plane = 1
    for d in x.shape[2:]:
        plane *= d
    offset = torch.arange(n * c, device=idx.device).reshape((n, c) + (1,) * (idx.dim() - 2)) * plane
    return idx + offset


def require_batch(x: torch.Tensor, batch: int, why: str) -> torch.Tensor:
    """Refuse another batch size than the one the graph was imported with (see import_onnx)."""
    if x.shape[0] != batch:
        from ..errors import ShapeError

        raise ShapeError(
            f"this twin takes batch {batch} only, got {x.shape[0]}: its ONNX graph ties shapes to the "
            f"batch it was exported with ({why}). Run it one batch of {batch} at a time, or re-export "
            "the model with a dynamic batch dim")
    return x

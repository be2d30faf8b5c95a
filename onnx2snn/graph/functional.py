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

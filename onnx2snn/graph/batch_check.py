"""Whether an imported twin takes any batch: nodes that read batch-dependent constants are
converted to compute them at run time where they can be (:func:`_convert_following_batch`),
and the twin on a batch of 2 is compared with it on each sample (:func:`_batch_problem`);
a twin tied to the imported batch refuses others with a clear error (:func:`_require_batch`)."""

from __future__ import annotations

import dataclasses
import os

import onnx
import torch
import torch.fx as fx

from .. import onnx_io
from ..errors import ShapeError
from . import dtypes
from .batch_values import BatchValues
from .builder import ConversionFailure, NodeContext

# (op, input) that take a batch-dependent constant as it is: their converters follow it (ctx.shadow)
_FOLLOWS_BATCH = {("Reshape", 1), ("Expand", 1)}


def _convert_following_batch(conv, ctx: NodeContext, key: str, batch_values: BatchValues):
    """Convert a node that reads batch-dependent constants (see batch_values) with those computed
    at run time, so that the twin takes any batch; None where that cannot be done (the caller
    then converts with the constants, and the batch check says whether the twin is tied)."""
    deps = [k for k, i in enumerate(ctx.node.input) if batch_values.depends(i) and (key, k) not in _FOLLOWS_BATCH]
    if not deps:
        return None
    inputs, in_dtypes = list(ctx.inputs), list(ctx.input_dtypes)
    try:
        for k in deps:
            in_dtypes[k] = dtypes.onnx_type_of(inputs[k])
            inputs[k] = batch_values.runtime(ctx.node.input[k])
        return conv(dataclasses.replace(ctx, inputs=inputs, input_dtypes=in_dtypes))
    except (ConversionFailure, ShapeError):
        return None


def _batch_problem(twin: fx.GraphModule, declared, value_dtypes) -> str:
    """'' when the twin on a batch of 2 equals it on each sample (or this cannot be tried
    here), else what differs: the graph then ties its shapes to the imported batch."""
    shapes = twin.onnx_info.input_shapes
    if not declared or any(value_dtypes.get(vi.name) not in (onnx.TensorProto.FLOAT, None) or
                           not shapes.get(vi.name) for vi in declared):
        return ""
    g = torch.Generator().manual_seed(0)
    one = [shapes[vi.name] for vi in declared]
    if any(s[0] != 1 for s in one):
        return ""
    x = [torch.randn((2,) + tuple(s[1:]), generator=g) for s in one]
    try:
        with torch.no_grad(), _quiet_fx():
            both = twin(*x)
            each = [twin(*[t[i:i + 1] for t in x]) for i in range(2)]
    except Exception as e:  # noqa: BLE001 - a reshape that cannot take another batch
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    both = both if isinstance(both, tuple) else (both,)
    each = [e if isinstance(e, tuple) else (e,) for e in each]
    for k, y in enumerate(both):
        if not isinstance(y, torch.Tensor) or not y.dtype.is_floating_point:
            continue
        # the batch axis of the output: where batch 2 is twice one sample (0 for batch-first outputs;
        # 1 for [N, B, D] ones, as nn.MultiheadAttention returns them)
        one = each[0][k]
        grown = [d for d in range(y.dim()) if one.dim() == y.dim() and y.shape[d] != one.shape[d]]
        axis = grown[0] if len(grown) == 1 else 0
        ref = torch.cat([e[k] for e in each], axis) if y.dim() else None
        if ref is None or ref.shape != y.shape:
            return f"output {k} has shape {tuple(y.shape)} at batch 2"
        if ref.numel() == 0:  # an empty output: nothing that could differ
            continue
        scale = max(1.0, float(ref.abs().nan_to_num(0).max()))
        if not torch.allclose(y, ref, rtol=0, atol=1e-4 * scale, equal_nan=True):
            return f"output {k} at batch 2 differs from the samples run one by one"
    return ""


class _quiet_fx:
    """torch.fx prints a failing graph's code to stderr; the batch check expects failures."""

    def __enter__(self):
        import sys
        self._stderr, sys.stderr = sys.stderr, open(os.devnull, "w")

    def __exit__(self, *exc):
        import sys
        sys.stderr.close()
        sys.stderr = self._stderr


def _require_batch(twin: fx.GraphModule, batch0: int, why: str) -> None:
    """Make the twin refuse other batch sizes with a clear error instead of failing inside
    torch (or, worse, mixing samples)."""
    from . import functional as OF

    ph = next(n for n in twin.graph.nodes if n.op == "placeholder")
    with twin.graph.inserting_after(ph):
        guard = twin.graph.call_function(OF.require_batch, (ph, batch0, why))
    ph.replace_all_uses_with(guard, delete_user_cb=lambda u: u is not guard)
    twin.recompile()
    twin.onnx_info.batch_flexible = False


def _symbolic_batch(vi: onnx.ValueInfoProto) -> bool:
    dims = vi.type.tensor_type.shape.dim
    return len(dims) > 0 and dims[0].dim_param == onnx_io.BATCH


__all__ = ["_convert_following_batch", "_batch_problem", "_require_batch", "_symbolic_batch"]

"""Where the batch lies in each tensor of a twin, and which axis holds its features.

The engine folds time into the batch: a tensor whose batch lies on axis ``a`` runs in the
spiking core with ``T * B`` entries on that axis, time outermost, and every operator that
keeps time (neurons, spiking max-pools, time-averaged operators) splits that axis. Most
networks keep the batch on axis 0, but not all: ``nn.MultiheadAttention`` works in
``[N, B, D]``, and a Transpose moves the batch anywhere. Two facts are needed per node:

- :func:`probe_batch_axes`: the batch axis, found by running the core of the twin on two
  batches (2 and 3 samples, the second sample the same in both): the axis whose size grows
  by 3/2 is the batch axis, and the second sample's slice of it must be equal in both
  runs, as one block per sample (the batch may lie inside other blocks on that axis:
  ``[N, B, D] -> [N * B, D]`` is followed). Where it is not, the op mixes the samples of a
  batch: time folded there could not be split again, so such a node where time is kept is
  refused (:class:`~onnx2snn.errors.LayoutError`) instead of run wrong. Shapes at a large
  batch (fake tensors) catch a slice of the batch axis with fixed bounds.
- :func:`feature_axes`: the axis along which per-channel thresholds vary: where the weight
  layer that made the tensor put its outputs (dim 1 after a Conv or BatchNorm, the last dim
  after a Linear, a MatMul with weights or a LayerNorm), followed through element-wise
  ops, transposes and reshapes that keep it. Tokens are samples of the same features, so
  in ``[B, N, D]`` the thresholds are per feature ``D``, not per token ``N`` (measured in
  ``docs/examples/layout/``). Where the axis cannot be followed, one threshold for the layer.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
from torch import nn

from ..errors import LayoutError
from .source import module_device
from . import functional as OF

# -- the batch axis, probed -------------------------------------------------------------------


def _input_shapes(gm: fx.GraphModule) -> "list[tuple[int, ...]]":
    """Each input's shape without its batch (inputs are batch first)."""
    shapes = getattr(getattr(gm, "onnx_info", None), "input_shapes", {}) or {}
    out = []
    for ph in [n for n in gm.graph.nodes if n.op == "placeholder"]:
        shape = shapes.get(ph.meta.get("onnx_input", ph.name)) or ph.meta.get("shape")
        if not shape or not all(isinstance(d, int) for d in shape[1:]):
            raise LayoutError(f"cannot probe the layout of the spiking core: input {ph.name!r} has no fixed shape "
                              f"({shape}); pass input_shape= to convert")
        out.append(tuple(shape[1:]))
    return out


def _probe_inputs(gm: fx.GraphModule, batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dev = module_device(gm)
    return [torch.rand((batch,) + s, generator=g).to(dev) for s in _input_shapes(gm)]


def _divisors(k: int) -> list[int]:
    return [d for d in range(1, k + 1) if k % d == 0]


def _axis_of(v2: torch.Tensor, v3: torch.Tensor) -> "tuple[tuple[int, int] | None, str]":
    """((batch axis, blocks outside the batch on it), '') from a value at batch 2 and 3, or
    (None, why it has none). ``[N, B, D]`` gives (1, 1); ``[N * B, D]`` gives (0, N)."""
    if v2.dim() != v3.dim():
        return None, f"rank {v2.dim()} at batch 2, {v3.dim()} at batch 3"
    grown = [d for d in range(v2.dim()) if v2.shape[d] != v3.shape[d]]
    if not grown:
        return None, ""
    if len(grown) > 1 or v2.shape[grown[0]] * 3 != v3.shape[grown[0]] * 2:
        return None, f"shape {tuple(v2.shape)} at batch 2 and {tuple(v3.shape)} at batch 3: no single batch axis"
    a = grown[0]
    k = v2.shape[a] // 2
    for outer in _divisors(k):  # sample 1's entries: block 1 of each of ``outer`` groups on the axis
        inner = k // outer
        s2 = v2.unflatten(a, (outer, 2, inner)).select(a + 1, 1)
        s3 = v3.unflatten(a, (outer, 3, inner)).select(a + 1, 1)
        if s2.is_floating_point():
            scale = max(1.0, float(s3.abs().nan_to_num(0, 0, 0).max())) if s3.numel() else 1.0
            same = torch.allclose(s2, s3, rtol=1e-3, atol=1e-4 * scale, equal_nan=True)
        else:
            same = torch.equal(s2, s3)
        if same:
            return (a, outer), ""
    return None, (f"axis {a} of shape {tuple(v3.shape)} (at batch 3) grows with the batch but holds no block per "
                  "sample: the op mixes the samples of a batch")


def probe_batch_axes(gm: fx.GraphModule, names: "set[str]") -> "tuple[dict[str, tuple | None], dict[str, str]]":
    """Batch layout ``(axis, outer)`` of every node named in ``names`` (an upstream-closed set:
    the spiking core): the batch lies on ``axis`` inside ``outer`` blocks (1: outermost), and
    the nodes whose batch cannot be followed, with why. Tuple outputs get no layout (their
    items, taken by getitem nodes, do). Inputs have their batch on axis 0."""
    nodes = [n for n in gm.graph.nodes if n.op in ("placeholder", "get_attr") or n.name in names]
    last: dict[fx.Node, int] = {}
    for i, n in enumerate(nodes):
        for a in n.all_input_nodes:
            last[a] = i
    base = _probe_inputs(gm, 3, seed=0)
    other = [x.clone() for x in base]
    for x in other:  # sample 0 differs between the runs; sample 1 is the same; sample 2 only in one
        x[0] = torch.rand(x[0].shape, generator=torch.Generator().manual_seed(1)).to(x)
    runs = [fx.Interpreter(gm), fx.Interpreter(gm)]
    inputs = [[x[:2] for x in base], list(other)]
    phs = iter(range(len(base)))
    axes: dict[str, tuple | None] = {}
    problems: dict[str, str] = {}
    shapes: dict[str, tuple] = {}
    with torch.no_grad():
        for i, n in enumerate(nodes):
            if n.op == "placeholder":
                k = next(phs)
                for run, ins in zip(runs, inputs):
                    run.env[n] = ins[k]
                axes[n.name] = (0, 1)
                continue
            try:
                vals = [run.run_node(n) for run in runs]
            except Exception as e:  # noqa: BLE001 - any failure of the op on a probe batch
                raise LayoutError(f"node {n.name!r} ({n.meta.get('onnx_node', n.target)}) fails on a batch of 2 or 3 "
                                  f"samples ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): the "
                                  "engine folds time into the batch and needs a graph that takes any batch size; "
                                  "export the model with a dynamic batch dimension") from None
            for run, v in zip(runs, vals):
                run.env[n] = v
            v2, v3 = vals
            if n.op != "get_attr" and isinstance(v2, torch.Tensor) and isinstance(v3, torch.Tensor):
                shapes[n.name] = tuple(v2.shape)
                axes[n.name], why = _axis_of(v2, v3)
                if why:
                    problems[n.name] = why
                elif axes[n.name] is None and v2.dim() and v2.is_floating_point() and \
                        any(axes.get(a.name) is not None for a in n.all_input_nodes):
                    problems[n.name] = "it reduces over the batch (its output is the same for every sample)"
            for a in n.all_input_nodes:
                if last.get(a) == i and a.op != "get_attr":
                    for run in runs:
                        run.env.pop(a, None)
    for name, shape in _large_batch_shapes(gm, nodes, LARGE_BATCH).items():
        if name not in shapes or name in problems:
            continue
        want = list(shapes[name])
        if axes.get(name) is not None:
            want[axes[name][0]] = want[axes[name][0]] // 2 * LARGE_BATCH
        if tuple(want) != shape:
            problems[name] = (f"its shape {shapes[name]} at batch 2 becomes {shape} at batch {LARGE_BATCH}, not "
                              f"{tuple(want)}: it does not follow the batch (e.g. a slice of the batch axis with fixed "
                              "bounds)")
    return axes, problems


LARGE_BATCH = 1009  # a batch far above the probe's, for shapes only (fake tensors: no memory, no compute)


def _large_batch_shapes(gm: fx.GraphModule, nodes: "list[fx.Node]", batch: int) -> "dict[str, tuple]":
    """Output shapes of ``nodes`` at a large batch, from fake tensors (shapes without data): what
    a probe on 2 and 3 samples cannot see, such as a slice of the batch axis that keeps the
    first 3 entries. Best effort: the shapes up to the first node fake tensors cannot run."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    out: dict[str, tuple] = {}
    run = fx.Interpreter(gm)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            ins = iter([torch.empty((batch,) + shape) for shape in _input_shapes(gm)])
            for n in nodes:
                run.env[n] = next(ins) if n.op == "placeholder" else run.run_node(n)
                v = run.env[n]
                if n.op != "get_attr" and isinstance(v, torch.Tensor):
                    out[n.name] = tuple(int(d) for d in v.shape)
    except Exception:  # noqa: BLE001 - an op fake tensors cannot run (data-dependent): stop there
        pass
    return out


# -- the feature axis, followed through the graph ----------------------------------------------

_CHANNEL_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                  nn.modules.instancenorm._InstanceNorm, nn.modules.pooling._MaxPoolNd,
                  nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                  nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
                  nn.ZeroPad2d, nn.modules.padding._ConstantPadNd)
_FEATURE_LAST = (nn.Linear, nn.LayerNorm, nn.RMSNorm) if hasattr(nn, "RMSNorm") else (nn.Linear, nn.LayerNorm)
_SAME = {operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub, torch.mul,
         torch.div, torch.neg, torch.where, torch.maximum, torch.minimum, torch.clamp, torch.sigmoid, torch.tanh,
         torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.pow, torch.abs, torch.erf, torch.reciprocal,
         torch.cat, torch.softmax, torch.log_softmax, torch.nn.functional.softmax, torch.nn.functional.gelu,
         torch.nn.functional.silu, torch.nn.functional.relu, torch.nn.functional.hardswish,
         torch.nn.functional.hardsigmoid, torch.nn.functional.interpolate, torch.nn.functional.pad,
         torch.nn.functional.layer_norm, torch.nn.functional.group_norm, OF.onnx_slice, OF.crop_pad,
         OF.expand_keep_batch, OF.onnx_expand, OF.expand_batch_like, OF.require_batch, OF.index_axes,
         OF.matmul_axes, OF.pad_then, torch.index_select, OF.gather_elements}
_SAME_METHODS = {"contiguous", "expand", "repeat", "clamp", "sigmoid", "exp", "float", "abs", "neg", "softmax"}
_RESHAPES = {OF.reshape_keep_batch, OF.reshape_affine, OF.flatten_2d}
_RESHAPE_METHODS = {"reshape", "view", "flatten", "squeeze", "unsqueeze"}


def _shape(n) -> "tuple | None":
    s = n.meta.get("shape") if isinstance(n, fx.Node) else None
    return tuple(s) if s is not None and all(isinstance(d, int) for d in s) else None


def _through_reshape(axis: int, src: tuple, dst: tuple) -> "int | None":
    """Where axis ``axis`` of ``src`` lies in ``dst`` after a reshape, if it stays one axis."""
    if axis == len(src) - 1 and dst and dst[-1] == src[-1]:
        return len(dst) - 1
    lead = math.prod(src[:axis])
    acc = 1
    for d, size in enumerate(dst):
        if acc == lead and size == src[axis]:
            return d
        acc *= size
    return None


def _feature_axis(gm: fx.GraphModule, n: fx.Node, axes: dict, sources: bool = True) -> "int | None":
    """The axis of ``n``'s output that carries its inputs' axes (``axes``): moved by transposes and
    reshapes, kept by element-wise ops; with ``sources``, set by the weight layers and norms that
    make features (the feature axis), else carried through them too (the batch axis)."""
    shape = _shape(n)
    rank = len(shape) if shape is not None else None
    ins = [a for a in n.all_input_nodes if a.op != "get_attr" and a in axes]
    first = ins[0] if ins else None

    def carried(a: fx.Node) -> "int | None":  # the axis of input ``a``, aligned to this node's rank
        ax, s = axes.get(a), _shape(a)
        if ax is None or s is None or rank is None:
            return None
        out = rank - (len(s) - ax)
        return out if 0 <= out < rank and shape[out] == s[ax] else None

    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        if sources and isinstance(m, _FEATURE_LAST):
            return rank - 1 if rank else None
        if sources and isinstance(m, _CHANNEL_FIRST):
            return 1 if rank and rank > 1 else None
        if isinstance(m, nn.Flatten):
            ax = axes.get(first) if first is not None else None
            return ax if ax is not None and ax < m.start_dim else None
        return carried(first) if first is not None else None
    if n.op not in ("call_function", "call_method") or first is None:
        return None
    if n.target is torch.matmul or n.target is operator.matmul:
        return (rank - 1 if rank else None) if sources else carried(first)
    if n.target in ("permute", "transpose") or n.target is torch.permute or n.target is torch.transpose:
        ax, s = axes.get(first), _shape(first)
        if ax is None or s is None:
            return None
        rest = list(n.args[1:])
        if n.target in ("permute", torch.permute):
            dims = list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else list(rest)
            dims = [d % len(s) for d in dims]
            return dims.index(ax) if ax in dims else None
        d0, d1 = (int(d) % len(s) for d in rest[:2])
        return d1 if ax == d0 else d0 if ax == d1 else ax
    if n.target in _RESHAPES or n.target in _RESHAPE_METHODS:
        ax, s = axes.get(first), _shape(first)
        return None if ax is None or s is None or shape is None else _through_reshape(ax, s, shape)
    if n.target in _SAME or n.target in _SAME_METHODS or n.target is operator.getitem:
        found = [carried(a) for a in ins]
        found = [f for f in found if f is not None]
        return found[0] if found else None
    return None


def feature_axes(gm: fx.GraphModule, batch: bool = False) -> "dict[str, int | None]":
    """The feature axis of every node's output (see the module docstring), or with ``batch`` the
    batch axis as the graph moves it (inputs batch first); None where it cannot be followed. From
    the graph and the shapes recorded at import; no data."""
    axes: dict[fx.Node, int | None] = {}
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            s = _shape(n)
            axes[n] = 0 if batch else 1 if s is not None and len(s) > 1 else None
        elif n.op != "output":
            axes[n] = _feature_axis(gm, n, axes, sources=not batch)
    return {n.name: a for n, a in axes.items()}


def channel_axes(gm: fx.GraphModule, names: "list[str]") -> "dict[str, int | None]":
    """For each activation node named, the axis of its input along which its thresholds vary
    (its input's feature axis; None: one threshold for the layer)."""
    feats, batch = feature_axes(gm), feature_axes(gm, batch=True)
    nodes = {n.name: n for n in gm.graph.nodes}
    out = {}
    for name in names:
        n = nodes[name]
        src = n.all_input_nodes[0] if n.all_input_nodes else None
        ax = feats.get(src.name) if src is not None else None
        shape = _shape(src) if src is not None else None
        if ax == 0 or (shape is not None and ax is not None and ax >= len(shape)) or \
                (src is not None and ax is not None and ax == batch.get(src.name)):
            ax = None  # never along the batch (a channel-first op on a tensor whose batch moved)
        out[name] = ax
    return out


def per_channel(t: torch.Tensor, like: torch.Tensor, axis: "int | None" = 1) -> torch.Tensor:
    """A [C] tensor shaped to broadcast along channel axis ``axis`` of ``like`` (dim 1 by default;
    a scalar stays a scalar)."""
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(())
    if axis is None:
        raise ValueError(f"{t.numel()} per-channel values for a tensor with no channel axis")
    shape = [1] * like.dim()
    shape[axis] = -1
    return t.reshape(shape)


__all__ = ["probe_batch_axes", "feature_axes", "channel_axes", "per_channel"]

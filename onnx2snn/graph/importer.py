"""ONNX graph -> torch.fx GraphModule, the exact "ANN twin" of the model.

The walk is simple: simplify the graph (static input shapes, onnxslim folds the
Shape/Gather chains), fuse the activation patterns exporters split up (x*sigmoid(x) is
SiLU), then convert node by node with the registry. Nodes whose inputs are all known
at import time are evaluated right away with onnx's reference evaluator, so no shape
arithmetic is left in the twin, except index arithmetic over the batch size that an op reads
at run time (see batch_values). Every op that cannot be converted is collected and
reported in one :class:`UnsupportedOpError`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import torch
import torch.fx as fx

from .. import checks, onnx_io
from ..errors import InvalidModelError, ShapeError, UnsupportedOpError
from . import dtypes
from .batch_check import _batch_problem, _convert_following_batch, _require_batch, _symbolic_batch
from .batch_values import BatchValues, infer_node_shapes, partial
from .builder import ConversionFailure, GraphBuilder, NodeContext, evaluate, parse_attrs
from .fusions import _fusions
from .registry import lookup

importlib.import_module(".ops", __package__)  # importing the converters registers them

# ops that must not be folded even when their inputs are constant
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}
_CONTROL_FLOW = {"If", "Loop", "Scan"}


@dataclass
class OnnxInfo:
    """What the twin remembers of the file it came from."""

    input_names: list[str]
    input_shapes: dict[str, tuple[int, ...]]
    output_names: list[str]
    opset: int
    producer: str = ""
    source: str = ""
    batch_flexible: bool = True  # False: the graph ties its shapes to the imported batch
    onnx_bytes: bytes = field(default=b"", repr=False)
    metadata: dict[str, str] = field(default_factory=dict)  # the file's metadata_props (graph.metadata reads them)
    output_shapes: dict[str, tuple | None] = field(default_factory=dict)  # at the imported batch; None dims: unknown


def _value_shapes(proto: onnx.ModelProto) -> tuple[dict[str, tuple | None], dict[str, int], dict[str, str]]:
    """Shapes, ONNX element types and (for values that are not tensors) kinds of the values."""
    shapes: dict[str, tuple | None] = {}
    dtypes_: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for vi in list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output):
        kind = vi.type.WhichOneof("value")
        if kind not in (None, "tensor_type"):
            kinds[vi.name] = kind.replace("_type", "")
            continue
        tt = vi.type.tensor_type
        if tt.elem_type:
            dtypes_[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    for t in proto.graph.initializer:
        shapes[t.name] = tuple(t.dims)
        dtypes_[t.name] = t.data_type
    return shapes, dtypes_, kinds


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name a node of the graph (or of its subgraphs) reads."""
    used: set[str] = set()
    for n in graph.node:
        used.update(i for i in n.input if i)
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                used |= _used_names(g)
    return used


def _ensure_node_names(graph: onnx.GraphProto) -> None:
    seen: set[str] = set()
    for k, n in enumerate(graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{k}" if not n.name else f"{n.name}_{k}"
        seen.add(n.name)


def import_onnx(model: "str | os.PathLike | onnx.ModelProto | bytes",
                input_shape: "Sequence[int] | Mapping[str, Sequence[int]] | None" = None,
                simplify: bool = True) -> fx.GraphModule:
    """Build the ANN twin of an ONNX model: a ``torch.fx.GraphModule`` of plain PyTorch.

    Args:
        model: path to an ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.
        input_shape: the input shape to import with, e.g. ``(1, 3, 224, 224)``; needed
            only when the file leaves a non-batch dim dynamic. A dict maps input names
            to shapes for models with several inputs.
        simplify: fold constants and shape chains with onnxslim first (recommended).

    The twin has the ONNX weights as parameters (trainable), runs on any device, and
    takes any batch size: on a batch it equals the ONNX model run on each sample. Where the
    graph ties its shapes to the batch it was exported with (checked at import), the twin
    raises :class:`ShapeError` for other batch sizes and ``twin.onnx_info.batch_flexible``
    is False. ``twin.onnx_info`` records the inputs, outputs and opset.

    Every op, attribute, tensor type or run-time value the importer cannot reproduce exactly
    is refused with one :class:`UnsupportedOpError` that lists all of them.
    """
    input_shape = checks.shape("input_shape", input_shape)
    simplify = checks.boolean("simplify", simplify)
    proto = onnx_io.load_model(model)
    source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else ""
    try:
        original_bytes = proto.SerializeToString()
    except Exception:  # noqa: BLE001 - over protobuf's 2 GB: the twin keeps the file's path only
        original_bytes = b""
    fixed, shapes = onnx_io.fix_input_shapes(proto, input_shape, symbolic_batch=True)
    training = _training_mode(fixed.graph)  # before onnxslim, which drops such Dropouts as identities
    if training:
        raise UnsupportedOpError(training, {op: "in training mode (random / batch statistics): the result cannot "
                                                "be reproduced; export the model in eval mode (model.eval())"
                                            for op in training})
    declared = onnx_io.graph_inputs(fixed)  # the twin takes exactly these, in this order
    work = _prepare(fixed, simplify)
    kept = {vi.name for vi in work.graph.input}
    if simplify and any(vi.name not in kept for vi in declared if vi.name in _used_names(fixed.graph)):
        # onnxslim replaced an input the graph reads (e.g. a Reshape's shape) by a constant it
        # derived from the declared output shapes: the twin would ignore the runtime value.
        work = _prepare(fixed, False)
    batch0 = shapes[declared[0].name][0] if declared and shapes.get(declared[0].name) else None
    shadow_shapes: dict[str, tuple | None] = {}
    if batch0 is not None and any(_symbolic_batch(vi) for vi in declared):
        # the batch stayed a symbol while simplifying, so that the shape arithmetic that
        # depends on it is still in the graph: it is folded at batch0 and, in the shadow, at
        # batch0 + 1, which tells the reshapes how their targets follow the batch
        shadow_shapes = _value_shapes(onnx_io.at_batch(work, batch0 + 1))[0]
        work = onnx_io.at_batch(work, batch0)
    opset = onnx_io.opset_version(work)
    graph = work.graph
    _ensure_node_names(graph)
    value_shapes, value_dtypes, value_kinds = _value_shapes(work)

    b = GraphBuilder()
    b.static_batch = batch0
    b.shadow_shapes = {k: v for k, v in shadow_shapes.items() if v != value_shapes.get(k)}
    unsupported: dict[str, list[str]] = {}
    details: dict[str, str] = {}
    for vi in declared:
        kind = vi.type.WhichOneof("value")
        why = (f"a {kind.replace('_type', '')} input; twins take tensors only" if kind != "tensor_type"
               else dtypes.why_not(vi.type.tensor_type.elem_type, float8_ok=True))
        if why:
            unsupported.setdefault("graph input", []).append(vi.name)
            details["graph input"] = why
        ph = b.graph.placeholder(_py_name(vi.name))
        ph.meta["shape"] = shapes.get(vi.name)
        ph.meta["onnx_input"] = vi.name
        b.values[vi.name] = ph
    for name, arr in onnx_io.initializer_arrays(work).items():
        b.values[name] = arr

    fused, absorbed = _fusions(graph)
    failed = object()
    batch_values = BatchValues(b, opset)

    for node in graph.node:
        if node.name in absorbed:
            continue
        op = node.op_type
        if node.name in fused:
            op, x = fused[node.name]
            node = onnx.helper.make_node(op, [x], [node.output[0]], name=node.name)
        key = op if node.domain in ("", "ai.onnx") else f"{node.domain}.{op}"
        in_vals = [b.values.get(i, failed) if i else None for i in node.input]
        if any(v is failed for v in in_vals):
            # downstream of a failure: still list this node if its op is unsupported
            if key not in ("SiLU", "HardSwish", "GELU") and (node.domain not in ("", "ai.onnx") or lookup(key, opset) is None):
                unsupported.setdefault(key, []).append(node.name)
            for o in node.output:
                b.values[o] = failed
            continue
        consts = [v for v in in_vals if v is not None]
        if consts and all(isinstance(v, np.ndarray) for v in consts) and key not in _NONDETERMINISTIC \
                and key not in ("SiLU", "HardSwish", "GELU") and node.domain in ("", "ai.onnx") \
                and key not in _CONTROL_FLOW:
            try:
                for o, v in zip(node.output, evaluate(node, in_vals, work.opset_import)):
                    b.values[o] = v
                if any(i in b.shadow for i in node.input if i):
                    alt = [b.shadow.get(i, v) if i else v for i, v in zip(node.input, in_vals)]
                    for o, v in zip(node.output, evaluate(node, alt, work.opset_import)):
                        if v.shape != b.values[o].shape or not np.array_equal(v, b.values[o]):
                            b.shadow[o] = v
                    batch_values.record(node)
                continue
            except Exception:  # noqa: BLE001 - fall through to the converter
                pass
        if key == "SiLU":
            conv = _silu
        elif key == "GELU" and node.name in fused:
            conv = _gelu
        elif op == "HardSwish" and node.name in fused:
            conv = lookup("HardSwish", opset)
        else:
            conv = lookup(key, opset) if node.domain in ("", "ai.onnx") else None
        why = "" if conv is None else _type_problem(node, in_vals, value_dtypes, value_kinds)
        if conv is None or why:
            unsupported.setdefault(key, []).append(node.name)
            if key in _CONTROL_FLOW:
                details[key] = "control flow cannot be converted; export with static shapes / unrolled loops"
            elif why:
                details.setdefault(key, why)
            for o in node.output:
                b.values[o] = failed
            continue
        if any(partial(value_shapes.get(o)) for o in node.output if o):
            _refine_shapes(node, in_vals, b, value_shapes, value_dtypes, work.opset_import)
        ctx = NodeContext(node=node, builder=b, inputs=in_vals,
                          input_shapes=[value_shapes.get(i) if i else None for i in node.input],
                          output_shapes=[value_shapes.get(o) for o in node.output],
                          input_dtypes=[value_dtypes.get(i) if i else None for i in node.input],
                          opset=opset, attrs=parse_attrs(node), output_dtypes=[value_dtypes.get(o) for o in node.output])
        try:
            outs = _convert_following_batch(conv, ctx, key, batch_values)
            if outs is None:
                outs = conv(ctx)
        except (ConversionFailure, ShapeError) as e:
            unsupported.setdefault(key, []).append(node.name)
            details.setdefault(key, str(e))
            for o in node.output:
                b.values[o] = failed
            continue
        for o, v in zip(node.output, outs):
            if o:
                b.values[o] = v
        batch_values.record(node)

    outs = []
    for vo in graph.output:
        v = b.values.get(vo.name)
        if v is None:
            raise InvalidModelError(f"graph output {vo.name!r} is not produced by any node")
        if v is failed:
            continue
        if isinstance(v, np.ndarray):  # a constant output: a buffer, so that it keeps its dtype
            try:
                v = b.buffer(v)
            except ConversionFailure as e:
                unsupported.setdefault("graph output", []).append(vo.name)
                details["graph output"] = str(e)
                continue
        outs.append(v)
    if unsupported:
        raise UnsupportedOpError(unsupported, details)
    b.graph.output(outs[0] if len(outs) == 1 else tuple(outs))
    twin = fx.GraphModule(b.root, b.graph, class_name="AnnTwin")
    twin.graph.eliminate_dead_code()
    twin.delete_all_unused_submodules()
    used = {n.target for n in twin.graph.nodes if n.op == "get_attr"}
    for name in [k for k, _ in twin.named_buffers(recurse=False) if k not in used]:
        delattr(twin, name)  # constants of abandoned conversions (see _convert_following_batch)
    twin.recompile()
    twin.eval()
    twin.onnx_info = OnnxInfo(
        input_names=[vi.name for vi in declared], input_shapes=shapes,
        output_names=[vo.name for vo in graph.output], opset=opset,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(), source=source,
        onnx_bytes=original_bytes, metadata={p.key: p.value for p in proto.metadata_props},
        output_shapes={vo.name: value_shapes.get(vo.name) for vo in graph.output})
    why = _batch_problem(twin, declared, value_dtypes)
    if why:
        _require_batch(twin, batch0, why)
    return twin


def _refine_shapes(node: onnx.NodeProto, in_vals, b: GraphBuilder, value_shapes, value_dtypes, opset_imports) -> None:
    """Fill the output shapes ONNX shape inference left open (behind a value it could not size,
    such as a Range over the batch) from the values the importer folded; at the imported batch
    and, in the shadow, at the next one."""
    names = list(node.input)
    types = [value_dtypes.get(i) if i else None for i in names]
    now = infer_node_shapes(node, in_vals, [value_shapes.get(i) if i else None for i in names], types,
                            opset_imports)
    nxt = now
    if any(i in b.shadow or i in b.shadow_shapes for i in names if i):
        alt = [b.shadow.get(i, v) if i else v for i, v in zip(names, in_vals)]
        nxt = infer_node_shapes(node, alt, [b.shadow_shapes.get(i, value_shapes.get(i)) if i else None
                                            for i in names], types, opset_imports)
    for o, s0, s1 in zip(node.output, now, nxt):
        if not o or s0 is None or partial(s0) and not partial(value_shapes.get(o)):
            continue
        value_shapes[o] = s0
        if s1 is not None and s1 != s0:
            b.shadow_shapes[o] = s1
        elif s1 == s0:
            b.shadow_shapes.pop(o, None)


def _training_mode(graph: onnx.GraphProto) -> dict[str, list[str]]:
    """Dropout / BatchNormalization nodes in training mode (or with a run-time mode flag)."""
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer if np.prod(t.dims) <= 1}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    found: dict[str, list[str]] = {}
    for k, n in enumerate(graph.node):
        name = n.name or f"{n.op_type}_{k}"
        if n.op_type == "Dropout" and len(n.input) > 2 and n.input[2]:
            mode = consts.get(n.input[2])
            ratio = consts.get(n.input[1]) if len(n.input) > 1 and n.input[1] else np.asarray(0.5)
            if mode is None or (bool(mode.reshape(-1)[0]) and (ratio is None or float(ratio.reshape(-1)[0]) != 0.0)):
                found.setdefault("Dropout", []).append(name)
        elif n.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i for a in n.attribute):
            found.setdefault("BatchNormalization", []).append(name)
    return found


def _prepare(fixed: onnx.ModelProto, simplify: bool) -> onnx.ModelProto:
    if simplify:
        return onnx_io.simplify(fixed)
    proto = onnx.inliner.inline_local_functions(fixed) if fixed.functions else fixed
    try:
        return onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # noqa: BLE001 - go on without inferred shapes; converters say what they miss
        return proto


# ops that may take or make the storage-only float8 types
_FLOAT8_OPS = {"Cast", "CastLike", "Identity", "Dropout"}


def _type_problem(node: onnx.NodeProto, in_vals, value_dtypes, value_kinds) -> str:
    """Why a twin cannot hold one of the node's inputs or outputs ('' when it can)."""
    names = [i for i in node.input if i] + [o for o in node.output if o]
    for name in names:
        if name in value_kinds:
            return f"{value_kinds[name]} values are not supported (twins compute with tensors only)"
    f8 = node.op_type in _FLOAT8_OPS
    for name, v in zip(node.input, in_vals):
        t = dtypes.onnx_type_of(v) if isinstance(v, np.ndarray) else value_dtypes.get(name) if name else None
        why = dtypes.why_not(t, f8)
        if why:
            return why
    for name in node.output:
        why = dtypes.why_not(value_dtypes.get(name), f8) if name else ""
        if why:
            return why
    return ""


def _silu(ctx: NodeContext):
    from torch import nn
    return [ctx.module(nn.SiLU(), ctx.inputs[0])]


def _gelu(ctx: NodeContext):
    from torch import nn
    return [ctx.module(nn.GELU(), ctx.inputs[0])]


def _py_name(name: str) -> str:
    import re
    s = re.sub(r"[^0-9a-zA-Z_]", "_", name) or "input"
    return "x_" + s if s[0].isdigit() else s


def output_shapes(twin: fx.GraphModule) -> list[Any]:
    """Static output shapes recorded at import (None where unknown)."""
    out = [n for n in twin.graph.nodes if n.op == "output"][0]
    args = out.args[0] if isinstance(out.args[0], tuple) else (out.args[0],)
    return [a.meta.get("shape") if isinstance(a, fx.Node) else None for a in args]


def reference_inputs(twin: fx.GraphModule, batch: int | None = None, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs of the shapes the twin was imported with (for checks and tracing)."""
    g = torch.Generator().manual_seed(seed)
    res = []
    for name in twin.onnx_info.input_names:
        shape = list(twin.onnx_info.input_shapes[name])
        if batch is not None:
            shape[0] = batch
        res.append(torch.randn(*shape, generator=g))
    return res

"""ONNX graph -> torch.fx GraphModule, the exact "ANN twin" of the model.

The walk is simple: simplify the graph (static input shapes, onnxslim folds the
Shape/Gather chains), fuse the activation patterns exporters split up (x*sigmoid(x) is
SiLU), then convert node by node with the registry. Nodes whose inputs are all known
at import time are evaluated right away with onnx's reference evaluator, so no shape
arithmetic is left in the twin. Every op that cannot be converted is collected and
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
from .builder import ConversionFailure, GraphBuilder, NodeContext, parse_attrs
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
    onnx_bytes: bytes = field(default=b"", repr=False)


def _value_shapes(proto: onnx.ModelProto) -> tuple[dict[str, tuple | None], dict[str, int]]:
    shapes: dict[str, tuple | None] = {}
    dtypes: dict[str, int] = {}
    for vi in list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type:
            dtypes[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    for t in proto.graph.initializer:
        shapes[t.name] = tuple(t.dims)
        dtypes[t.name] = t.data_type
    return shapes, dtypes


def _fusions(graph: onnx.GraphProto) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Find x * sigmoid(x) (SiLU) and x * hardsigmoid(x) (HardSwish) pairs.

    Returns {mul node name: (fused op, x)} and the set of the absorbed nodes' names."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    fused: dict[str, tuple[str, str]] = {}
    absorbed: set[str] = set()
    for n in graph.node:
        if n.op_type not in ("Sigmoid", "HardSigmoid") or n.output[0] in outputs:
            continue
        if n.op_type == "HardSigmoid":
            attrs = parse_attrs(n)
            if abs(attrs.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(attrs.get("beta", 0.5) - 0.5) > 1e-6:
                continue
        users = consumers.get(n.output[0], [])
        if len(users) != 1 or users[0].op_type != "Mul":
            continue
        mul = users[0]
        x = n.input[0]
        if sorted(mul.input) != sorted([x, n.output[0]]):
            continue
        fused[mul.name or id(mul)] = ("SiLU" if n.op_type == "Sigmoid" else "HardSwish", x)
        absorbed.add(n.name or str(id(n)))
    return fused, absorbed


def _ensure_node_names(graph: onnx.GraphProto) -> None:
    seen: set[str] = set()
    for k, n in enumerate(graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{k}" if not n.name else f"{n.name}_{k}"
        seen.add(n.name)


def _fold(node: onnx.NodeProto, inputs: list, opset_imports) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constants with onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    feeds = {name: v for name, v in zip(node.input, inputs) if name}
    in_vis = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for name, v in feeds.items()]
    out_vis = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
    graph = onnx.helper.make_graph([node], "fold", in_vis, out_vis)
    model = onnx.helper.make_model(graph, opset_imports=list(opset_imports))
    outs = ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(o) for o in outs]


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
    takes any batch size. ``twin.onnx_info`` records the inputs, outputs and opset.
    """
    input_shape = checks.shape("input_shape", input_shape)
    simplify = checks.boolean("simplify", simplify)
    proto = onnx_io.load_model(model)
    source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else ""
    original_bytes = proto.SerializeToString()
    fixed, shapes = onnx_io.fix_input_shapes(proto, input_shape)
    work = onnx_io.simplify(fixed) if simplify else onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    opset = onnx_io.opset_version(work)
    graph = work.graph
    _ensure_node_names(graph)
    value_shapes, value_dtypes = _value_shapes(work)

    b = GraphBuilder()
    inputs = onnx_io.graph_inputs(work)
    b.static_batch = shapes[inputs[0].name][0] if inputs and shapes.get(inputs[0].name) else None
    for vi in inputs:
        ph = b.graph.placeholder(_py_name(vi.name))
        ph.meta["shape"] = shapes.get(vi.name)
        ph.meta["onnx_input"] = vi.name
        b.values[vi.name] = ph
    for name, arr in onnx_io.initializer_arrays(work).items():
        b.values[name] = arr

    fused, absorbed = _fusions(graph)
    unsupported: dict[str, list[str]] = {}
    details: dict[str, str] = {}
    failed = object()

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
            if key not in ("SiLU", "HardSwish") and (node.domain not in ("", "ai.onnx") or lookup(key, opset) is None):
                unsupported.setdefault(key, []).append(node.name)
            for o in node.output:
                b.values[o] = failed
            continue
        consts = [v for v in in_vals if v is not None]
        if consts and all(isinstance(v, np.ndarray) for v in consts) and key not in _NONDETERMINISTIC \
                and key not in ("SiLU", "HardSwish") and node.domain in ("", "ai.onnx") \
                and key not in _CONTROL_FLOW:
            try:
                for o, v in zip(node.output, _fold(node, in_vals, work.opset_import)):
                    b.values[o] = v
                continue
            except Exception:  # noqa: BLE001 - fall through to the converter
                pass
        if op == "SiLU" and key == "SiLU":
            conv = _silu
        elif op == "HardSwish" and node.name in fused:
            conv = lookup("HardSwish", opset)
        else:
            conv = lookup(key, opset) if node.domain in ("", "ai.onnx") else None
        if conv is None:
            unsupported.setdefault(key, []).append(node.name)
            if key in _CONTROL_FLOW:
                details[key] = "control flow cannot be converted; export with static shapes / unrolled loops"
            for o in node.output:
                b.values[o] = failed
            continue
        ctx = NodeContext(node=node, builder=b, inputs=in_vals,
                          input_shapes=[value_shapes.get(i) if i else None for i in node.input],
                          output_shapes=[value_shapes.get(o) for o in node.output],
                          input_dtypes=[value_dtypes.get(i) if i else None for i in node.input],
                          opset=opset, attrs=parse_attrs(node))
        try:
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

    if unsupported:
        raise UnsupportedOpError(unsupported, details)

    outs = []
    for vo in graph.output:
        v = b.values.get(vo.name)
        if v is None:
            raise InvalidModelError(f"graph output {vo.name!r} is not produced by any node")
        outs.append(b.as_arg(v))
    b.graph.output(outs[0] if len(outs) == 1 else tuple(outs))
    twin = fx.GraphModule(b.root, b.graph, class_name="AnnTwin")
    twin.graph.eliminate_dead_code()
    twin.delete_all_unused_submodules()
    twin.recompile()
    twin.eval()
    twin.onnx_info = OnnxInfo(
        input_names=[vi.name for vi in inputs], input_shapes=shapes,
        output_names=[vo.name for vo in graph.output], opset=opset,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(), source=source,
        onnx_bytes=original_bytes)
    return twin


def _silu(ctx: NodeContext):
    from torch import nn
    return [ctx.module(nn.SiLU(), ctx.inputs[0])]


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

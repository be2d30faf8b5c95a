"""Builds the torch.fx graph of the ANN twin while the importer walks the ONNX graph.

Values are either ``fx.Node`` (computed at run time) or numpy arrays (known at import
time: initializers, constants, folded shape arithmetic). Converters see both through a
:class:`NodeContext` and decide: weights go into ``nn.Module`` parameters, small
constants into the generated code, larger ones into buffers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import torch
import torch.fx as fx
from onnx import helper
from torch import nn

from ..errors import ShapeError
from . import dtypes

Value = Any  # fx.Node | np.ndarray | None


class ConversionFailure(Exception):
    """Raised by a converter for a node whose attributes it cannot honour."""


def _sanitize(name: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_")
    name = re.sub(r"_+", "_", name)
    if not name:
        name = "node"
    if name[0].isdigit():
        name = "n" + name
    return name


def scope_name(node: onnx.NodeProto, weight_names: Sequence[str] = (), module: bool = False) -> str:
    """A readable python name for a node, from its weights' or its own scoped name.

    ``layer1.0.conv1.weight`` gives ``layer1_0_conv1``; ``/layer1/layer1.0/conv1/Conv``
    (TorchScript exporter scopes) gives the same. A module is named by its scope; a
    function gets the op appended (``/layer1/layer1.0/Add`` gives ``layer1_0_add``).
    """
    for w in weight_names:
        if w and "::" not in w and w.endswith((".weight", ".bias")) and not w.startswith("onnx"):
            return _sanitize(w.rsplit(".", 1)[0])
    raw = node.name or ""
    op = node.op_type.lower()
    if raw.startswith("/"):
        parts = [p for p in raw.split("/") if p]
        suffix = ""
        if parts and re.fullmatch(r"[A-Z][A-Za-z0-9]*(_\d+)?", parts[-1]):
            m = re.search(r"_\d+$", parts.pop())
            suffix = m.group(0) if m else ""
        qual: list[str] = []
        for p in parts:
            comp = p.split(".")
            overlap = max((k for k in range(min(len(qual), len(comp)) + 1)
                           if k == 0 or qual[-k:] == comp[:k]), default=0)
            qual += comp[overlap:]
        if qual:
            base = ".".join(qual) if module else ".".join(qual) + "." + op
            return _sanitize(base + suffix)
    if raw and not re.fullmatch(r"(node_)?" + re.escape(node.op_type) + r"_?\d*", raw):
        return _sanitize(raw)
    return _sanitize(op)


@dataclass
class NodeContext:
    """What a converter needs to know about one ONNX node."""

    node: onnx.NodeProto
    builder: "GraphBuilder"
    inputs: list[Value]
    input_shapes: list[tuple | None]
    output_shapes: list[tuple | None]
    input_dtypes: list[int | None]
    opset: int
    attrs: dict[str, Any] = field(default_factory=dict)
    output_dtypes: list[int | None] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.node.name or f"<{self.node.op_type} node>"

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def has_input(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def const(self, i: int, what: str = "") -> np.ndarray:
        """Input ``i`` as a numpy array; fails clearly if it is computed at run time."""
        v = self.inputs[i] if i < len(self.inputs) else None
        if not isinstance(v, np.ndarray):
            raise ConversionFailure(
                f"input {i}{' (' + what + ')' if what else ''} must be a constant known at import "
                "time, but it is computed from the model input")
        return v

    def const_or_none(self, i: int, what: str = "") -> np.ndarray | None:
        if not self.has_input(i):
            return None
        return self.const(i, what)

    def dtype(self, i: int = 0) -> int | None:
        """ONNX element type of input ``i`` (None when unknown)."""
        v = self.inputs[i] if i < len(self.inputs) else None
        if isinstance(v, np.ndarray):
            return dtypes.onnx_type_of(v)
        return self.input_dtypes[i] if i < len(self.input_dtypes) else None

    def torch_dtype(self, i: int = 0) -> torch.dtype | None:
        t = self.dtype(i)
        return dtypes.TORCH.get(t) if t is not None else None

    def is_float(self, i: int = 0) -> bool:
        return self.dtype(i) in dtypes.FLOATING

    def is_int(self, i: int = 0) -> bool:
        return self.dtype(i) in dtypes.INTEGER

    def shadow(self, i: int) -> np.ndarray | None:
        """Input ``i`` at the next batch size, where it is a constant that depends on the batch."""
        name = self.node.input[i] if i < len(self.node.input) else ""
        return self.builder.shadow.get(name) if name else None

    def set_shadow(self, k: int, value: np.ndarray) -> None:
        self.builder.shadow[self.node.output[k]] = value

    def tensor(self, v: Value) -> Any:
        """``v`` as something that is a tensor in the twin (a 0-d constant too: a buffer)."""
        if isinstance(v, np.ndarray):
            return self.builder.buffer(v)
        return v

    def rank(self, i: int = 0) -> int:
        shape = self.input_shapes[i] if i < len(self.input_shapes) else None
        if shape is None:
            v = self.inputs[i]
            if isinstance(v, np.ndarray):
                return v.ndim
            raise ShapeError(f"node {self.name!r} ({self.node.op_type}): the rank of input {i} is unknown; "
                             "give import_onnx an input_shape so shapes can be inferred")
        return len(shape)

    def shape(self, i: int = 0) -> tuple:
        shape = self.input_shapes[i] if i < len(self.input_shapes) else None
        if shape is None or any(not isinstance(d, int) for d in shape):
            v = self.inputs[i] if i < len(self.inputs) else None
            if isinstance(v, np.ndarray):
                return tuple(v.shape)
            raise ShapeError(f"node {self.name!r} ({self.node.op_type}): the shape of input {i} is unknown "
                             f"({shape}); give import_onnx an input_shape so shapes can be inferred")
        return tuple(shape)

    # -- emitting -----------------------------------------------------------------
    def module(self, mod: nn.Module, *args: Value, suffix: str = "") -> fx.Node:
        return self.builder.call_module(self, mod, [self.builder.as_arg(a) for a in args], suffix)

    def function(self, fn: Callable, *args: Value, **kwargs: Any) -> fx.Node:
        return self.builder.call_function(self, fn, tuple(self.builder.as_arg(a) for a in args),
                                          {k: self.builder.as_arg(v) for k, v in kwargs.items()})

    def method(self, name: str, *args: Value, **kwargs: Any) -> fx.Node:
        return self.builder.call_method(self, name, tuple(self.builder.as_arg(a) for a in args),
                                        {k: self.builder.as_arg(v) for k, v in kwargs.items()})


def evaluate(node: onnx.NodeProto, inputs: Sequence[Value], opset_imports) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constants with onnx's reference evaluator.

    Raises ``ValueError`` when an output is not a tensor (a sequence, an optional)."""
    from onnx.reference import ReferenceEvaluator

    feeds = {name: v for name, v in zip(node.input, inputs) if name}
    in_vis = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for name, v in feeds.items()]
    out_vis = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    graph = helper.make_graph([node], "fold", in_vis, out_vis)
    model = helper.make_model(graph, opset_imports=list(opset_imports))
    outs = ReferenceEvaluator(model).run(None, feeds)
    res = []
    for o in outs:
        if not isinstance(o, (np.ndarray, np.generic)):
            raise ValueError(f"the node computes a {type(o).__name__}, not a tensor")
        res.append(np.asarray(o))
    return res


def parse_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, onnx.TensorProto):
            v = onnx.numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8", "replace") for s in v]
        out[a.name] = v
    return out


class GraphBuilder:
    """Owns the fx graph, the root module and the ONNX-value -> fx-value table."""

    def __init__(self) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.values: dict[str, Value] = {}
        # the batch-dependent shape values at the next batch size (see import_onnx)
        self.shadow: dict[str, np.ndarray] = {}
        self.shadow_shapes: dict[str, tuple | None] = {}
        self.static_batch: int | None = None
        self._module_names: set[str] = set()
        self._buffer_count = 0

    def unique_module_name(self, base: str) -> str:
        name, k = base, 1
        while name in self._module_names or hasattr(self.root, name):
            name = f"{base}_{k}"
            k += 1
        self._module_names.add(name)
        return name

    def as_arg(self, v: Value) -> Any:
        """Turn a numpy constant into something fx can carry: a literal or a buffer.

        A 0-d constant becomes a Python number only where torch keeps the other operand's
        dtype with it (bool, int64, float32 and float64 scalars); others stay tensors."""
        if isinstance(v, np.ndarray):
            if v.ndim == 0 and v.dtype in (np.bool_, np.int64, np.float32, np.float64):
                return v.item()
            return self.buffer(v)
        if isinstance(v, (list, tuple)):
            return type(v)(self.as_arg(x) for x in v)
        return v

    def buffer(self, arr: np.ndarray, name: str = "const") -> fx.Node:
        try:
            t = dtypes.to_tensor(arr)
        except TypeError as e:
            raise ConversionFailure(str(e)) from None
        bname = self.unique_module_name(f"{name}_{self._buffer_count}")
        self._buffer_count += 1
        self.root.register_buffer(bname, t)
        return self.graph.get_attr(bname)

    def _meta(self, n: fx.Node, ctx: NodeContext) -> fx.Node:
        n.meta["onnx_node"] = ctx.node.name
        n.meta["onnx_op"] = ctx.node.op_type
        if ctx.output_shapes and ctx.output_shapes[0] is not None:
            n.meta["shape"] = ctx.output_shapes[0]
        return n

    def call_module(self, ctx: NodeContext, mod: nn.Module, args: list, suffix: str = "") -> fx.Node:
        base = scope_name(ctx.node, list(ctx.node.input[1:]), module=True) + suffix
        name = self.unique_module_name(base)
        self.root.add_module(name, mod)
        n = self.graph.create_node("call_module", name, tuple(args), {}, name=name)
        return self._meta(n, ctx)

    def call_function(self, ctx: NodeContext, fn: Callable, args: tuple, kwargs: dict) -> fx.Node:
        n = self.graph.create_node("call_function", fn, args, kwargs, name=scope_name(ctx.node))
        return self._meta(n, ctx)

    def call_method(self, ctx: NodeContext, name: str, args: tuple, kwargs: dict) -> fx.Node:
        n = self.graph.create_node("call_method", name, args, kwargs, name=scope_name(ctx.node))
        return self._meta(n, ctx)

"""Values the importer folds to constants although they depend on the batch size.

The importer folds shape arithmetic at the imported batch and follows it, in a shadow, at the
next batch size (see ``import_onnx``). Two things need more than that:

- a folded value whose *shape* follows the batch (torch's dynamo exporter writes ``as_strided``
  as a Gather whose indices are ``Range(batch) * stride + offsets``) leaves ONNX shape inference
  blind downstream: :func:`infer_node_shapes` redoes it node by node with the folded values;
- such a value read by an op at run time (the Gather) must be computed in the twin from the
  input's batch: :class:`BatchValues` replays the folded nodes that made it, from the Shape
  node down, as twin ops.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ShapeError
from . import dtypes
from . import functional as OF
from .builder import ConversionFailure, GraphBuilder, NodeContext, Value, parse_attrs
from .registry import lookup

_LARGE = 4096  # constants with more elements are weights: typed inputs, not values, for inference


def partial(shape: tuple | None) -> bool:
    """Whether a shape is unknown or has an unknown dim."""
    return shape is None or any(not isinstance(d, int) for d in shape)


def infer_node_shapes(node: onnx.NodeProto, inputs: Sequence[Value], shapes: Sequence[tuple | None],
                      types: Sequence[int | None], opset_imports) -> list[tuple | None]:
    """Output shapes of one node by ONNX shape inference, from its input shapes and the values
    of its constant inputs (None for an output it cannot tell)."""
    none = [None] * len(node.output)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return none
    inputs_vi, inits, seen = [], [], set()
    for name, v, s, t in zip(node.input, inputs, shapes, types):
        if not name or name in seen:
            continue
        seen.add(name)
        if isinstance(v, np.ndarray):
            t, s = dtypes.onnx_type_of(v), v.shape
            if v.size <= _LARGE:
                inits.append(numpy_helper.from_array(v, name))
        if t is None:
            return none
        dims = None if s is None else [d if isinstance(d, int) else None for d in s]
        inputs_vi.append(helper.make_tensor_value_info(name, t, dims))
    graph = helper.make_graph([node], "infer", inputs_vi,
                              [helper.make_empty_tensor_value_info(o) for o in node.output if o], inits)
    try:
        model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=list(opset_imports)),
                                                  data_prop=True)
    except Exception:  # noqa: BLE001 - inference refuses the node: the shapes stay unknown
        return none
    found = {}
    for vi in list(model.graph.output) + list(model.graph.value_info):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            found[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return [found.get(o) if o else None for o in node.output]


class BatchValues:
    """Computes batch-dependent constants in the twin, from the input's run-time shape.

    ``record`` notes the node that made each such value (a Shape of a run-time tensor, or a
    node folded from such values); ``runtime`` gives the value as an fx node, made by the op
    converters on run-time inputs, or raises :class:`ConversionFailure` when one cannot.
    """

    def __init__(self, builder: GraphBuilder, opset: int) -> None:
        self.b = builder
        self.opset = opset
        self.producer: dict[str, onnx.NodeProto] = {}
        self._made: dict[str, Value] = {}

    def depends(self, name: str) -> bool:
        return bool(name) and name in self.b.shadow and isinstance(self.b.values.get(name), np.ndarray)

    def record(self, node: onnx.NodeProto) -> None:
        for o in node.output:
            if self.depends(o):
                self.producer[o] = node

    def runtime(self, name: str) -> Value:
        if name in self._made:
            return self._made[name]
        node = self.producer.get(name)
        if node is None or not node.output or node.domain not in ("", "ai.onnx"):
            raise ConversionFailure(f"value {name!r} depends on the batch size in a way the importer cannot follow")
        const = [self.b.values.get(i) if i else None for i in node.input]
        ins = [self.runtime(i) if self.depends(i) else v for i, v in zip(node.input, const)]
        ctx = NodeContext(node=node, builder=self.b, inputs=ins,
                          input_shapes=[v.shape if isinstance(v, np.ndarray) else None for v in const],
                          output_shapes=[self.b.values[o].shape if o else None for o in node.output],
                          input_dtypes=[dtypes.onnx_type_of(v) if isinstance(v, np.ndarray) else None for v in const],
                          opset=self.opset, attrs=parse_attrs(node),
                          output_dtypes=[dtypes.onnx_type_of(self.b.values[o]) if o else None for o in node.output])
        if node.op_type == "Shape":  # the root: the shape of a tensor computed at run time
            end = ctx.attr("end")
            outs = [ctx.function(OF.shape_of, ins[0], int(ctx.attr("start", 0)), None if end is None else int(end))]
        else:
            conv = lookup(node.op_type, self.opset)
            if conv is None:
                raise ConversionFailure(f"{node.op_type} has no converter for run-time values")
            try:
                outs = conv(ctx)
            except ShapeError as e:
                raise ConversionFailure(str(e)) from None
        for o, v in zip(node.output, outs):
            if o:
                self._made[o] = v
        if name not in self._made or isinstance(self._made[name], np.ndarray):
            raise ConversionFailure(f"value {name!r} could not be computed at run time")
        return self._made[name]

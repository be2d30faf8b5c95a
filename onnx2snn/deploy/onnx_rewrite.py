"""ONNX-level rewrites that make a model exportable to NIR.

NIR has no max-pool node, and the spiking max-pool (exact in rate) passes analog
increments, not spikes. :func:`replace_maxpool` turns every MaxPool / GlobalMaxPool into
an AveragePool / GlobalAveragePool of the same geometry. This changes what the network
computes: fine-tune the result (``onnx2snn.finetune``) before converting it.
"""

from __future__ import annotations

import os

import onnx

from .. import onnx_io
from ..errors import Onnx2SnnError

_DROP = {"dilations", "storage_order"}  # MaxPool attributes that AveragePool does not have


def replace_maxpool(model: "str | os.PathLike | bytes | onnx.ModelProto", output_path: "str | os.PathLike") -> str:
    """Write ``model`` with every MaxPool as an AveragePool (and GlobalMaxPool as
    GlobalAveragePool) to ``output_path``; returns the path.

    Padded max-pools become average pools that do not count the padding
    (``count_include_pad=0``); dilated ones are refused (AveragePool has no dilation)."""
    proto = onnx_io.load_model(model)
    count = 0
    for node in proto.graph.node:
        if node.op_type == "GlobalMaxPool":
            node.op_type = "GlobalAveragePool"
            count += 1
        elif node.op_type == "MaxPool":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if any(d != 1 for d in attrs.get("dilations", [])):
                raise Onnx2SnnError(f"replace_maxpool: MaxPool node {node.name!r} is dilated "
                                    f"({attrs['dilations']}); AveragePool has no dilation")
            if len(node.output) > 1 and node.output[1]:
                raise Onnx2SnnError(f"replace_maxpool: MaxPool node {node.name!r} has an Indices output")
            keep = [a for a in node.attribute if a.name not in _DROP]
            del node.attribute[:]
            node.attribute.extend(keep)
            node.op_type = "AveragePool"
            count += 1
    if not count:
        raise Onnx2SnnError("replace_maxpool: the model has no MaxPool or GlobalMaxPool node")
    onnx.checker.check_model(proto)
    onnx.save(proto, os.fspath(output_path))
    return os.fspath(output_path)


__all__ = ["replace_maxpool"]

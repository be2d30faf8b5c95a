"""Where a twin comes from, and how its activations are swapped before conversion.

:func:`to_twin` accepts every source the public API takes (an ONNX path / bytes /
ModelProto, an ``nn.Module`` exported to ONNX first, or a twin) and returns the twin;
:func:`replace_activations` swaps activations with no spiking form (SiLU, GELU, ...) for
ones that have one, in place.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping

import onnx
import torch
import torch.fx as fx
from torch import nn

from ..errors import Onnx2SnnError
from .importer import import_onnx

_REPLACEMENTS = {"ReLU": nn.ReLU, "LeakyReLU": lambda: nn.LeakyReLU(0.1), "ReLU6": nn.ReLU6}
_KIND_TYPES = {"SiLU": nn.SiLU, "HardSwish": nn.Hardswish, "GELU": nn.GELU, "Tanh": nn.Tanh, "ELU": nn.ELU,
               "Mish": nn.Mish, "Sigmoid": nn.Sigmoid, "Softplus": nn.Softplus, "SELU": nn.SELU, "CELU": nn.CELU,
               "HardSigmoid": nn.Hardsigmoid}


def module_device(m: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for one with neither, such
    as a graph of weight-free ops)."""
    for t in m.parameters():
        return t.device
    for t in m.buffers():
        return t.device
    return torch.device("cpu")


def to_twin(source: Any, example_input: torch.Tensor | None = None, input_shape=None) -> fx.GraphModule:
    """An ANN twin from an ONNX path / bytes / ModelProto, an nn.Module, or a twin."""
    if isinstance(source, fx.GraphModule) and hasattr(source, "onnx_info"):
        return source
    if isinstance(source, nn.Module):
        if example_input is None:
            raise Onnx2SnnError("converting an nn.Module needs example_input= (a batch of the input shape); "
                                "it is exported to ONNX first, so the ONNX file stays the source of truth")
        from ..export import export_onnx
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(source, example_input, os.path.join(tmp, "model.onnx"))
            proto = onnx.load(path)
        return import_onnx(proto, input_shape=input_shape)
    return import_onnx(source, input_shape=input_shape)


def copy_twin(twin: fx.GraphModule) -> fx.GraphModule:
    """A deep copy of a twin with its attributes (fx's deepcopy keeps only modules and graph);
    the attributes (onnx_info, learned_thresholds, ...) are shared, not copied."""
    new = copy.deepcopy(twin)
    for k, v in twin.__dict__.items():
        if not k.startswith("_") and k not in new.__dict__:
            setattr(new, k, v)
    return new


def replace_activations(twin: fx.GraphModule, mapping: Mapping[str, str] | None) -> fx.GraphModule:
    """Replace activation modules by kind, e.g. ``{"SiLU": "ReLU"}`` (in place; returns twin)."""
    if not mapping:
        return twin
    for kind, new in mapping.items():
        if kind not in _KIND_TYPES:
            raise Onnx2SnnError(f"replace_activations: unknown kind {kind!r}; known: {sorted(_KIND_TYPES)}")
        if new not in _REPLACEMENTS:
            raise Onnx2SnnError(f"replace_activations: cannot replace by {new!r}; use one of {sorted(_REPLACEMENTS)}")
    for node in twin.graph.nodes:
        if node.op != "call_module":
            continue
        mod = twin.get_submodule(node.target)
        for kind, new in mapping.items():
            if type(mod) is _KIND_TYPES[kind]:
                parent, _, attr = node.target.rpartition(".")
                setattr(twin.get_submodule(parent) if parent else twin, attr, _REPLACEMENTS[new]())
    twin.recompile()
    return twin


__all__ = ["to_twin", "copy_twin", "replace_activations"]

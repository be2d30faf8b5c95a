"""Registry of ONNX op converters: one small function per op family.

A converter takes a :class:`~onnx2snn.graph.builder.NodeContext` and returns the
node's outputs (fx nodes, or numpy arrays for values known at import time). Several
converters may exist for one op type, each valid from an opset version on.
"""

from __future__ import annotations

from typing import Callable

_REGISTRY: dict[str, list[tuple[int, Callable]]] = {}


def register(*op_types: str, since: int = 1):
    """Decorator: register ``fn`` as converter of ``op_types`` from opset ``since`` on."""

    def deco(fn: Callable) -> Callable:
        for op in op_types:
            entries = _REGISTRY.setdefault(op, [])
            entries.append((since, fn))
            entries.sort(key=lambda e: e[0])
        return fn

    return deco


def lookup(op_type: str, opset: int) -> Callable | None:
    """The converter for ``op_type`` at ``opset`` (the newest one not newer than it)."""
    found = None
    for since, fn in _REGISTRY.get(op_type, []):
        if since <= opset:
            found = fn
    return found


def supported_ops() -> list[str]:
    """Every op type that has a converter, sorted."""
    return sorted(_REGISTRY)

"""Activation patterns exporters write out op by op, found in the ONNX graph so that the
importer converts each as one module an analysis can name: x * sigmoid(x) (SiLU),
x * hardsigmoid(x) (HardSwish) and 0.5 * x * (1 + erf(x / sqrt(2))) (GELU)."""

from __future__ import annotations

import numpy as np
import onnx

from .builder import parse_attrs


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
    _gelu_fusions(graph, consumers, outputs, fused, absorbed)
    return fused, absorbed


def _scalar(graph_consts: dict[str, np.ndarray], name: str) -> float | None:
    v = graph_consts.get(name)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 and v.dtype.kind == "f" else None


def _gelu_fusions(graph: onnx.GraphProto, consumers, outputs, fused, absorbed) -> None:
    """Find GELU written out with Erf: 0.5 * x * (1 + erf(x / sqrt(2))), in the orders the
    torch exporters write it, and record it as one GELU (an activation analysis can name)."""
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer if np.prod(t.dims) <= 1}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in graph.node for o in n.output}

    def only_user(name, op):
        users = consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op and name not in outputs:
            return users[0]
        return None

    def other(node, name):
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None

    def near(name, value):
        v = _scalar(consts, name)
        return v is not None and abs(v - value) < 1e-4 * max(1.0, abs(value))

    for erf in graph.node:
        if erf.op_type != "Erf" or erf.name in absorbed:
            continue
        scale = producer.get(erf.input[0])
        if scale is None or scale.op_type not in ("Div", "Mul") or len(consumers.get(scale.output[0], [])) != 1:
            continue
        x = scale.input[0]
        c = scale.input[1]
        if scale.op_type == "Mul" and near(x, 0.70710678):
            x, c = c, x
        if not (near(c, 1.41421356) if scale.op_type == "Div" else near(c, 0.70710678)):
            continue
        add = only_user(erf.output[0], "Add")
        if add is None or not near(other(add, erf.output[0]), 1.0):
            continue
        chain, final = [scale, erf, add], None
        m1 = only_user(add.output[0], "Mul")
        if m1 is not None and other(m1, add.output[0]) == x:            # (x * a) * 0.5
            m2 = only_user(m1.output[0], "Mul")
            if m2 is not None and near(other(m2, m1.output[0]), 0.5):
                chain, final = chain + [m1], m2
        elif m1 is not None and near(other(m1, add.output[0]), 0.5):    # x * (a * 0.5)
            m2 = only_user(m1.output[0], "Mul")
            if m2 is not None and other(m2, m1.output[0]) == x:
                chain, final = chain + [m1], m2
        elif m1 is not None:                                            # (x * 0.5) * a
            h = producer.get(other(m1, add.output[0]) or "")
            if h is not None and h.op_type == "Mul" and x in h.input and near(other(h, x), 0.5) \
                    and len(consumers.get(h.output[0], [])) == 1:
                chain, final = chain + [h], m1
        if final is None or final.name in fused:
            continue
        fused[final.name] = ("GELU", x)
        absorbed.update(c.name for c in chain)


__all__ = ["_fusions"]

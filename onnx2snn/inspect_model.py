"""`onnx2snn inspect`: what is in an ONNX graph and what each part becomes in the SNN."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from . import onnx_io
from .graph.analysis import FORMS, analyze, prepare_averaged
from .graph.importer import import_onnx
from .graph.metadata import metadata_from_proto
from .task import fill_input_shape
from .errors import UnsupportedOpError
from .table import format_table


def inspect_onnx(path, input_shape=None) -> dict[str, Any]:
    """Summary of an ONNX model: ops, shapes, parameters, activations and their neurons,
    the spiking / post-processing split, and every op that cannot be converted."""
    proto = onnx_io.load_model(path)
    ops = Counter(n.op_type for n in proto.graph.node)
    info: dict[str, Any] = {
        "file": str(path), "opset": onnx_io.opset_version(proto),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "onnx_op_counts": dict(sorted(ops.items())),
        "inputs": {i.name: onnx_io.input_dims(i) for i in onnx_io.graph_inputs(proto)},
        "outputs": {o.name: onnx_io.input_dims(o) for o in proto.graph.output},
    }
    meta = metadata_from_proto(proto, str(path))
    if meta:  # what the file says about itself (Ultralytics: task, names, imgsz, stride, end2end)
        info["metadata"] = meta.to_dict()
    input_shape, shape_from = fill_input_shape(proto, input_shape)
    if shape_from:
        info["input_shape_from"] = shape_from
    try:
        twin = import_onnx(proto, input_shape=input_shape)
    except UnsupportedOpError as e:
        info["import_error"] = str(e)
        info["unsupported_ops"] = e.ops
        return info
    a = analyze(twin)
    info["parameters"] = sum(p.numel() for p in twin.parameters())
    info["activations"] = [
        {"node": n.name, "kind": n.kind or n.op, "neuron": n.neuron or "-", "part": n.part, "shape": n.shape,
         "onnx_node": n.onnx_node}
        for n in a.nodes if n.role == "activation" or (n.role == "averaged" and n.kind)]
    if not a.non_convertible:  # how every node runs once converted (with the re-encoding neurons in place)
        full = analyze(prepare_averaged(twin))
        info["nodes"] = [{"node": n.name, "op": n.kind or n.op, "form": n.form, "onnx_node": n.onnx_node}
                         for n in full.nodes if n.form not in ("input", "output", "constant")]
        info["forms"] = dict(Counter(n["form"] for n in info["nodes"]))
    info["parts"] = {p: [n.name for n in a.part(p)] for p in ("core", "readout", "post")}
    info["non_convertible"] = {k: v for k, v in a.non_convertible.items()}
    reasons = {}
    for n in a.nodes:
        if n.part == "core" and n.reason:
            reasons[n.name] = n.reason
    info["non_convertible_reasons"] = reasons
    acts, ops, why = a.blockers()
    info["blockers"] = [
        {"kind": k, "count": len(v), "nodes": v, "reason": why[k].split(" (replace_activations")[0],
         "way_out": (f"--replace {k}=ReLU (replace_activations={{'{k}': 'ReLU'}}), then fine-tune" if k in acts else
                     "none in onnx2snn: remove it from the model before export, or move it after the last activation")}
        for k, v in list(acts.items()) + list(ops.items())]
    return info


def render(info: dict[str, Any]) -> str:
    out = [f"# {info['file']}", "",
           f"opset {info['opset']}, producer {info['producer'] or '?'}", ""]
    if info.get("metadata"):
        out += ["metadata: " + ", ".join(f"{k} {v}" for k, v in info["metadata"].items())
                + (f"; input size from {info['input_shape_from']}" if info.get("input_shape_from") else ""), ""]
    out.append(format_table(["input", "shape"], [[k, v] for k, v in info["inputs"].items()]))
    out.append("")
    out.append(format_table(["output", "shape"], [[k, v] for k, v in info["outputs"].items()]))
    out.append("")
    out.append(format_table(["ONNX op", "count"], list(info["onnx_op_counts"].items())))
    out.append("")
    if "import_error" in info:
        out.append("## Cannot import")
        out.append(info["import_error"])
        return "\n".join(out)
    out.append(f"parameters: {info['parameters']:,}")
    out.append("")
    out.append("## Activations and the neurons they become")
    out.append(format_table(["node", "kind", "neuron", "part", "shape"],
                            [[a["node"], a["kind"], a["neuron"], a["part"], a["shape"]]
                             for a in info["activations"]]))
    out.append("")
    if info.get("nodes"):
        out.append("## How each node runs in the SNN")
        out.append(format_table(["form", "nodes", "meaning"], [[f, info["forms"][f], FORMS[f]] for f in FORMS
                                                               if f in info["forms"]]))
        out.append("")
        special = [n for n in info["nodes"] if n["form"] in ("time-averaged", "analog per step")]
        if special:
            out.append("Not spike-driven inside the spiking core (float work at every step):")
            out.append(format_table(["node", "op", "form", "ONNX node"],
                                    [[n["node"], n["op"], n["form"], n["onnx_node"]] for n in special]))
            out.append("")
    parts = info["parts"]
    out.append("## Spiking / post-processing split")
    out.append(f"spiking core: {len(parts['core'])} nodes (run for T steps)")
    out.append(f"readout: {len(parts['readout'])} nodes (linear, run once on time-averaged spikes): "
               + ", ".join(parts["readout"][:10]) + (" ..." if len(parts["readout"]) > 10 else ""))
    out.append(f"post-processing: {len(parts['post'])} nodes (non-spiking): "
               + ", ".join(parts["post"][:10]) + (" ..." if len(parts["post"]) > 10 else ""))
    out.append("")
    if info["non_convertible"]:
        out.append("## Cannot be converted to spiking (every blocker; convert refuses until all are gone)")
        out.append(format_table(["kind", "nodes", "why", "way out"],
                                [[b["kind"], f"{b['count']}: " + ", ".join(b["nodes"][:3]) +
                                  (" ..." if b["count"] > 3 else ""), b["reason"], b["way_out"]]
                                 for b in info["blockers"]]))
    else:
        out.append("Every op in the spiking part has a spiking form.")
    return "\n".join(out)


def to_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=1, default=str)


__all__ = ["inspect_onnx", "render", "to_json"]

"""``onnx2snn inspect``: the graph, its activations and what becomes spiking."""

from __future__ import annotations

import tempfile

from .common import default_model, existing, parser, shape


def add(sub) -> None:
    q = parser(sub, "inspect", "show the graph, its activations and what becomes spiking")
    q.add_argument("model", nargs="?", type=existing("ONNX file"), help="ONNX file (default: a built-in zoo model)")
    q.add_argument("--input-shape", type=shape, help="e.g. 1,3,224,224 for files with dynamic spatial dims")
    q.add_argument("--json", action="store_true", help="print JSON instead of tables")
    q.set_defaults(func=run)


def run(args) -> int:
    from ..inspect_model import inspect_onnx, render, to_json

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or default_model(tmp)
        info = inspect_onnx(path, input_shape=args.input_shape)
        if not args.model:
            info["file"] = "built-in digits_resnet (onnx2snn.zoo)"
    print(to_json(info) if args.json else render(info))
    return 0 if "import_error" not in info else 2

"""The `onnx2snn` command line."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from .errors import Onnx2SnnError


def _shape(s: str | None):
    if not s:
        return None
    return tuple(int(x) for x in s.replace("x", ",").split(",") if x)


def _default_model(tmp: str) -> str:
    """The built-in default: a model the package builds itself, exported to ONNX."""
    from .export import export_zoo_model

    return export_zoo_model("digits_resnet", os.path.join(tmp, "digits_resnet.onnx"))


def cmd_inspect(args) -> int:
    from .inspect_model import inspect_onnx, render, to_json

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or _default_model(tmp)
        info = inspect_onnx(path, input_shape=_shape(args.input_shape))
        if not args.model:
            info["file"] = "built-in digits_resnet (onnx2snn.zoo)"
    print(to_json(info) if args.json else render(info))
    return 0 if "import_error" not in info else 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onnx2snn", description="Convert trained ANNs (ONNX) into spiking networks.")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("inspect", help="show the graph, its activations and what becomes spiking")
    q.add_argument("model", nargs="?", help="ONNX file (default: a built-in zoo model)")
    q.add_argument("--input-shape", help="e.g. 1,3,224,224 for files with dynamic spatial dims")
    q.add_argument("--json", action="store_true", help="print JSON instead of tables")
    q.set_defaults(func=cmd_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Onnx2SnnError as e:
        print(f"onnx2snn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

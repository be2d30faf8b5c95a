"""The ``onnx2snn`` command line: one module per command, each with ``add(subparsers)``
(builds its parser, imports nothing heavy) and ``run(args) -> exit code`` (does the work,
importing torch only then), so that ``onnx2snn --help`` answers at once.

Errors of ours (:class:`onnx2snn.Onnx2SnnError`) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command modules, in the order --help lists them
COMMANDS = ("inspect", "convert", "verify", "export", "demo", "zoo")
_MODULES = {"inspect": "inspection"}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="onnx2snn", description="Convert trained ANNs (ONNX) into spiking networks, "
                                "verify them against onnxruntime, and export them.")
    p.add_argument("--version", action="version", version=f"onnx2snn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{_MODULES.get(name, name)}", __name__).add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..errors import Onnx2SnnError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Onnx2SnnError as e:
        print(f"onnx2snn {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Under torchrun the commands join a process group; leave it cleanly at the end."""
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["main", "build_parser", "COMMANDS"]

"""The ``onnx2snn`` command line: one module per command, each with ``add(subparsers)``
(builds its parser, imports nothing heavy) and ``run(args) -> exit code`` (does the work,
importing torch only then), so that ``onnx2snn --help`` answers at once.

Usage errors and errors of ours (:class:`onnx2snn.Onnx2SnnError`) print one line naming
the problem and the option to change, and exit with 2; no traceback. Progress: a bar on a
terminal, a few lines in a log, none with ``--quiet`` or ``ONNX2SNN_PROGRESS=0``
(:mod:`onnx2snn.progress`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .common import Parser, cli_text, warn_line

# command modules, in the order --help lists them
COMMANDS = ("inspect", "convert", "finetune", "verify", "export", "demo", "zoo")
_MODULES = {"inspect": "inspection"}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = Parser(prog="onnx2snn", description="Convert trained ANNs (ONNX) into spiking networks, "
               "verify them against onnxruntime, and export them.")
    p.add_argument("--version", action="version", version=f"onnx2snn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{_MODULES.get(name, name)}", __name__).add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..errors import Onnx2SnnError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (already printed as one line)
        return int(e.code or 0)
    if not getattr(args, "quiet", False):  # progress lines when stderr is a file (a bar on a terminal)
        from ..progress import log_to_stderr

        log_to_stderr()
    with warnings.catch_warnings():
        warnings.showwarning = warn_line(args.command)
        try:
            return int(args.func(args) or 0)
        except Onnx2SnnError as e:
            print(f"onnx2snn {args.command}: error: {cli_text(str(e), getattr(e, 'param', None))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"onnx2snn {args.command}: interrupted", file=sys.stderr)
            return 130
        finally:
            _leave_process_group()


def _leave_process_group() -> None:
    """Under torchrun the commands join a process group; leave it cleanly at the end."""
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["main", "build_parser", "COMMANDS"]

"""Argument types and helpers shared by the commands (no heavy imports)."""

from __future__ import annotations

import argparse
import os


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default in --help."""


def parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=Formatter)


def shape(s: str | None):
    """'1,3,224,224' or '1x3x224x224' -> a tuple of ints."""
    if not s:
        return None
    try:
        dims = tuple(int(x) for x in s.replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a shape: write the dims as integers, e.g. 1,3,224,224") \
            from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"{s!r} is not a shape: every dim must be an integer >= 1, e.g. 1,3,224,224")
    return dims


def floats(s: str | None, n: int, default: float) -> tuple[float, ...]:
    """'0.5' or '0.485,0.456,0.406' -> n floats (one value is repeated)."""
    vals = [float(v) for v in s.split(",")] if s else [default]
    return tuple(vals * n if len(vals) == 1 else vals)


def default_model(tmp: str) -> str:
    """The built-in default: a model the package builds itself, exported to ONNX."""
    from ..export import export_zoo_model

    return export_zoo_model("digits_resnet", os.path.join(tmp, "digits_resnet.onnx"))


__all__ = ["Formatter", "parser", "shape", "floats", "default_model"]

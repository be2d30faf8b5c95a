"""Argument types, option groups and messages shared by the commands (no heavy imports:
``onnx2snn --help`` must not import torch).

Every option is checked by its argparse type with the same checks the Python API uses
(:mod:`onnx2snn.checks`), so a typo is one line and exit code 2 before any work;
errors raised later by the API are printed by :func:`cli_text` under the CLI's option
names (``--input-shape`` rather than ``input_shape=``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from .. import checks
from ..errors import ConfigError


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default in --help, where it has one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (problem, then where to look) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=Formatter)


def _checked(param: str, check, *args):
    """An argparse type running ``check(param, value, *args)``; its message without the
    ``param=`` prefix (argparse names the option itself)."""
    def convert(text: str):
        try:
            return check(param, text, *args)
        except ConfigError as e:
            msg = str(e)
            for prefix in (param + "=", param + ": "):
                if msg.startswith(prefix):
                    msg = msg[len(prefix):]
            raise argparse.ArgumentTypeError(msg) from None
    convert.__name__ = param
    return convert


def _int(param: str, text: str, minimum: int = 1):
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{param}={text!r} is not valid: expected an integer >= {minimum}", param) from None
    return checks.integer(param, value, minimum)


def _real(param: str, text: str, minimum=None, maximum=None):
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{param}={text!r} is not valid: expected a number", param) from None
    return checks.real(param, value, minimum, maximum)


def positive_int(param: str):
    return _checked(param, _int, 1)


def real(param: str, minimum=None, maximum=None):
    return _checked(param, _real, minimum, maximum)


threshold = _checked("threshold", lambda p, v: checks.threshold(v, p))
percentile = threshold


def _timesteps(param: str, text: str):
    try:
        items = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        items = []
    if not items or min(items) < 1:
        raise ConfigError(f"{param}={text!r} is not valid: expected comma-separated integers >= 1, e.g. 1,2,4,8",
                          param)
    return checks.timesteps_list(items, param)


timesteps_list = _checked("timesteps", _timesteps)


def _shape(param: str, text: str, example: str = "1,3,224,224"):
    try:
        dims = [int(x) for x in re.split(r"[,x]", text) if x.strip()]
    except ValueError:
        raise ConfigError(f"{param}={text!r} is not valid: write the dims as integers, e.g. {example}", param) \
            from None
    return checks.shape(param, dims, False, example)


shape = _checked("input_shape", _shape)


def _size(param: str, text: str):
    dims = _shape(param, text, "224,224")
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2:
        raise ConfigError(f"{param}={text!r} is not valid: expected H,W (or one number for a square), e.g. 224,224",
                          param)
    return dims


size = _checked("size", _size)


def _floats(param: str, text: str, positive: bool):
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{param}={text!r} is not valid: expected comma-separated numbers, e.g. 0.485,0.456,0.406",
                          param) from None
    return tuple(checks.real(param, v, 0.0 if positive else None, strict_min=positive) for v in vals)


mean = _checked("mean", _floats, False)
std = _checked("std", _floats, True)


def _replacement(param: str, text: str):
    pairs = {}
    for item in (t.strip() for t in text.split(",")):
        kind, eq, new = item.partition("=")
        if not eq or not kind or not new:
            raise ConfigError(f"{param}={text!r} is not valid: expected KIND=NEW such as SiLU=ReLU (several: "
                              "SiLU=ReLU,GELU=ReLU or --replace again)", param)
        pairs[kind.strip()] = new.strip()
    return checks.activation_map(pairs, param)


replacement = _checked("replace_activations", _replacement)


def existing(what: str):
    """An argparse type for a path that must exist (file or folder)."""
    def convert(text: str) -> str:
        if not os.path.exists(text):
            raise argparse.ArgumentTypeError(f"{text}: no such {what}")
        return text
    convert.__name__ = what
    return convert


def merged(dicts) -> dict | None:
    """The union of repeated ``--replace`` options."""
    if not dicts:
        return None
    out = {}
    for d in dicts:
        out.update(d)
    return out


# -- options from the settings tables -------------------------------------------------------
def _inferred(name: str, default) -> dict:
    """argparse details of a row with no spec: from its default's type (checked as the API checks)."""
    if isinstance(default, bool):
        return {"action": "store_false" if default else "store_true"}
    if isinstance(default, int):
        return {"type": _checked(name, _int, 0)}
    if isinstance(default, float):
        return {"type": real(name)}
    return {}


def add_table(p: argparse.ArgumentParser, table, specs: dict, groups: dict | None = None) -> list[str]:
    """One option per row of ``table`` with a flag (flags, default, choices and help from the
    table; ``specs[name]``: argparse details such as type=, action=; ``groups[name]``: the
    argument group). A row whose flags are already taken (one switch for two settings) or that
    spreads over several options by hand (``reason`` and several flags) is skipped. Returns
    the settings added with ``dest`` = their name (``table_values`` reads them back)."""
    added = []
    for name, s in table.items():
        if not s.flags or any(f in p._option_string_actions for f in s.flags):
            continue
        if s.reason and len(s.flags) > 1 and name not in specs:
            continue
        kwargs = dict(specs.get(name) or _inferred(name, s.default))
        kwargs.setdefault("dest", name)
        table.argument((groups or {}).get(name, p), name, **kwargs)
        if kwargs["dest"] == name:
            added.append(name)
    return added


def table_values(args, names) -> dict:
    """The settings ``names`` as parsed (keywords for the API)."""
    return {n: getattr(args, n) for n in names}


# -- image preprocessing ----------------------------------------------------------------
def add_preprocess_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("image preprocessing (image folders, COCO json, uint8 arrays)")
    g.add_argument("--size", type=size, help="resize images to H,W (default: the model's input size)")
    g.add_argument("--mean", type=mean, help="per-channel mean subtracted after scaling pixels to [0, 1], "
                                             "e.g. 0.485,0.456,0.406 (default 0)")
    g.add_argument("--std", type=std, help="per-channel std to divide by, e.g. 0.229,0.224,0.225 (default 1)")


def preprocess_from_args(args, input_shape) -> object | None:
    """A Preprocess from --size/--mean/--std and the model's input shape [N, C, H, W]; None
    when no option is given (the API then resizes to the model's size, pixels in [0, 1])."""
    if args.size is None and args.mean is None and args.std is None:
        return None
    from ..data.loaders import Preprocess

    if input_shape is None or len(input_shape) != 4:
        raise ConfigError(f"--size/--mean/--std apply to image models [N, C, H, W]; this model takes "
                          f"{list(input_shape or [])}", "preprocess")
    c = int(input_shape[1])
    dims = args.size or tuple(input_shape[2:])
    if any(not isinstance(d, int) or d < 1 for d in dims):
        raise ConfigError("the model's input size is dynamic: give --size H,W (or --input-shape)", "size")
    return Preprocess(size=tuple(dims), channels=c, mean=args.mean or (0.0,), std=args.std or (1.0,))


# -- messages -----------------------------------------------------------------------------
def _replace_map(m: re.Match) -> str:
    pairs = re.findall(r"""['"](\w+)['"]\s*:\s*['"](\w+)['"]""", m.group(1))
    return "--replace " + ",".join(f"{k}={v}" for k, v in pairs)


def _shape_arg(m: re.Match) -> str:
    return "--input-shape " + re.sub(r"\s+", "", m.group(1))


def cli_text(message: str, param: str | None = None) -> str:
    """An API error message as the command line says it: options instead of Python
    parameters, on one line. ``param``: the parameter a ConfigError names."""
    if param in checks.CLI_NAMES and message.startswith(param + ":"):
        message = checks.CLI_NAMES[param] + message[len(param):]
    text = message.replace(checks.PREPROCESS_HINT, "--size H,W --mean ... --std ...")
    text = re.sub(r"import_onnx\(path, (input_shape=\([^)]*\))\)", r"\1", text)
    text = re.sub(r"\binput_shape=\(([\d,.\s]+)\)", _shape_arg, text)
    text = re.sub(r"\breplace_activations=\{([^}]*)\}", _replace_map, text)
    for name in sorted(checks.CLI_NAMES, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.\-]){name}=(\s|$)", lambda m: checks.CLI_NAMES[name] + m.group(1), text)
        text = re.sub(rf"(?<![\w.\-]){name}=", checks.CLI_NAMES[name] + " ", text)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def warn_line(command: str):
    """A ``warnings.showwarning`` that prints our warnings as one line on stderr."""
    import warnings

    from ..errors import Onnx2SnnWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, Onnx2SnnWarning):
            print(f"onnx2snn {command}: warning: {cli_text(str(message))}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    return show


def default_model(tmp: str) -> str:
    """The built-in default: a model the package builds itself, exported to ONNX."""
    import warnings

    from ..export import export_zoo_model

    with warnings.catch_warnings():  # torch's exporter warnings are not the user's business here
        warnings.simplefilter("ignore")
        return export_zoo_model("digits_resnet", os.path.join(tmp, "digits_resnet.onnx"))


def onnx_input_shape(path: str, input_shape=None):
    """The model's input shape [N, C, H, W] from the file (ints where static, None where
    dynamic), or ``input_shape`` when given; None for multi-input models."""
    if input_shape is not None:
        return tuple(input_shape)
    from .. import onnx_io

    proto = onnx_io.load_model(path)
    inputs = onnx_io.graph_inputs(proto)
    if len(inputs) != 1:
        return None
    dims = tuple(d if isinstance(d, int) and d > 0 else None for d in onnx_io.input_dims(inputs[0]))
    if None in dims[1:]:  # dynamic: the size its metadata (imgsz) gives, as convert / finetune take it
        from ..task import fill_input_shape

        filled, _ = fill_input_shape(proto, None)
        if filled is not None:
            return tuple(filled)
    return dims


__all__ = ["Formatter", "Parser", "parser", "positive_int", "real", "threshold", "percentile", "timesteps_list", "shape", "size",
           "mean", "std", "replacement", "existing", "merged", "add_table", "table_values", "add_preprocess_options", "preprocess_from_args",
           "cli_text", "warn_line", "default_model", "onnx_input_shape"]


def register_zoo_names() -> None:
    """Make the zoo's names usable (``--postprocess tiny-yolo``, ``--loss yolo_relu``): the zoo
    registers its decoders and losses with the library when imported."""
    from .. import zoo  # noqa: F401

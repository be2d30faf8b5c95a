"""Up-front checks of the settings every public function and CLI option takes.

Each check returns the value in its canonical type or raises :class:`ConfigError` naming
the parameter, what was given and what is allowed, before any work is done. The CLI
reports the same errors under its own option names (``CLI_NAMES``). Nothing here
imports torch at module level: the command line's argument types use these checks.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Iterable, Mapping

from . import settings
from .errors import ConfigError

# Python parameter -> command-line option, for messages printed by the CLI
CLI_NAMES = {
    "timesteps": "-T/--timesteps", "threshold": "--threshold", "percentile": "--threshold", "levels": "--levels",
    "input_shape": "--input-shape", "replace_activations": "--replace", "batch_size": "--batch-size",
    "limit": "--limit", "calibration_limit": "--limit", "normalization": "--norm", "encoding": "--encoding",
    "epochs": "--epochs", "lr": "--lr", "preprocess": "--size/--mean/--std", "size": "--size", "mean": "--mean",
    "std": "--std", "channels": "--channels", "output": "-o/--output", "out": "--out", "tolerance": "--tolerance",
    "mse_tolerance": "--mse-tolerance",
    "task": "--task", "postprocess": "--postprocess", "annotations": "--annotations", "reference": "--reference",
    "calibration_data": "--calib", "data": "--data", "correct_timesteps": "--correct-timesteps",
    "calibrate_timesteps": "--correct-timesteps",
    "checkpoints": "--timesteps", "rate_weight": "--rate-weight", "distill_weight": "--distill-weight",
    "margin": "--margin", "validation": "--search-data", "search": "--postprocess/--margin/--search-data",
}
# every setting with an option of its own (onnx2snn.settings), e.g. reencode_levels, target, v_init
CLI_NAMES.update({name: "/".join(s.flags) for table in (settings.CONVERT, settings.FINETUNE, settings.SEARCH)
                  for name, s in table.items() if s.flags and not s.reason and name not in CLI_NAMES})

# how messages tell Python users to pass a preprocessing spec (the CLI shows its options instead)
PREPROCESS_HINT = "preprocess=onnx2snn.zoo.Preprocess(size=(H, W), mean=..., std=...)"

# activation kinds replace_activations takes, and what they may become (graph.source applies them)
ACTIVATION_KINDS = ("CELU", "ELU", "GELU", "HardSigmoid", "HardSwish", "Mish", "SELU", "SiLU", "Sigmoid",
                    "Softplus", "Tanh")
REPLACEMENTS = ("LeakyReLU", "ReLU", "ReLU6")


def _fail(param: str, value: Any, allowed: str) -> ConfigError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{param}={shown} is not valid: {allowed}", param)


def integer(param: str, value: Any, minimum: int | None = 1, maximum: int | None = None) -> int:
    """An int (not a bool, not a float like 1.5) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) \
                and float(value).is_integer():
            value = int(value)
        else:
            raise _fail(param, value, "expected an integer" + (f" >= {minimum}" if minimum is not None else ""))
    value = int(value)
    if minimum is not None and value < minimum:
        raise _fail(param, value, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise _fail(param, value, f"must be <= {maximum}")
    return value


def optional_integer(param: str, value: Any, minimum: int | None = 1, maximum: int | None = None) -> int | None:
    return None if value is None else integer(param, value, minimum, maximum)


def real(param: str, value: Any, minimum: float | None = None, maximum: float | None = None,
         strict_min: bool = False) -> float:
    """A finite real number within the bounds (``strict_min``: greater than ``minimum``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise _fail(param, value, "expected a finite number")
    value = float(value)
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        raise _fail(param, value, f"must be {'>' if strict_min else '>='} {minimum:g}")
    if maximum is not None and value > maximum:
        raise _fail(param, value, f"must be <= {maximum:g}")
    return value


def optional_real(param: str, value: Any, minimum: float | None = None, maximum: float | None = None,
                  strict_min: bool = False) -> float | None:
    return None if value is None else real(param, value, minimum, maximum, strict_min)


def boolean(param: str, value: Any) -> bool:
    """True or False (numpy bools too), not 1, "yes" or None."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise _fail(param, value, "expected True or False")


def threshold(value: Any, param: str = "threshold") -> "float | str":
    """How thresholds are set: ``"mse"``, ``"max"`` or a percentile in (0, 100]."""
    if isinstance(value, str):
        if value in ("max", "mse"):
            return value
        try:
            value = float(value)
        except ValueError:
            raise _fail(param, value, "expected a number in (0, 100] such as 99.99, 'max' or 'mse'") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or not 0 < float(value) <= 100:
        raise _fail(param, value, "expected a number in (0, 100] such as 99.99, 'max' or 'mse'")
    return float(value)


percentile = threshold  # its name before the setting was renamed


def choice(param: str, value: Any, options: Iterable[Any]) -> Any:
    options = list(options)
    try:
        ok = value in options
    except TypeError:  # unhashable or incomparable
        ok = False
    if not ok:
        raise _fail(param, value, "expected one of " + ", ".join(repr(o) for o in options))
    return value


def timesteps_list(value: Any, param: str = "timesteps") -> list[int]:
    """A sweep of timesteps: an int or a non-empty iterable of ints >= 1, sorted and unique."""
    if isinstance(value, str):
        raise _fail(param, value, "expected a list of integers >= 1, e.g. [1, 2, 4, 8]")
    items = [value] if isinstance(value, (numbers.Number, bool)) else value
    try:
        items = list(items)
    except TypeError:
        raise _fail(param, value, "expected a list of integers >= 1, e.g. [1, 2, 4, 8]") from None
    if not items:
        raise _fail(param, value, "expected a non-empty list of integers >= 1")
    try:
        return sorted({integer(param, t, 1) for t in items})
    except ConfigError:
        raise _fail(param, value, "expected integers >= 1, e.g. [1, 2, 4, 8]") from None


def shape(param: str, value: Any, allow_mapping: bool = True, example: str = "(1, 3, 224, 224)"
          ) -> "tuple[int, ...] | dict | None":
    """An input shape: a sequence of ints >= 1 (e.g. ``(1, 3, 224, 224)``), or with
    ``allow_mapping`` a dict {input name: shape}; None passes."""
    if value is None:
        return None
    if allow_mapping and isinstance(value, Mapping):
        return {str(k): shape(f"{param}[{k!r}]", v, False, example) for k, v in value.items()}
    allowed = f"expected a sequence of integers >= 1 such as {example}" + \
        (", or a dict {input name: shape}" if allow_mapping else "")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise _fail(param, value, allowed)
    dims = list(value)
    if not dims:
        raise _fail(param, value, allowed)
    try:
        return tuple(integer(param, d, 1) for d in dims)
    except ConfigError:
        raise _fail(param, value, allowed) from None


def activation_map(value: Any, param: str = "replace_activations") -> dict[str, str] | None:
    """``{"SiLU": "ReLU", ...}``: known activation kinds to activations with a spiking form."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(param, value, 'expected a dict such as {"SiLU": "ReLU"}')
    out = {}
    for k, v in value.items():
        if k not in ACTIVATION_KINDS:
            raise ConfigError(f"{param}: unknown activation kind {k!r}; known: {', '.join(ACTIVATION_KINDS)}", param)
        if v not in REPLACEMENTS:
            raise ConfigError(f"{param}: cannot replace {k} by {v!r}; use one of {', '.join(REPLACEMENTS)}", param)
        out[k] = v
    return out


# -- files --------------------------------------------------------------------------------
def writable_file(param: str, path: Any) -> str:
    """An output file path whose folder exists and is writable and that is not a folder."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise _fail(param, path, "expected a file path")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"{param}: {path} is a folder; give a file name such as {os.path.join(path, 'model.snn.pt')}",
                          param)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{param}: cannot write {path}: the folder {folder} does not exist (create it first)", param)
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ConfigError(f"{param}: cannot write {path}: no write permission", param)
    return path


def writable_dir(param: str, path: Any) -> str:
    """An output folder: an existing writable folder, or one that can be created."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise _fail(param, path, "expected a folder path")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{param}: {path} is an existing file, not a folder; choose a folder for the report", param)
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{param}: cannot create folder {path}: {parent} is a file", param)
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{param}: cannot write into {parent}: no write permission", param)
    return path


# -- memory -------------------------------------------------------------------------------
def available_memory(device: Any = "cpu") -> int | None:
    """Bytes free for a new allocation on ``device`` (CUDA: free device memory; CPU:
    MemAvailable of /proc/meminfo), or None where it cannot be told."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no driver / not initialized: no estimate
            return None
    if kind != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


WARN_FRACTION = 0.5  # warn when a run needs more than this share of the free memory


def memory(needed: float, what: str, fix: str, device: Any = "cpu", param: str = "timesteps",
           warn: bool = True) -> None:
    """Refuse (ConfigError) a run that needs more than the free memory of ``device``, and
    warn (:class:`Onnx2SnnWarning`, with ``warn``) when it needs more than half of it."""
    free = available_memory(device)
    if free is None or needed <= WARN_FRACTION * free:
        return
    gib = 2.0 ** 30
    text = f"{what} needs about {needed / gib:.3g} GiB, and {free / gib:.3g} GiB of {device} memory are free"
    if needed > free:
        raise ConfigError(f"{text}: {fix}", param)
    if not warn:
        return
    import warnings

    from .errors import Onnx2SnnWarning

    warnings.warn(f"{text} ({fix} if it swaps or fails)", Onnx2SnnWarning, stacklevel=3)


__all__ = ["integer", "optional_integer", "real", "optional_real", "boolean", "threshold", "percentile", "choice",
           "timesteps_list", "shape", "activation_map", "writable_file", "writable_dir", "available_memory",
           "memory", "CLI_NAMES", "ACTIVATION_KINDS", "REPLACEMENTS", "PREPROCESS_HINT"]

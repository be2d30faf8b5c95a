"""Up-front checks of the settings every public function and CLI option takes.

Each check returns the value in its canonical type or raises :class:`ConfigError` naming
the parameter, what was given and what is allowed, before any work is done. The CLI
reports the same errors under its own option names (``CLI_NAMES``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

from .errors import ConfigError

# Python parameter -> command-line option, for messages printed by the CLI
CLI_NAMES = {
    "timesteps": "-T/--timesteps", "percentile": "--percentile", "levels": "--levels",
    "input_shape": "--input-shape", "replace_activations": "--replace", "batch_size": "--batch-size",
    "limit": "--limit", "calibration_limit": "--limit", "normalization": "--norm", "encoding": "--encoding",
    "epochs": "--epochs", "lr": "--lr", "preprocess": "--size/--mean/--std",
}


def _fail(param: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{param}={value!r} is not valid: {allowed}", param)


def integer(param: str, value: Any, minimum: int | None = 1, maximum: int | None = None) -> int:
    """An int (not a bool, not a float like 1.5) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
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


def percentile(value: Any, param: str = "percentile") -> "float | str":
    """A percentile in (0, 100], or ``"max"``."""
    if isinstance(value, str):
        if value == "max":
            return value
        try:
            value = float(value)
        except ValueError:
            raise _fail(param, value, "expected a number in (0, 100] such as 99.99, or 'max'") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or not 0 < float(value) <= 100:
        raise _fail(param, value, "expected a number in (0, 100] such as 99.99, or 'max'")
    return float(value)


def choice(param: str, value: Any, options: Iterable[Any]) -> Any:
    options = list(options)
    if value not in options:
        raise _fail(param, value, "expected one of " + ", ".join(repr(o) for o in options))
    return value


def timesteps_list(value: Any, param: str = "timesteps") -> list[int]:
    """A sweep of timesteps: an int or a non-empty iterable of ints >= 1, sorted and unique."""
    items = [value] if isinstance(value, (numbers.Integral, bool)) else value
    try:
        items = list(items)
    except TypeError:
        raise _fail(param, value, "expected a list of integers >= 1") from None
    if not items:
        raise _fail(param, value, "expected a non-empty list of integers >= 1")
    return sorted({integer(param, t, 1) for t in items})


__all__ = ["integer", "optional_integer", "real", "percentile", "choice", "timesteps_list", "CLI_NAMES"]

"""Progress of the long steps (calibration, fine-tuning, correction, verify), as people
know it from other tools: a tqdm bar on a terminal; in a file or CI log, a plain line now
and then through :mod:`logging` (logger ``onnx2snn.progress``, level INFO), never a
carriage-return update.

Which one, first rule that applies:

- ``progress=False`` from the caller (the API's keyword, the command line's ``--quiet``): nothing;
- ``ONNX2SNN_PROGRESS=0``: nothing; ``ONNX2SNN_PROGRESS=1``: the bar, terminal or not;
- the bar when stderr is a terminal (or a Jupyter kernel shows it), else the log lines:
  one at the start, one each quarter of the total (or every 30 s when the total is unknown,
  or longer than that since the last line), one at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

ENV = "ONNX2SNN_PROGRESS"
LOG_EVERY_S = 30.0
LOG_FRACTION = 0.25
logger = logging.getLogger("onnx2snn.progress")


def mode(enabled: bool = True) -> str:
    """"bar", "log" or "off" for a step whose caller asked for progress ``enabled``."""
    if not enabled:
        return "off"
    env = os.environ.get(ENV, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return "off"
    if env in ("1", "true", "yes", "on"):
        return "bar"
    return "bar" if _interactive() else "log"


def _interactive() -> bool:
    stream = sys.stderr
    try:
        if stream is not None and stream.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or replaced stream
        pass
    shell = sys.modules.get("IPython")
    ip = getattr(shell, "get_ipython", lambda: None)() if shell is not None else None
    return type(ip).__name__ == "ZMQInteractiveShell"  # Jupyter: tqdm draws a widget


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


class LogProgress:
    """The bar's small interface (iterate, ``update``, ``set_postfix``, ``close``, ``with``)
    writing a few INFO lines instead of redrawing."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str, enabled: bool):
        self.iterable, self.total, self.desc, self.unit, self.enabled = iterable, total, desc, unit, enabled
        self.n, self.postfix, self.closed = 0, "", False
        self.t0 = self.last_t = time.monotonic()
        self.next_fraction = LOG_FRACTION
        if enabled:
            logger.info("%s: started (%s)", desc, f"{total} {_plural(unit)}" if total is not None
                        else f"counting {_plural(unit)}")

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """As tqdm's: log lines do not show it."""

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        now = time.monotonic()
        due = now - self.last_t >= LOG_EVERY_S
        if self.total:
            while self.n >= self.next_fraction * self.total and self.next_fraction < 1.0:
                due = True
                self.next_fraction += LOG_FRACTION
        if due and not (self.total and self.n >= self.total):  # the end has its own line
            self._line(now)

    def _line(self, now: float, done: bool = False) -> None:
        self.last_t = now
        of = f"/{self.total}" if self.total is not None else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        logger.info("%s: %s%d%s %s%s, %.1f s%s", self.desc, "done, " if done else "", self.n, of,
                    _plural(self.unit), pct, now - self.t0, extra)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.enabled:
                self._line(time.monotonic(), done=True)


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        enabled: bool = True):
    """A progress indicator over ``iterable`` (or updated by hand): a tqdm bar, log lines,
    or nothing, as :func:`mode` decides for ``enabled``."""
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    m = mode(enabled)
    if m == "bar":
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True)
    return LogProgress(iterable, total, desc, unit, m == "log")


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (which tests and notebooks replace)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def log_to_stderr() -> None:
    """For the command line: show the progress lines on stderr when nothing else handles
    them (a program that configures logging keeps its own handlers)."""
    root = logging.getLogger("onnx2snn")
    if not root.handlers and not logging.getLogger().handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        if root.level == logging.NOTSET:
            root.setLevel(logging.INFO)


__all__ = ["bar", "mode", "LogProgress", "log_to_stderr", "ENV"]

"""Piecewise-linear SiLU / GELU (``pwl_activations=True``): an approximation, off by default.

A time-averaged operator evaluates its ``f`` on every element at every step; for SiLU that is an
exp, a divide, an add and a multiply (about 41 pJ in FP32), the largest float work of a SiLU
detector. A piecewise-linear fit with 16 segments costs a binary search over its 15 knots
(4 compares), one multiply and one add (about 8 pJ), and verify counts exactly that (the
``bucketize`` rule of :mod:`onnx2snn.verification.flops`).

The fit interpolates ``f`` at knots placed where its curvature is (density ``sqrt|f''|``):
below the first knot it is ``f(first)`` (SiLU and GELU tend to 0), above the last ``x`` minus a
constant (they tend to x). Max abs error on the whole line (measured by tests): SiLU 0.0084,
GELU 0.0076. The modules subclass ``nn.SiLU`` / ``nn.GELU``, so the graph analysis treats them
as the ops they approximate (time-averaged operators in the spiking core).
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

SILU_KNOTS = (-8.0, -5.021, -3.516, -1.912, -1.224, -0.759, -0.366, 0.0, 0.366, 0.759, 1.224, 1.912, 3.516,
              5.021, 8.0)
GELU_KNOTS = (-6.0, -2.626, -1.949, -1.142, -0.754, -0.474, -0.231, 0.0, 0.231, 0.474, 0.754, 1.142, 1.949,
              2.626, 6.0)
MAX_ERROR = {"SiLU": 0.0085, "GELU": 0.0077}  # max |pwl - f| over the real line (see the tests)


def fit(f, knots) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(knots, slope, intercept) of the interpolating fit of ``f`` (len(knots) + 1 segments)."""
    k = torch.tensor(knots, dtype=torch.float64)
    v = f(k)
    slope = torch.zeros(len(knots) + 1, dtype=torch.float64)
    icpt = torch.zeros_like(slope)
    icpt[0] = v[0]
    s = (v[1:] - v[:-1]) / (k[1:] - k[:-1])
    slope[1:-1], icpt[1:-1] = s, v[:-1] - s * k[:-1]
    slope[-1], icpt[-1] = 1.0, v[-1] - k[-1]
    return k.float(), slope.float(), icpt.float()


class _Piecewise:
    def _init_fit(self, f, knots) -> None:
        k, s, c = fit(f, knots)
        self.register_buffer("knots", k, persistent=False)
        self.register_buffer("slope", s, persistent=False)
        self.register_buffer("intercept", c, persistent=False)

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        """The function it approximates (what the ANN computes; verify counts the ANN's work on it)."""
        return self._exact(x)

    def sum_form(self, sums: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``t f(S_t / t)`` for running sums ``sums`` ([n, ...], step t of ``t`` [n]) without
        averaging: ``a_i S + t b_i``, segment i by comparing ``S`` with ``t`` x the knots (per
        element: the compares, a multiply, an add; per step the scaled knots and intercepts)."""
        out = torch.empty_like(sums)
        knots, slope, icpt = self.knots.to(sums), self.slope.to(sums), self.intercept.to(sums)
        for k in range(sums.shape[0]):
            i = torch.bucketize(sums[k], knots * t[k])
            torch.add(slope[i] * sums[k], (icpt * t[k])[i], out=out[k])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = torch.bucketize(x, self.knots.to(x))
        return self.slope.to(x)[i] * x + self.intercept.to(x)[i]  # counted: compares, a multiply, an add


class PiecewiseSiLU(_Piecewise, nn.SiLU):
    """SiLU as a 16-segment piecewise-linear fit (max abs error 0.0084)."""

    def __init__(self) -> None:
        nn.SiLU.__init__(self)
        self._init_fit(torch.nn.functional.silu, SILU_KNOTS)
        self._exact = torch.nn.functional.silu


class PiecewiseGELU(_Piecewise, nn.GELU):
    """GELU (erf form) as a 16-segment piecewise-linear fit (max abs error 0.0076)."""

    def __init__(self) -> None:
        nn.GELU.__init__(self)
        self._init_fit(torch.nn.functional.gelu, GELU_KNOTS)
        self._exact = torch.nn.functional.gelu


def piecewise_activations(twin: fx.GraphModule, on: bool = True) -> fx.GraphModule:
    """Every SiLU / GELU module of ``twin`` replaced by its piecewise-linear fit (in place;
    ``on=False``: unchanged). GELU's tanh form is left as it is (another function)."""
    if not on:
        return twin
    for name, m in list(twin.named_modules()):
        new = _fit_of(m)
        if new is not None:
            parent, _, attr = name.rpartition(".")
            setattr(twin.get_submodule(parent) if parent else twin, attr, new)
    return twin


def _fit_of(m: nn.Module) -> "nn.Module | None":
    """The piecewise-linear fit that replaces module ``m`` (None: ``m`` has none, or is one)."""
    if type(m) is nn.SiLU:
        return PiecewiseSiLU()
    if type(m) is nn.GELU and m.approximate == "none":
        return PiecewiseGELU()
    return None


def has_fittable(twin: nn.Module) -> bool:
    """Whether :func:`piecewise_activations` would replace anything in ``twin``."""
    return any(_fit_of(m) is not None for m in twin.modules())


__all__ = ["PiecewiseSiLU", "PiecewiseGELU", "piecewise_activations", "has_fittable", "fit", "SILU_KNOTS", "GELU_KNOTS",
           "MAX_ERROR"]

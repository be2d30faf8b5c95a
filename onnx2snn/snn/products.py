"""Increment products: a product of two spike tensors, updated event by event.

A product of two computed tensors ``f(x, y)`` (a MatMul such as ``Q K^T`` or ``A V``, an
element-wise gate) is bilinear. When both operands are spikes (each step's value a small
integer multiple of a threshold, from re-encoding neurons), the product of their running sums
``P_t = f(X_t, Y_t)`` follows from the last one by

    P_t = P_{t-1} + f(x_t, Y_t) + f(X_{t-1}, y_t)

(``= x_t Y_{t-1} + X_{t-1} y_t + x_t y_t`` added to ``P_{t-1}``; SpikeZIP-TF, ECMT's AtNeuron), so
each event of ``x`` (of ``y``) costs one accumulate per partner element of ``Y`` (of ``X``) it
meets, instead of a dense float product per step. The time-averaged output is the same as
:class:`onnx2snn.snn.averaged.TimeAveraged`'s, ``t f(X_t/t, Y_t/t) = P_t / t``, differenced:

    y_t = P_t / t - P_{t-1} / (t-1)

(one multiply and one subtraction per output element and step). The values equal
TimeAveraged's to float rounding; chunked == one-shot == step mode (the state carried is
``X``, ``Y``, ``P``, ``P / t`` and t). verify counts its work by events
(:mod:`onnx2snn.verification.tally`).
"""

from __future__ import annotations

import torch

from .averaged import TimeAveraged
from .neurons import time_folded, time_major


class IncrementProduct(TimeAveraged):
    """A time-averaged product of two dynamic (spike) inputs, computed by increments."""

    def extra_repr(self) -> str:
        return f"{self.op_name}, increment product"

    def _steps(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        n = 1 if self.step_mode else self.T
        st = self.state if (self.carry or self.step_mode) else None
        t0 = 0 if st is None else st["t"]
        xs = [time_major(v, n, self.layout(i)) for i, v in enumerate(inputs)]
        if st is None:
            X, Y = torch.zeros_like(xs[0][0]), torch.zeros_like(xs[1][0])
            P = g = None
        else:
            X, Y, P, g = st["X"], st["Y"], st["P"], st["g"]
        outs = []
        for k in range(n):
            x, y = xs[0][k], xs[1][k]
            Y = Y + y
            inc = self.call(x, Y) + self.call(X, y)  # f(x_t, Y_t) + f(X_{t-1}, y_t)
            X = X + x
            P = inc if P is None else P + inc
            g_new = P / float(t0 + k + 1)
            outs.append(g_new if g is None else g_new - g)
            g = g_new
        out = torch.stack(outs)
        if self.carry or self.step_mode:
            self.state = {"t": t0 + n, "X": X, "Y": Y, "P": P, "g": g}
        return time_folded(out, self.out_layout)


def as_increment(mod: TimeAveraged) -> IncrementProduct:
    """The same op (``fn``, arguments, layouts) as an :class:`IncrementProduct`."""
    new = IncrementProduct(mod.fn, mod.args, mod.kwargs, mod.kinds, name=mod.op_name)
    new.in_layouts, new.out_layout = mod.in_layouts, mod.out_layout
    return new


__all__ = ["IncrementProduct", "as_increment"]

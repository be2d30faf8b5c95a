"""LayerNorm as a time-averaged operator computed on the running sums (no 1/t, no t per element).

A time-averaged op outputs ``y_t = g_t - g_{t-1}`` with ``g_t = t f(S_t / t)``
(:mod:`onnx2snn.snn.averaged`): in general a multiply per input element (``1/t``) and one per
output element (``t``) every step. A LayerNorm is invariant to the scale of its input but for
``eps``, so with per-row statistics of the sums ``mu = mean(S_t)``, ``var = var(S_t)``

    g_t = gamma * (S_t - mu) * r_t + t * beta,   r_t = t / sqrt(var + eps t^2)

exactly (``t LN(S/t) = t (S - mu) / sqrt(var + eps t^2)``): ``t`` enters once per row (``r_t``)
and once per channel (``t * beta``), not per element. The same values as TimeAveraged's to float
rounding; chunked == one-shot == step mode (state: the sums, the last ``g`` and t). verify
counts it so (:mod:`onnx2snn.verification.tally`).
"""

from __future__ import annotations

import torch
from torch import nn

from .averaged import TimeAveraged
from .neurons import cumsum_time, diff_time, time_folded, time_major


class SumNorm(TimeAveraged):
    """A time-averaged ``nn.LayerNorm`` (one dynamic input) computed on the running sums."""

    def extra_repr(self) -> str:
        return f"{self.op_name}, on running sums"

    def _steps(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        ln: nn.LayerNorm = self.fn
        n = 1 if self.step_mode else self.T
        st = self.state if (self.carry or self.step_mode) else None
        t0 = 0 if st is None else st["t"]
        x = time_major(inputs[0], n, self.layout(0))
        cum = cumsum_time(x, init=None if st is None else st["sums"][0])
        t = torch.arange(t0 + 1, t0 + n + 1, dtype=cum.dtype, device=cum.device)
        tt = time_folded(t.reshape((n,) + (1,) * (cum.dim() - 1)).expand_as(cum), self.layout(0))
        s = time_folded(cum, self.layout(0))
        dims = tuple(range(-len(ln.normalized_shape), 0))
        mu = s.mean(dims, keepdim=True)
        c = s - mu
        var = (c * c).mean(dims, keepdim=True)
        tr = tt[(...,) + (slice(0, 1),) * len(dims)]  # t per row
        g = c * (tr * torch.rsqrt(var + ln.eps * tr * tr))
        if ln.weight is not None:
            g = g * ln.weight
        if ln.bias is not None:
            g = g + tr * ln.bias
        g = time_major(g, n, self.out_layout)
        out = diff_time(g, None if st is None else st["g"])
        if self.carry or self.step_mode:
            self.state = {"t": t0 + n, "sums": {0: cum[-1].clone()}, "g": g[-1].clone()}
        return time_folded(out, self.out_layout)


def as_sum_norm(mod: TimeAveraged) -> SumNorm:
    """The same LayerNorm (module, layouts) as a :class:`SumNorm`."""
    new = SumNorm(mod.fn, mod.args, mod.kwargs, mod.kinds, name=mod.op_name)
    new.in_layouts, new.out_layout = mod.in_layouts, mod.out_layout
    return new


def sum_norm_extra(module: SumNorm, out_numel: int) -> dict[str, float]:
    """Its work per step after the first beyond the LayerNorm's own: the running sum and the
    difference (an add per input and per output element), ``r_t`` per row (2 multiplies and an
    add), ``t * beta`` per channel (at t = 1 the output is the LayerNorm of the input)."""
    ln = module.fn
    width = 1
    for d in ln.normalized_shape:
        width *= int(d)
    rows = out_numel // max(width, 1)
    return {"add": float(2 * out_numel + rows), "mul": float(2 * rows + (width if ln.bias is not None else 0))}


__all__ = ["SumNorm", "as_sum_norm", "sum_norm_extra"]

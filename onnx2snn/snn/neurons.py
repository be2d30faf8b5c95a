"""Spiking neurons and the time plumbing of the multi-step engine.

Tensors in the spiking core carry time folded into the batch: [T*B, ...]. Stateless
layers run once on that batch; a neuron views it as [T, B, ...] and loops over T with
element-wise work only. In step mode a neuron takes one timestep [B, ...] per call and
keeps its state until :meth:`reset`. With ``carry`` set (the engine sets it when it runs
the core in chunks of time), a multi-step call continues from the state the previous call
left, exactly as if the chunks had been one call: the same additions in the same order,
so a chunked run equals the one-shot run bit for bit.

Spikes have no gradient (threshold functions are flat almost everywhere): the spiking
forward passes run under ``torch.no_grad()`` whatever the grad mode, so they work on
inputs that require grad and never build an autograd graph. In analog mode a neuron is
its activation and differentiable like it.

Spikes carry the amplitude theta (weighted spikes), so every linear layer after a
neuron runs unchanged, and the mean output over T approximates the activation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..graph.layout import per_channel as _per_channel


BATCH_FIRST = (0, 1)


def time_major(x: torch.Tensor, T: int, layout: "tuple[int, int] | None" = BATCH_FIRST) -> torch.Tensor:
    """``x`` with time x batch on its batch axis as ``[T, B, ...]`` (``B``: everything else of
    that axis). ``layout = (axis, outer)``: the batch lies on ``axis``, inside ``outer`` blocks
    (``[N * T * B, D]`` is ``(0, N)``), time outermost within the batch (see
    :mod:`onnx2snn.graph.layout`). A view for batch-first tensors, else a copy."""
    axis, outer = layout or BATCH_FIRST
    if axis:
        x = x.movedim(axis, 0)
    if outer == 1:
        return x.reshape((T, x.shape[0] // T) + tuple(x.shape[1:]))
    x = x.reshape((outer, T, x.shape[0] // (outer * T)) + tuple(x.shape[1:])).transpose(0, 1)
    return x.reshape((T, -1) + tuple(x.shape[3:]))


def time_folded(xs: torch.Tensor, layout: "tuple[int, int] | None" = BATCH_FIRST) -> torch.Tensor:
    """The inverse of :func:`time_major`: ``[T, B, ...]`` back to the tensor's own layout."""
    axis, outer = layout or BATCH_FIRST
    T = xs.shape[0]
    if outer == 1:
        x = xs.reshape((T * xs.shape[1],) + tuple(xs.shape[2:]))
    else:
        x = xs.reshape((T, outer, xs.shape[1] // outer) + tuple(xs.shape[2:])).transpose(0, 1)
        x = x.reshape((-1,) + tuple(x.shape[3:]))
    return x.movedim(0, axis) if axis else x


def moved_axis(axis: "int | None", time_axis: int) -> "int | None":
    """Where axis ``axis`` of a tensor lies once its ``time_axis`` is moved to the front."""
    if axis is None or not time_axis:
        return axis
    return axis + 1 if axis < time_axis else axis


def cumsum_time(xs: torch.Tensor, out: torch.Tensor | None = None, init: torch.Tensor | None = None) -> torch.Tensor:
    """Running sum over dim 0, one add per step in time order (``out[t] = xs[t] + out[t-1]``,
    ``out[-1] = init`` when given: the sum carried from an earlier chunk of time): exactly
    what step mode accumulates, and several times faster on the CPU than
    ``torch.cumsum(0)``, which strides through memory and accumulates in double.
    ``out`` may be ``xs`` (in place). Not differentiable (call it under no_grad)."""
    if out is None:
        out = torch.empty_like(xs)
        if init is None:
            out[0] = xs[0]
    if init is not None:
        torch.add(xs[0], init, out=out[0])
    for t in range(1, xs.shape[0]):
        torch.add(xs[t], out[t - 1], out=out[t])
    return out


def diff_time(cum: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
    """Increments over dim 0 (the inverse of :func:`cumsum_time`), as a new tensor;
    ``init`` is the value before ``cum[0]`` (carried from an earlier chunk)."""
    out = torch.empty_like(cum)
    if init is None:
        out[0] = cum[0]
    else:
        torch.sub(cum[0], init, out=out[0])
    torch.sub(cum[1:], cum[:-1], out=out[1:])
    return out


def if_spikes(u: torch.Tensor, th: torch.Tensor, acc: torch.Tensor, n: torch.Tensor, levels: int,
              signed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spikes of IF neurons (plain or signed) over T steps, one fusable expression per step: input
    ``u = x / theta`` as [T, B, C, S], ``th`` as [C, 1], the state ``acc`` (potential in
    units of theta, before the floor) and ``n`` (net spikes so far) as [B, C, S]. Returns
    the spikes and the new state. Same arithmetic, in the same order, as
    :meth:`IFNeuron._counts_multi`; :func:`torch.compile` fuses it into one pass over
    memory (see :meth:`SpikingNetwork.compile`)."""
    outs = []
    for t in range(u.shape[0]):
        acc = u[t] + acc
        f = torch.floor(acc)
        if signed:
            m = torch.clamp(torch.clamp(f, min=0), min=n - levels, max=n + levels)
        else:
            m = torch.clamp(f, min=n, max=n + levels)
        outs.append((m - n) * th)
        n = m
    return torch.stack(outs), acc, n


_COMPILED: dict[str, object] = {}


def compiled_if_spikes():
    """:func:`if_spikes` compiled once per process (shapes dynamic; one compile per T)."""
    if "if" not in _COMPILED:
        _COMPILED["if"] = torch.compile(if_spikes, dynamic=True)
    return _COMPILED["if"]


class SpikingModule(nn.Module):
    """Base: holds T (multi-step: the steps of this call) or the step-mode flag, and the
    explicit state. ``carry``: multi-step calls continue from (and leave) the state, for
    running time in chunks; :meth:`reset` starts again. ``time_axis``: the axis of its input
    that holds the batch, and so time x batch in multi-step calls (0 but in layouts such as
    ``[N, B, D]``; ``time_layout = (axis, outer)`` also says how many blocks lie outside the
    batch on it; set by the conversion from :mod:`onnx2snn.graph.layout`)."""

    def __init__(self) -> None:
        super().__init__()
        self.T = 1
        self.step_mode = False
        self.carry = False
        self.analog = False  # ideal rate function instead of spikes (checks the rewrite)
        self.time_layout = BATCH_FIRST

    @property
    def time_axis(self) -> int:
        return self.time_layout[0]

    def reset(self) -> None:
        """Clear the state kept between steps (step mode); subclasses extend it."""

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return time_major(x, self.T, self.time_layout)

    def _merge(self, xs: torch.Tensor) -> torch.Tensor:
        return time_folded(xs, self.time_layout)


class IFNeuron(SpikingModule):
    """Integrate-and-fire, reset by subtraction, per-channel threshold theta.

    ``v0 = v_init * theta``; each step ``v += x + bias``; a spike of amplitude theta when
    ``v >= theta`` (then ``v -= theta``). ``levels=K`` lets it fire up to K spikes in one
    step (multi-level firing: output ``k * theta``, ``v -= k * theta``).

    With ``alpha`` set it is the signed neuron with imbalanced threshold (IBT) for
    LeakyReLU(alpha): also a spike of -theta when ``v <= -theta / alpha`` (then
    ``v += theta / alpha``), so negative input fires at alpha times the rate.
    ``signed=True`` (ReLU) adds negative spikes that take back over-firing: -theta when
    ``v < 0`` and the neuron has net spikes to give back. With ``alpha`` too (signed IBT)
    it works both ways: a positive spike is taken back when ``v < 0``, a negative one
    (+theta, ``v -= theta / alpha``) when ``v > 0``. With ``levels=K`` an IBT neuron fires up
    to K positive spikes in a step and gives back up to K, as the IF neuron; the negative
    side (alpha times the rate) fires one per step.

    ``two_sided=True`` (with ``signed``): the neuron that re-encodes a time-averaged operator's
    analog output, which may be negative: the count follows ``floor(u_t)`` down as well as up
    (spikes of -theta below zero, no floor at zero), so its mean is ``x`` rounded to steps
    of ``theta / t`` and clipped to ``[-levels theta, levels theta]``; its rate function is the
    identity.

    ``bias`` (per channel, zero by default) is added to the input every step; with a
    per-channel ``v_init`` it is what post-conversion calibration adjusts.

    IF neurons run multi-step in closed form up to one clamp per step: with
    ``u_t = v0 + sum_{k<=t}(x_k + bias)`` the net spike count so far is
    ``N_t = clamp(F_t, N_{t-1}, N_{t-1} + K)`` with ``F_t = floor(u_t / theta)``, and for the
    signed neuron ``N_t = clamp(max(F_t, 0), N_{t-1} - K, N_{t-1} + K)`` (it gives spikes
    back while the potential is negative and the net count positive). The division and
    floor are vectorised over T; the loops do one add and a clamp per step.
    """

    def __init__(self, theta: torch.Tensor, alpha: "float | torch.Tensor | None" = None,
                 v_init: "float | torch.Tensor" = 0.5, signed: bool = False, activation: nn.Module | None = None,
                 levels: int = 1, two_sided: bool = False):
        super().__init__()
        self.register_buffer("theta", theta.detach().clone().float())
        self.register_buffer("bias", torch.zeros_like(self.theta))
        self.register_buffer("v_init", torch.as_tensor(v_init, dtype=torch.float32).detach().clone())
        self.alpha = None
        if alpha is not None:
            self.register_buffer("alpha_t", torch.as_tensor(alpha, dtype=torch.float32).reshape(-1))
            self.alpha = True
        self.two_sided = bool(two_sided)
        self.signed = bool(signed) or self.two_sided
        self.levels = int(levels)
        if self.levels < 1:
            raise ValueError(f"levels (spikes per step) must be >= 1, got {levels}")
        self.use_bias = False
        # an output of k spikes in a step sent as binary-weighted spikes (thresholds theta, 2 theta,
        # 4 theta, ...: one event per set bit of k) rather than k unit events: the same values,
        # counted differently by verify (multi-threshold neurons, ECMT / DCGS)
        self.binary_events = False
        self.compiled = False  # fused multi-step kernel via torch.compile (SpikingNetwork.compile)
        # the axis of its input along which theta (and bias, v_init, alpha) vary: the feature axis
        # (see onnx2snn.graph.layout.channel_axes); None: one value for the layer
        self.channel_axis: "int | None" = 1
        self.activation = activation if activation is not None else (
            nn.ReLU() if alpha is None else nn.LeakyReLU(float(alpha)) if isinstance(alpha, float) else nn.PReLU())
        self.state: dict[str, torch.Tensor] | None = None

    def extra_repr(self) -> str:
        kind = "IBT" if self.alpha else "two-sided IF" if self.two_sided else "signed IF" if self.signed else "IF"
        lv = f", levels={self.levels}" if self.levels > 1 else ""
        lv += ", binary-weighted spikes" if self.binary_events else ""
        lv += f", channel axis {self.channel_axis}" if self.channel_axis != 1 and self.theta.numel() > 1 else ""
        lv += f", batch layout {self.time_layout}" if tuple(self.time_layout) != BATCH_FIRST else ""
        v0 = f"{float(self.v_init):g}" if self.v_init.numel() == 1 else "per-channel"
        return f"{kind}, channels={self.theta.numel()}, v_init={v0}{lv}"

    def set_bias(self, bias: torch.Tensor) -> None:
        """Set the per-channel input bias (a [C] tensor or a scalar)."""
        self.bias = torch.as_tensor(bias, dtype=torch.float32).to(self.theta.device).expand_as(self.theta).clone()
        self.use_bias = bool(self.bias.abs().sum() > 0)

    def set_v_init(self, v_init: "float | torch.Tensor") -> None:
        """Set the initial potential as a fraction of theta (a scalar or per channel)."""
        self.v_init = torch.as_tensor(v_init, dtype=torch.float32).detach().clone().to(self.theta.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "v_init"
        if key in state_dict:  # may be a scalar or per channel: take its shape
            self.v_init = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.use_bias = bool(self.bias.abs().sum() > 0)

    def reset(self) -> None:
        super().reset()
        self.state = None

    @property
    def plain(self) -> bool:
        """IF or signed IF: the closed-form count path (IBT keeps the potential loop)."""
        return not self.alpha

    # -- IF / signed IF: counts -----------------------------------------------------------
    # state: "u" the potential in units of theta before the floor (v_init + sum x / theta),
    # "n" the net spike count so far; step mode and chunked multi-step share it
    # Two loops with the same arithmetic per element (so the same bits): for small steps
    # (few elements per timestep) whole-tensor passes over [T, ...], for large steps one pass
    # per timestep doing all the work on that step's slice while it is in cache.
    FUSED_STEP_BYTES = 1 << 18

    def _counts_multi(self, xs: torch.Tensor, th: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
        st = self.state if self.carry else None
        if xs[0].numel() * xs.element_size() >= self.FUSED_STEP_BYTES:
            return self._counts_by_step(xs, th, v0, st)
        u = xs / th  # potential in units of theta: u_t = v_init + sum_{k<=t} x_k / theta
        if st is None:
            u[0] += v0
            u = cumsum_time(u, out=u)
        else:
            u = cumsum_time(u, out=u, init=st["u"])
        if self.carry:  # the state tensors live for the whole run: updated in place, no new allocations
            if st is None:
                st = self.state = {"u": u[-1].clone(), "n": torch.zeros_like(u[0])}
            else:
                st["u"].copy_(u[-1])
        u.floor_()  # F_t
        if self.signed and not self.two_sided:
            u.clamp_(min=0)
        # spikes of step t: d_t = clamp(F_t - n_{t-1}, -K or 0, K), n_t = n_{t-1} + d_t (integers
        # in float: exact, the same as clamping F_t to [n - K, n + K] and differencing)
        n = st["n"] if st is not None else torch.zeros_like(u[0])
        k = self.levels
        for t in range(u.shape[0]):
            n.add_(u[t].sub_(n).clamp_(-k if self.signed else 0, k))
        return u.mul_(th)

    def _counts_by_step(self, xs: torch.Tensor, th: torch.Tensor, v0: torch.Tensor, st) -> torch.Tensor:
        out = torch.empty_like(xs)
        k, lo = self.levels, (-self.levels if self.signed else 0)
        if st is None:
            acc = torch.div(xs[0], th).add_(v0)
            n = torch.zeros_like(acc)
        else:  # carried state, updated in place
            acc, n = st["u"], st["n"]
            acc.addcdiv_(xs[0], th)
        for t in range(xs.shape[0]):
            if t:
                acc.addcdiv_(xs[t], th)  # acc + x_t / theta, as the cumulative sum does it
            d = torch.floor(acc, out=out[t])
            if self.signed and not self.two_sided:
                d.clamp_(min=0)
            n.add_(d.sub_(n).clamp_(lo, k))
            d.mul_(th)
        if self.carry:
            self.state = {"u": acc, "n": n}
        return out

    def _compiled_multi(self, xs: torch.Tensor, th: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
        T, B, C = xs.shape[0], xs.shape[1], xs.shape[2] if xs.dim() > 2 else 1
        u = (xs / th).reshape(T, B, C, -1)
        st = self.state if self.carry else None
        if st is None:
            acc = (torch.broadcast_to(v0.reshape(-1, 1), (C, 1)) + torch.zeros_like(u[0]))
            n = torch.zeros_like(u[0])
        else:
            acc, n = st["u"].reshape(u[0].shape), st["n"].reshape(u[0].shape)
        thc = torch.broadcast_to(th.reshape(-1, 1), (C, 1))
        s, acc, n = compiled_if_spikes()(u, thc, acc, n, self.levels, self.signed)
        if self.carry:
            self.state = {"u": acc.reshape(xs.shape[1:]), "n": n.reshape(xs.shape[1:])}
        return s.reshape(xs.shape)

    def _step_plain(self, x: torch.Tensor, th: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
        st = self.state
        u = x / th
        if st is None:
            u += v0
            st = self.state = {"u": u, "n": torch.zeros_like(x)}
        else:
            st["u"] = u = u + st["u"]
        f, k, prev = torch.floor(u), self.levels, st["n"]
        n = torch.clamp(f if self.two_sided else f.clamp_(min=0), min=prev - k, max=prev + k) if self.signed else \
            torch.clamp(f, min=prev, max=prev + k)
        s = (n - st["n"]).mul_(th)
        st["n"] = n
        return s

    # -- IBT: membrane potential ---------------------------------------------------------
    def _step_potential(self, x: torch.Tensor, th: torch.Tensor, v0: torch.Tensor, axis: "int | None") -> torch.Tensor:
        st = self.state
        if st is None:
            st = self.state = {"v": torch.zeros_like(x) + v0 * th, "n": torch.zeros_like(x)}
        v = st["v"] + x
        lo = th / _per_channel(self.alpha_t, x, axis).to(x)
        k = self.levels
        f = torch.floor(v / th).clamp_(max=k)  # positive spikes this step if it fires up (up to k)
        below = -(v <= -lo).to(x)  # one negative spike when v is at or below -theta / alpha
        if not self.signed:
            d = torch.where(v >= th, f, below)
            st["v"] = v - torch.where(d > 0, d * th, d * lo)
            return d * th
        # signed IBT: a spike of the other sign takes back one already sent (n = net count):
        # with positive net spikes it gives back up to min(n, k) while v < 0 (f < 0), with
        # negative ones a positive spike (worth lo) takes one back while v > 0
        n = st["n"]
        d_pos = torch.maximum(f, -n.clamp(max=k))
        d_zero = torch.where(v >= th, f, below)
        d_neg = torch.where(v > 0, torch.ones_like(v), below)
        d = torch.where(n > 0, d_pos, torch.where(n == 0, d_zero, d_neg))
        st["v"] = v - torch.where((n > 0) | ((n == 0) & (d > 0)), d * th, d * lo)
        st["n"] = n + d
        return d * th

    def rate(self, x: torch.Tensor) -> torch.Tensor:
        """The ideal rate function: the original activation."""
        return self.activation(x)

    def clip_range(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lowest, highest) mean output the neuron can give, broadcast like ``like`` (a
        batch): ``levels * theta`` above; below, 0 (IF), ``-theta`` (IBT: one negative spike
        per step) or ``-levels * theta`` (two-sided)."""
        th = _per_channel(self.theta, like, self.channel_axis).to(like)
        hi = th * self.levels
        lo = -hi if self.two_sided else -th if self.alpha else torch.zeros_like(th)
        return lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.analog:
            return self.rate(x)
        with torch.no_grad():  # spikes have no gradient: never build a graph
            return self._spikes(x)

    def _spikes(self, x: torch.Tensor) -> torch.Tensor:
        multi = not self.step_mode
        xs = self._split(x) if multi else x
        ref = xs[0] if multi else xs
        axis = moved_axis(self.channel_axis, self.time_axis) if multi else self.channel_axis
        th = _per_channel(self.theta, ref, axis).to(x)
        v0 = _per_channel(self.v_init, ref, axis).to(x)  # as a fraction of theta
        if self.use_bias:
            xs = xs + _per_channel(self.bias, ref, axis).to(x)
        if not multi:
            return self._step_plain(xs, th, v0) if self.plain else self._step_potential(xs, th, v0, axis)
        if self.plain and self.compiled and not self.two_sided and tuple(self.time_layout) == BATCH_FIRST and \
                (self.channel_axis == 1 or self.theta.numel() == 1):
            s = self._compiled_multi(xs, th, v0)
        elif self.plain:
            s = self._counts_multi(xs, th, v0)
        else:
            s = torch.empty_like(xs)
            if not self.carry:
                self.state = None
            for t in range(xs.shape[0]):
                s[t] = self._step_potential(xs[t], th, v0, axis)
            if not self.carry:
                self.state = None
        return self._merge(s)


class SpikingMaxPool(SpikingModule):
    """Max-pool exact in rate: it passes the increase of the window maximum of the
    accumulated input, ``pool(sum_{k<=t} x_k) - pool(sum_{k<t} x_k)``, which sums to
    ``T * pool(mean x)`` over T steps. State (step mode, or multi-step with ``carry``):
    the accumulated input and its pooled value."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool
        self.acc: torch.Tensor | None = None
        self.prev: torch.Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self.acc = self.prev = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.analog:
            return self.pool(x)
        with torch.no_grad():
            return self._spikes(x)

    def _spikes(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode:
            self.acc = x if self.acc is None else x + self.acc
            cur = self.pool(self.acc)
            out = cur if self.prev is None else cur - self.prev
            self.prev = cur
            return out
        carried = self.carry and self.acc is not None
        cum = cumsum_time(self._split(x), init=self.acc if carried else None)
        pooled = self._split(self.pool(self._merge(cum)))
        out = diff_time(pooled, init=self.prev if carried else None)
        if self.carry:  # copied into the same state tensors chunk after chunk
            if carried:
                self.acc.copy_(cum[-1])
                self.prev.copy_(pooled[-1])
            else:
                self.acc, self.prev = cum[-1].clone(), pooled[-1].clone()
        return self._merge(out)


class Repeat(nn.Module):
    """[B, ...] -> [T*B, ...]: a static (time-constant) value entering the spiking core, repeated
    on its batch axis (``layout``, see :func:`time_major`; None: a value with no batch, the same
    for every sample and step)."""

    def __init__(self) -> None:
        super().__init__()
        self.T = 1
        self.step_mode = False

    def forward(self, x: torch.Tensor, layout: "tuple[int, int] | None" = BATCH_FIRST) -> torch.Tensor:
        if self.step_mode or layout is None:
            return x
        xm = time_major(x, 1, layout)  # [1, B, ...]
        return time_folded(xm.expand((self.T,) + tuple(xm.shape[1:])), layout)

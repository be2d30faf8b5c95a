"""Spiking neurons and the time plumbing of the multi-step engine.

Tensors in the spiking core carry time folded into the batch: [T*B, ...]. Stateless
layers run once on that batch; a neuron views it as [T, B, ...] and loops over T with
element-wise work only. In step mode a neuron takes one timestep [B, ...] per call and
keeps its state until :meth:`reset`.

Spikes carry the amplitude theta (weighted spikes), so every linear layer after a
neuron runs unchanged, and the mean output over T approximates the activation.
"""

from __future__ import annotations

import torch
from torch import nn


def _per_channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a [C] tensor to broadcast over channel dim 1 of ``like``."""
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(())
    return t.reshape((1, -1) + (1,) * (like.dim() - 2))


def cumsum_time(xs: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Running sum over dim 0, one add per step in time order: exactly what step mode
    accumulates, and several times faster on the CPU than ``torch.cumsum(0)``, which
    strides through memory and accumulates in double."""
    if out is None:
        out = torch.empty_like(xs)
        out[0] = xs[0]
    for t in range(1, xs.shape[0]):
        torch.add(xs[t], out[t - 1], out=out[t])
    return out


def diff_time(cum: torch.Tensor) -> torch.Tensor:
    """Increments over dim 0 (the inverse of :func:`cumsum_time`), as a new tensor."""
    out = torch.empty_like(cum)
    out[0] = cum[0]
    torch.sub(cum[1:], cum[:-1], out=out[1:])
    return out


def if_spikes(u: torch.Tensor, th: torch.Tensor, v0: torch.Tensor, levels: int, signed: bool) -> torch.Tensor:
    """Spikes of IF neurons (plain or signed) over T steps, one fusable expression per step: input
    ``u = x / theta`` as [T, B, C, S], ``th`` and ``v0`` as [C, 1]. Same arithmetic, in the
    same order, as :meth:`IFNeuron._counts_multi`; :func:`torch.compile` fuses it into
    one pass over memory (see :meth:`SpikingNetwork.compile`)."""
    n = torch.zeros_like(u[0])
    acc = v0 + torch.zeros_like(u[0])
    outs = []
    for t in range(u.shape[0]):
        acc = acc + u[t]
        f = torch.floor(acc)
        if signed:
            m = torch.clamp(torch.clamp(f, min=0), min=n - levels, max=n + levels)
        else:
            m = torch.clamp(f, min=n, max=n + levels)
        outs.append((m - n) * th)
        n = m
    return torch.stack(outs)


_COMPILED: dict[str, object] = {}


def compiled_if_spikes():
    """:func:`if_spikes` compiled once per process (shapes dynamic; one compile per T)."""
    if "if" not in _COMPILED:
        _COMPILED["if"] = torch.compile(if_spikes, dynamic=True)
    return _COMPILED["if"]


class SpikingModule(nn.Module):
    """Base: holds T (multi-step) or the step-mode flag, and the explicit state."""

    def __init__(self) -> None:
        super().__init__()
        self.T = 1
        self.step_mode = False
        self.analog = False  # ideal rate function instead of spikes (checks the rewrite)

    def reset(self) -> None:
        """Clear the state kept between steps (step mode); subclasses extend it."""

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((self.T, x.shape[0] // self.T) + tuple(x.shape[1:]))


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
    (+theta, ``v -= theta / alpha``) when ``v > 0``.

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
                 levels: int = 1):
        super().__init__()
        self.register_buffer("theta", theta.detach().clone().float())
        self.register_buffer("bias", torch.zeros_like(self.theta))
        self.register_buffer("v_init", torch.as_tensor(v_init, dtype=torch.float32).detach().clone())
        self.alpha = None
        if alpha is not None:
            self.register_buffer("alpha_t", torch.as_tensor(alpha, dtype=torch.float32).reshape(-1))
            self.alpha = True
        self.signed = bool(signed)
        self.levels = int(levels)
        if self.levels < 1:
            raise ValueError(f"levels (spikes per step) must be >= 1, got {levels}")
        if self.levels > 1 and self.alpha:
            raise ValueError("multi-level firing (levels > 1) is for IF neurons (ReLU), not IBT ones")
        self.use_bias = False
        self.compiled = False  # fused multi-step kernel via torch.compile (SpikingNetwork.compile)
        self.activation = activation if activation is not None else (
            nn.ReLU() if alpha is None else nn.LeakyReLU(float(alpha)) if isinstance(alpha, float) else nn.PReLU())
        self.state: dict[str, torch.Tensor] | None = None

    def extra_repr(self) -> str:
        kind = "IBT" if self.alpha else "signed IF" if self.signed else "IF"
        lv = f", levels={self.levels}" if self.levels > 1 else ""
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
    def _counts_multi(self, xs: torch.Tensor, th: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
        u = xs / th  # potential in units of theta: u_t = v_init + sum_{k<=t} x_k / theta
        u[0] += v0
        u = cumsum_time(u, out=u).floor_()
        if self.signed:
            u.clamp_(min=0)
        prev = torch.zeros_like(u[0])
        k = self.levels
        for t in range(u.shape[0]):
            prev = torch.clamp(u[t], min=prev - k if self.signed else prev, max=prev + k, out=u[t])
        return diff_time(u).mul_(th)

    def _step_plain(self, x: torch.Tensor, th: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
        st = self.state
        u = x / th
        if st is None:
            u += v0
            st = self.state = {"u": u, "n": torch.zeros_like(x)}
        else:
            st["u"] = u = u + st["u"]
        f, k, prev = torch.floor(u), self.levels, st["n"]
        n = torch.clamp(f.clamp_(min=0), min=prev - k, max=prev + k) if self.signed else \
            torch.clamp(f, min=prev, max=prev + k)
        s = (n - st["n"]).mul_(th)
        st["n"] = n
        return s

    # -- IBT: membrane potential ---------------------------------------------------------
    def _step_potential(self, x: torch.Tensor, th: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
        st = self.state
        if st is None:
            st = self.state = {"v": torch.zeros_like(x) + v0 * th, "n": torch.zeros_like(x)}
        v = st["v"] + x
        lo = th / _per_channel(self.alpha_t, x).to(x)
        if not self.signed:
            pos = (v >= th).to(x)
            neg = (v <= -lo).to(x)
            st["v"] = v - pos * th + neg * lo
            return pos * th - neg * th
        # signed IBT: a spike of the other sign takes back one already sent (n = net count)
        n = st["n"]
        up = ((v >= th) & (n >= 0)) | ((v > 0) & (n < 0))
        down = ((v < 0) & (n > 0)) | ((v <= -lo) & (n <= 0))
        upf, downf = up.to(x), down.to(x)
        st["v"] = v - upf * torch.where(n >= 0, th, lo) + downf * torch.where(n > 0, th, lo)
        st["n"] = n + upf - downf
        return (upf - downf) * th

    def rate(self, x: torch.Tensor) -> torch.Tensor:
        """The ideal rate function: the original activation."""
        return self.activation(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.analog:
            return self.rate(x)
        multi = not self.step_mode
        xs = self._split(x) if multi else x
        ref = xs[0] if multi else xs
        th = _per_channel(self.theta, ref).to(x)
        v0 = _per_channel(self.v_init, ref).to(x)  # as a fraction of theta
        if self.use_bias:
            xs = xs + _per_channel(self.bias, ref).to(x)
        if not multi:
            s = self._step_plain(xs, th, v0) if self.plain else self._step_potential(xs, th, v0)
        elif self.plain and self.compiled:
            T, B, C = xs.shape[0], xs.shape[1], xs.shape[2] if xs.dim() > 2 else 1
            u = (xs / th).reshape(T, B, C, -1)
            thc, v0c = (torch.broadcast_to(a.reshape(-1, 1), (C, 1)) for a in (th, v0))
            s = compiled_if_spikes()(u, thc, v0c, self.levels, self.signed).reshape(xs.shape)
        elif self.plain:
            s = self._counts_multi(xs, th, v0)
        else:
            s = torch.empty_like(xs)
            self.state = None
            for t in range(xs.shape[0]):
                s[t] = self._step_potential(xs[t], th, v0)
            self.state = None
        return s.reshape(x.shape)


class SpikingMaxPool(SpikingModule):
    """Max-pool exact in rate: it passes the increase of the window maximum of the
    accumulated input, ``pool(sum_{k<=t} x_k) - pool(sum_{k<t} x_k)``, which sums to
    ``T * pool(mean x)`` over T steps."""

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
        if self.step_mode:
            self.acc = x if self.acc is None else self.acc + x
            cur = self.pool(self.acc)
            out = cur if self.prev is None else cur - self.prev
            self.prev = cur
            return out
        pooled = self.pool(cumsum_time(self._split(x)).reshape(x.shape))
        return diff_time(self._split(pooled)).reshape(pooled.shape)


class Repeat(nn.Module):
    """[B, ...] -> [T*B, ...]: a static (time-constant) value entering the spiking core."""

    def __init__(self) -> None:
        super().__init__()
        self.T = 1
        self.step_mode = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode:
            return x
        return x.unsqueeze(0).expand((self.T,) + tuple(x.shape)).reshape((self.T * x.shape[0],) + tuple(x.shape[1:]))

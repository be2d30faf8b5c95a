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


class SpikingModule(nn.Module):
    """Base: holds T (multi-step) or the step-mode flag, and the explicit state."""

    def __init__(self) -> None:
        super().__init__()
        self.T = 1
        self.step_mode = False
        self.analog = False  # ideal rate function instead of spikes (checks the rewrite)
        self.spike_count = torch.zeros(())  # spikes (events) seen since reset, for SynOps
        self.count_spikes = False

    def reset(self) -> None:
        self.spike_count = torch.zeros(())

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((self.T, x.shape[0] // self.T) + tuple(x.shape[1:]))


class IFNeuron(SpikingModule):
    """Integrate-and-fire, reset by subtraction, per-channel threshold theta.

    ``v0 = v_init * theta``; each step ``v += x``; a spike of amplitude theta when
    ``v >= theta`` (then ``v -= theta``). With ``alpha`` set it is the signed neuron
    with imbalanced threshold (IBT) for LeakyReLU(alpha): also a spike of -theta when
    ``v <= -theta / alpha`` (then ``v += theta / alpha``), so negative input fires at
    alpha times the rate. ``signed=True`` (ReLU) adds negative spikes that take back
    over-firing: -theta when ``v < 0`` and the neuron has net spikes to give back.
    """

    def __init__(self, theta: torch.Tensor, alpha: "float | torch.Tensor | None" = None,
                 v_init: float = 0.5, signed: bool = False, activation: nn.Module | None = None):
        super().__init__()
        self.register_buffer("theta", theta.detach().clone().float())
        self.alpha = None
        if alpha is not None:
            self.register_buffer("alpha_t", torch.as_tensor(alpha, dtype=torch.float32).reshape(-1))
            self.alpha = True
        self.v_init = float(v_init)
        self.signed = bool(signed)
        self.activation = activation if activation is not None else (
            nn.ReLU() if alpha is None else nn.LeakyReLU(float(alpha)) if isinstance(alpha, float) else nn.PReLU())
        self.v: torch.Tensor | None = None
        self.net: torch.Tensor | None = None

    def extra_repr(self) -> str:
        kind = "IBT" if self.alpha else "signed IF" if self.signed else "IF"
        return f"{kind}, channels={self.theta.numel()}, v_init={self.v_init}"

    def reset(self) -> None:
        super().reset()
        self.v = None
        self.net = None

    def _init_state(self, x1: torch.Tensor) -> None:
        th = _per_channel(self.theta, x1).to(x1)
        self.v = torch.zeros_like(x1) + self.v_init * th
        self.net = torch.zeros_like(x1) if self.signed else None

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        th = _per_channel(self.theta, x).to(x)
        v = self.v + x
        pos = (v >= th).to(x)
        s = pos * th
        if self.alpha:
            lo = th / _per_channel(self.alpha_t, x).to(x)
            neg = (v <= -lo).to(x)
            s = s - neg * th
            v = v - pos * th + neg * lo
        elif self.signed:
            neg = ((v < 0) & (self.net > 0)).to(x)
            s = s - neg * th
            v = v - s
            self.net = self.net + pos - neg
        else:
            v = v - s
        self.v = v
        if self.count_spikes:
            self.spike_count = self.spike_count.to(x) + (s != 0).sum()
        return s

    def rate(self, x: torch.Tensor) -> torch.Tensor:
        """The ideal rate function: the original activation."""
        return self.activation(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.analog:
            return self.rate(x)
        if self.step_mode:
            if self.v is None:
                self._init_state(x)
            return self._step(x)
        xs = self._split(x)
        self._init_state(xs[0])
        out = torch.empty_like(xs)
        for t in range(xs.shape[0]):
            out[t] = self._step(xs[t])
        self.v = self.net = None
        return out.reshape(x.shape)


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
        xs = self._split(x)
        pooled = self.pool(xs.cumsum(0).reshape(x.shape))
        p = self._split(pooled)
        out = torch.cat([p[:1], p[1:] - p[:-1]], 0)
        return out.reshape(pooled.shape)


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

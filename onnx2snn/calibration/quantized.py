"""A single-step model of the T-step IF neuron, for fine-tuning an ANN before conversion.

For a constant input ``x`` the IF neuron (reset by subtraction, initial potential
``v0 = v_init * theta``, one spike per step) fires ``n = clamp(floor(T x / theta + v_init), 0, T)``
spikes in T steps, so its mean output is ``theta / T * n``: ``x`` quantized to T levels of
``theta / T`` and clipped to ``[0, theta]`` (``v_init = 1/2`` rounds half up). The IBT neuron
of LeakyReLU(alpha) does the same on the negative side with the step ``theta / alpha``,
except where it saturates (see :func:`if_counts`). :class:`QuantizedNeuron` computes this
in one step, so an ANN trained with it in place of its activations computes what the
T-step SNN will compute (Jiang and Zhang, "noise-based single-step to multi-step
conversion"; QCFS, Bu et al. 2022).

In a deep SNN the input of a neuron is not constant but a spike train, so the residue
left in its membrane after T steps spreads around the value the constant-input model
assumes; during training random noise in units of one spike is added to the count before
rounding to stand in for that spread. The rounding has a straight-through gradient and
theta is trainable (per channel or per layer).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import checks, settings
from ..graph.averaged import Reencode
from ..graph.layout import per_channel

NOISE_KINDS = (None, "gaussian", "uniform")
DEFAULT_LEVELS = settings.LEVELS  # spikes per step: the second one takes the rare values above theta


def _floor_ste(z: torch.Tensor) -> torch.Tensor:
    """floor(z) forward, identity backward (straight-through estimator)."""
    return z + (torch.floor(z) - z).detach()


def cap_neuron(act: nn.Module, theta: torch.Tensor, levels: int) -> tuple[torch.Tensor, int]:
    """Theta and spikes per step for the neuron of ``act``. A capped activation (ReLU6 and
    the other Hardtanh) gets theta clipped to its cap and never so many spikes per step that
    ``levels * theta`` passes the cap (at least one); any other keeps both."""
    if not isinstance(act, nn.Hardtanh):
        return theta, levels
    cap = float(act.max_val)
    theta = theta.clamp(max=cap)
    return theta, max(1, min(int(levels), int(cap // float(theta.max()))))


def search_levels(act: nn.Module, levels: int) -> int:
    """Spikes per step the threshold search (``percentile="mse"``) assumes for the neuron of
    ``act``: the ``levels`` it may fire (IF and IBT neurons alike), so that theta is chosen for
    the neuron that will run (searching for one spike costs accuracy: docs/examples/distill/);
    one for capped ones (ReLU6 / Hardtanh: theta is clipped to
    the cap, see :func:`cap_neuron`); a re-encoding neuron its own ``levels``."""
    if isinstance(act, Reencode):
        return int(act.levels)  # a re-encoding neuron fires its own levels
    return 1 if isinstance(act, nn.Hardtanh) else int(levels)


def finetuned_levels(twin: nn.Module) -> int:
    """The spikes per step a twin was fine-tuned with (:func:`onnx2snn.finetune`), else the default."""
    return (getattr(twin, "finetune_info", None) or {}).get("levels", DEFAULT_LEVELS)


def if_counts(x: torch.Tensor, theta: torch.Tensor, timesteps: int, v_init: float = 0.5,
              alpha: "float | torch.Tensor | None" = None, noise: torch.Tensor | None = None,
              levels: int = 1) -> torch.Tensor:
    """Signed spike counts of T steps of the IF (or IBT) neuron for constant input ``x``.

    ``theta`` broadcasts against ``x``. Positive side: ``clamp(floor(T x / theta + v_init), 0, levels T)``
    (``levels``: spikes per step, multi-level firing, IBT neurons too; their negative side fires one).
    Negative side (IBT, threshold ``lam = theta / alpha``): the deficit below zero after t
    steps is ``d_t = t |x| - v_init theta``, so ``floor(d_T / lam)`` negative spikes, capped by
    one per step from the first step that fires, ``t0 = ceil((lam + v_init theta) / |x|)``.
    ``noise`` (in spikes) is added to the count before rounding; floor is straight-through.
    """
    T = float(timesteps)
    z = x * T / theta + v_init
    if noise is not None:
        z = z + noise
    pos = torch.clamp(_floor_ste(z), 0.0, T * levels)
    if alpha is None:
        return pos
    lam = theta / alpha
    neg_x = (-x).clamp_min(0)
    d = neg_x * T - v_init * theta
    zn = d / lam
    if noise is not None:
        zn = zn - noise
    fn = _floor_ste(zn)
    with torch.no_grad():  # how many steps can fire at all (saturation for |x| > lam)
        t0 = torch.ceil((lam + v_init * theta) / neg_x.clamp_min(1e-30))
        cap = (T - t0 + 1).clamp(0, T)
    neg = torch.minimum(fn, cap).clamp_min(0)
    return torch.where(x >= 0, pos, -neg)


class QuantizedNeuron(nn.Module):
    """Single-step stand-in for an activation that becomes a T-step IF / IBT neuron.

    Output ``theta / T * if_counts(x)``, with ``theta`` an ``nn.Parameter`` ([C] per channel or
    a scalar per layer). While ``noise_on`` is true (training), noise of the chosen kind with
    standard deviation ``noise_scale`` spikes is added to the count before rounding.
    ``activation`` (the original module) is kept to put back after fine-tuning.
    """

    def __init__(self, theta: torch.Tensor, timesteps: int, activation: nn.Module, alpha: float | None = None,
                 v_init: float = 0.5, noise: str | None = "gaussian", noise_scale: float = 0.25,
                 per_channel: bool = True, generator: torch.Generator | None = None, levels: int = 1,
                 axis: "int | None" = 1):
        super().__init__()
        self.axis = axis  # the input's channel axis, along which theta varies
        check_noise(noise, noise_scale)
        theta = theta.detach().float().reshape(-1)
        init = theta if per_channel else theta.max().reshape(())
        self.theta = nn.Parameter(init.clone())
        self.timesteps = int(timesteps)
        self.activation = activation
        self.alpha = alpha
        self.v_init = float(v_init)
        self.noise = noise
        self.noise_scale = float(noise_scale)
        self.noise_on = False
        self.generator = generator
        self.channels = theta.numel()
        self.levels = int(levels)
        self.track_spikes = False  # keep the last call's spike count (with its gradient) for a rate penalty
        self.spikes: tuple[torch.Tensor, int] | None = None

    def extra_repr(self) -> str:
        kind = "IBT" if self.alpha is not None else "IF"
        return (f"{kind}, T={self.timesteps}, levels={self.levels}, channels={self.theta.numel()}, "
                f"noise={self.noise}({self.noise_scale:g})")

    def _noise(self, x: torch.Tensor) -> torch.Tensor | None:
        if not (self.noise_on and self.noise and self.noise_scale > 0):
            return None
        if self.noise == "gaussian":
            e = torch.randn(x.shape, generator=self.generator, device="cpu")
        else:  # uniform with the same standard deviation: U(-sqrt(3) s, sqrt(3) s)
            e = (torch.rand(x.shape, generator=self.generator, device="cpu") * 2 - 1) * math.sqrt(3.0)
        return e.to(x) * self.noise_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        th = per_channel(self.theta.clamp_min(1e-6), x, getattr(self, "axis", 1))
        n = if_counts(x, th, self.timesteps, self.v_init, self.alpha, self._noise(x), self.levels)
        if self.track_spikes:  # spikes fired in T steps over all elements, and the number of neuron-steps
            self.spikes = (n.abs().sum(), n.numel() * self.timesteps)
        return n * th / self.timesteps

    def thresholds(self) -> torch.Tensor:
        """The learned theta as a [C] tensor (what IFNeuron takes)."""
        return self.theta.detach().clamp_min(1e-6).float().expand(self.channels).clone()


def check_noise(noise, noise_scale) -> None:
    checks.choice("noise", noise, NOISE_KINDS)
    checks.real("noise_scale", noise_scale, 0.0)


__all__ = ["DEFAULT_LEVELS", "QuantizedNeuron", "if_counts", "cap_neuron", "finetuned_levels", "search_levels",
           "NOISE_KINDS", "check_noise"]

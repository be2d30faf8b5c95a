"""Streaming activation statistics with bounded memory.

An :class:`ActivationObserver` sits on the input of one activation of the twin and keeps,
per channel and for the whole layer, the exact max and a histogram of the positive part
of its input (what the neuron will have to represent). The histogram range grows by
powers of two as larger values arrive, merging neighbouring bins, so memory is
``channels x bins`` whatever the number of samples, and percentiles are exact to one
bin width (range / bins).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.fx as fx
from tqdm.auto import tqdm


class StreamingHistogram:
    """Histograms of non-negative values for ``C`` independent rows, growing ranges."""

    def __init__(self, channels: int, bins: int = 2048):
        self.bins = bins
        self.counts = torch.zeros(channels, bins, dtype=torch.float64)
        self.upper = torch.zeros(channels, dtype=torch.float64)  # 0 = not started
        self.max = torch.zeros(channels, dtype=torch.float64)
        self.total = torch.zeros(channels, dtype=torch.float64)

    def _grow(self, needed: torch.Tensor) -> None:
        fresh = self.upper == 0
        if fresh.any():
            start = needed[fresh].clamp_min(1e-12)
            self.upper[fresh] = torch.pow(2.0, torch.ceil(torch.log2(start)))
        for c in torch.nonzero(needed > self.upper).flatten().tolist():
            factor = 2 ** math.ceil(math.log2(float(needed[c] / self.upper[c])))
            row = self.counts[c]
            if factor >= self.bins:
                merged = torch.zeros_like(row)
                merged[0] = row.sum()
            else:
                merged = torch.zeros_like(row)
                merged[: self.bins // factor] = row.view(self.bins // factor, factor).sum(1)
            self.counts[c] = merged
            self.upper[c] *= factor

    def update(self, values: torch.Tensor) -> None:
        """``values``: [C, M] non-negative."""
        v = values.detach().to(torch.float64)
        cmax = v.amax(1)
        self.max = torch.maximum(self.max, cmax)
        self._grow(torch.maximum(cmax, self.upper.clamp_min(0)))
        idx = (v / self.upper[:, None] * self.bins).floor().clamp_(0, self.bins - 1).long()
        idx += torch.arange(v.shape[0]).unsqueeze(1) * self.bins
        self.counts += torch.bincount(idx.flatten(), minlength=self.counts.numel()).view_as(self.counts).double()
        self.total += v.shape[1]

    def percentile(self, q: float) -> torch.Tensor:
        """Per-row ``q``-th percentile (0-100), linear inside the bin; never above max."""
        cdf = self.counts.cumsum(1)
        target = (q / 100.0) * self.total
        b = torch.searchsorted(cdf, target.unsqueeze(1)).squeeze(1).clamp(max=self.bins - 1)
        below = torch.where(b > 0, cdf.gather(1, (b - 1).clamp_min(0).unsqueeze(1)).squeeze(1),
                            torch.zeros_like(target))
        inside = self.counts.gather(1, b.unsqueeze(1)).squeeze(1).clamp_min(1e-12)
        frac = ((target - below) / inside).clamp(0, 1)
        width = self.upper / self.bins
        return torch.minimum((b.double() + frac) * width, self.max)


    def mse_threshold(self, levels: int, candidates: int = 100, chunk: int = 16) -> torch.Tensor:
        """Per row, the theta (among ``candidates`` fractions of the max) that minimises the
        squared error of the values quantized as ``levels`` steps of an IF neuron do:
        ``theta / L * clamp(floor(L x / theta + 1/2), 0, L)`` (bin centres stand for the values)."""
        width = self.upper / self.bins
        frac = torch.linspace(1.0 / candidates, 1.0, candidates, dtype=torch.float64)
        out = torch.zeros_like(self.max)
        for lo in range(0, self.counts.shape[0], chunk):
            sl = slice(lo, lo + chunk)
            centres = (torch.arange(self.bins, dtype=torch.float64) + 0.5)[None] * width[sl, None]   # [c, bins]
            theta = (self.max[sl, None] * frac[None]).clamp_min(1e-12)                               # [c, K]
            step = theta[..., None] / levels
            q = torch.clamp(torch.floor(centres[:, None, :] / step + 0.5), 0, levels) * step           # [c, K, bins]
            err = (self.counts[sl, None, :] * (centres[:, None, :] - q) ** 2).sum(-1)
            out[sl] = theta.gather(1, err.argmin(1, keepdim=True)).squeeze(1)
        return torch.where(self.max > 0, out, self.max)


class ActivationObserver:
    """Statistics of one activation's input: per channel (dim 1) and per layer."""

    PERCENTILES = (99.0, 99.9, 99.99, 99.999)

    def __init__(self, name: str, bins: int = 2048):
        self.name = name
        self.bins = bins
        self.channel: StreamingHistogram | None = None
        self.layer = StreamingHistogram(1, bins)
        self.samples = 0

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().float().clamp_min(0)
        if x.dim() < 2:
            x = x.reshape(-1, 1)
        c = x.shape[1]
        if self.channel is None:
            self.channel = StreamingHistogram(c, self.bins)
        per_channel = x.transpose(0, 1).reshape(c, -1).cpu()
        self.channel.update(per_channel)
        self.layer.update(per_channel.reshape(1, -1))
        self.samples += x.shape[0]

    def threshold(self, normalization: str = "channel", percentile: "float | str" = 99.99,
                  timesteps: int | None = None) -> torch.Tensor:
        """Per-channel thresholds (a [C] tensor; all equal for layer-wise). ``percentile``:
        a percentile, ``"max"``, or ``"mse"`` (the theta whose T-level quantization of the
        observed values has the least squared error; needs ``timesteps``)."""
        if self.channel is None:
            raise RuntimeError(f"observer {self.name!r} saw no data")
        if normalization not in ("channel", "layer"):
            raise ValueError(f"normalization must be 'channel' or 'layer', not {normalization!r}")
        if percentile == "mse" and not timesteps:
            raise ValueError("percentile='mse' needs the number of timesteps")

        def pick(hist: StreamingHistogram) -> torch.Tensor:
            if percentile == "max":
                return hist.max.clone()
            if percentile == "mse":
                return hist.mse_threshold(int(timesteps))
            return hist.percentile(float(percentile))

        hist = self.channel if normalization == "channel" else self.layer
        theta = pick(hist)
        if normalization == "layer":
            theta = theta.expand(self.channel.counts.shape[0]).clone()
        else:
            layer = pick(self.layer)
            theta = torch.where(theta > 0, theta, layer.expand_as(theta))  # silent channels
        return theta.clamp_min(1e-6).float()

    def summary(self) -> dict:
        out = {"samples": self.samples, "max": float(self.layer.max[0])}
        for q in self.PERCENTILES:
            out[f"p{q:g}"] = float(self.layer.percentile(q)[0])
        return out


def calibrate_twin(twin: fx.GraphModule, node_names: Iterable[str], batches: Iterable[torch.Tensor],
                   bins: int = 2048, progress: bool = True, device: "torch.device | str | None" = None,
                   total: int | None = None) -> dict[str, ActivationObserver]:
    """Run sample batches through the twin, observing the input of each named node."""
    names = list(node_names)
    observers = {n: ActivationObserver(n, bins) for n in names}
    nodes = {n.name: n for n in twin.graph.nodes}
    handles = []
    for name in names:
        node = nodes[name]
        mod = twin.get_submodule(node.target)
        obs = observers[name]
        handles.append(mod.register_forward_pre_hook(lambda m, args, obs=obs: obs.observe(args[0])))
    dev = torch.device(device) if device is not None else next(twin.parameters()).device
    try:
        with torch.no_grad():
            for xb in tqdm(batches, desc="calibrating", unit="batch", disable=not progress, total=total):
                twin(xb.to(dev))
    finally:
        for h in handles:
            h.remove()
    if any(o.channel is None for o in observers.values()):
        from ..errors import DataError
        raise DataError("calibration saw no data: the calibration set is empty")
    return observers

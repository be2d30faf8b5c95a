"""Streaming activation statistics with bounded memory.

An :class:`ActivationObserver` sits on the input of one activation of the twin and keeps,
per channel and for the whole layer, the exact max and a histogram of the positive part
of its input (what the neuron will have to represent). The histogram range is the
smallest power of two above every value seen; it doubles as larger values arrive,
merging neighbouring bins, so memory is ``channels x bins`` whatever the number of
samples, and percentiles are exact to one bin width (range / bins).

Because the range is a power of two strictly above the data and the bin count a power of
two, a value's bin at any range is ``floor(value * 2^k)``: the counts do not depend on the
order in which values arrive. Histograms of different shards of the data therefore merge
exactly (:meth:`StreamingHistogram.merge_ranks`: agree on the largest range, regroup, add
the counts), and N processes get the thresholds one process gets.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.fx as fx
from tqdm.auto import tqdm

from .. import distributed as dist
from ..distributed import ALONE, Shard


def _range_above(values: torch.Tensor) -> torch.Tensor:
    """The smallest power of two strictly above each value (at least 2^-39)."""
    v = values.clamp_min(1e-12)
    return torch.pow(2.0, torch.floor(torch.log2(v)) + 1)


class StreamingHistogram:
    """Histograms of non-negative values for ``C`` independent rows, growing ranges."""

    def __init__(self, channels: int, bins: int = 2048):
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two >= 2, got {bins}")
        self.bins = bins
        self.counts = torch.zeros(channels, bins, dtype=torch.float64)
        self.upper = torch.zeros(channels, dtype=torch.float64)  # 0 = not started
        self.max = torch.zeros(channels, dtype=torch.float64)
        self.total = torch.zeros(channels, dtype=torch.float64)

    def _regroup(self, new_upper: torch.Tensor) -> None:
        """Widen the ranges to ``new_upper`` (powers of two, >= the current ones), adding
        neighbouring bins together."""
        fresh = self.upper == 0
        self.upper[fresh] = new_upper[fresh]
        for c in torch.nonzero(new_upper > self.upper).flatten().tolist():
            factor = int(round(float(new_upper[c] / self.upper[c])))
            row = self.counts[c]
            merged = torch.zeros_like(row)
            if factor >= self.bins:
                merged[0] = row.sum()
            else:
                merged[: self.bins // factor] = row.view(self.bins // factor, factor).sum(1)
            self.counts[c] = merged
            self.upper[c] = new_upper[c]

    def update(self, values: torch.Tensor) -> None:
        """``values``: [C, M] non-negative."""
        v = values.detach().to(torch.float64)
        cmax = v.amax(1)
        self.max = torch.maximum(self.max, cmax)
        self._regroup(torch.maximum(self.upper, _range_above(cmax)))
        idx = (v / self.upper[:, None] * self.bins).floor().clamp_(0, self.bins - 1).long()
        idx += torch.arange(v.shape[0]).unsqueeze(1) * self.bins
        self.counts += torch.bincount(idx.flatten(), minlength=self.counts.numel()).view_as(self.counts).double()
        self.total += v.shape[1]

    def merge_ranks(self, shard: Shard) -> None:
        """Combine the histograms of all ranks (each on its share of the data) in place, on
        every rank: ranges agreed first (the largest), counts regrouped to them and summed.
        Counts are integers: the sums are exact in any order."""
        if not shard.active:
            return
        upper = dist.all_reduce(self.upper, "max", shard)
        self._regroup(upper)
        self.counts = dist.all_reduce(self.counts, "sum", shard)
        self.total = dist.all_reduce(self.total, "sum", shard)
        self.max = dist.all_reduce(self.max, "max", shard)

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


class ActivationObserver:
    """Statistics of one activation's input: per channel (dim 1) and per layer."""

    PERCENTILES = (99.0, 99.9, 99.99, 99.999)

    def __init__(self, name: str, bins: int = 2048):
        self.name = name
        self.bins = bins
        self.channel: StreamingHistogram | None = None
        self.layer = StreamingHistogram(1, bins)
        self.samples = 0
        self.samples_per_rank = [0]

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

    def merge_ranks(self, shard: Shard) -> None:
        """Combine this observer over all ranks (exactly; see :class:`StreamingHistogram`).
        A rank that saw no data takes the channel count from the others."""
        if not shard.active:
            return
        counts = dist.all_gather((self.channel.counts.shape[0] if self.channel is not None else None,
                                  self.samples), shard)
        channels = {c for c, _ in counts if c is not None}
        if len(channels) > 1:
            raise RuntimeError(f"observer {self.name!r}: ranks saw {sorted(channels)} channels")
        self.samples_per_rank = [n for _, n in counts]
        self.samples = sum(self.samples_per_rank)
        if not channels:
            return
        if self.channel is None:
            self.channel = StreamingHistogram(channels.pop(), self.bins)
        self.channel.merge_ranks(shard)
        self.layer.merge_ranks(shard)

    def threshold(self, normalization: str = "channel", percentile: "float | str" = 99.99) -> torch.Tensor:
        """Per-channel thresholds (a [C] tensor; all equal for layer-wise)."""
        if self.channel is None:
            raise RuntimeError(f"observer {self.name!r} saw no data")
        if normalization not in ("channel", "layer"):
            raise ValueError(f"normalization must be 'channel' or 'layer', not {normalization!r}")
        hist = self.channel if normalization == "channel" else self.layer
        theta = hist.max.clone() if percentile == "max" else hist.percentile(float(percentile))
        if normalization == "layer":
            theta = theta.expand(self.channel.counts.shape[0]).clone()
        else:
            layer = self.layer.max if percentile == "max" else self.layer.percentile(float(percentile))
            theta = torch.where(theta > 0, theta, layer.expand_as(theta))  # silent channels
        return theta.clamp_min(1e-6).float()

    def summary(self) -> dict:
        out = {"samples": self.samples, "world_size": len(self.samples_per_rank),
               "samples_per_rank": list(self.samples_per_rank), "max": float(self.layer.max[0])}
        for q in self.PERCENTILES:
            out[f"p{q:g}"] = float(self.layer.percentile(q)[0])
        return out


def calibrate_twin(twin: fx.GraphModule, node_names: Iterable[str], batches: Iterable[torch.Tensor],
                   bins: int = 2048, progress: bool = True, device: "torch.device | str | None" = None,
                   total: int | None = None, shard: Shard = ALONE) -> dict[str, ActivationObserver]:
    """Run sample batches through the twin, observing the input of each named node.

    With ``shard`` active, ``batches`` are this rank's share; the observers are merged over
    the ranks at the end (every rank gets the same, exact, statistics)."""
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
            for xb in tqdm(batches, desc="calibrating", unit="batch", disable=not progress or shard.rank != 0,
                           total=total):
                twin(xb.to(dev))
    finally:
        for h in handles:
            h.remove()
    for o in observers.values():
        o.samples_per_rank = [o.samples]
        o.merge_ranks(shard)
    if any(o.channel is None for o in observers.values()):
        from ..errors import DataError
        raise DataError("calibration saw no data: the calibration set is empty")
    return observers

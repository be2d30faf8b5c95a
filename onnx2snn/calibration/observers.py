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

from typing import Iterable

import torch
import torch.fx as fx

from .. import distributed as dist
from ..distributed import ALONE, Shard
from ..graph.averaged import Reencode
from ..graph.layout import channel_axes
from ..graph.source import module_device
from ..progress import bar as progress_bar


def _range_above(values: torch.Tensor) -> torch.Tensor:
    """The smallest power of two strictly above each value (at least 2^-39)."""
    v = values.clamp_min(1e-12)
    return torch.pow(2.0, torch.floor(torch.log2(v)) + 1)


class StreamingHistogram:
    """Histograms of non-negative values for ``C`` independent rows, growing ranges."""

    CHUNK_VALUES = 1 << 23  # values binned at once (bounds the index tensor's memory)

    def __init__(self, channels: int, bins: int = 2048):
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two >= 2, got {bins}")
        self.bins = bins
        self.counts = torch.zeros(channels, bins, dtype=torch.int64)  # on the data's device
        self.upper = torch.zeros(channels, dtype=torch.float64)  # 0 = not started
        self.max = torch.zeros(channels, dtype=torch.float64)
        self.total = torch.zeros(channels, dtype=torch.float64)

    def _regroup(self, new_upper: torch.Tensor) -> None:
        """Widen the ranges to ``new_upper`` (powers of two, >= the current ones), adding
        neighbouring bins together (rows grouped by their widening factor)."""
        fresh = self.upper == 0
        self.upper[fresh] = new_upper[fresh]
        grow = torch.nonzero(new_upper > self.upper).flatten()
        if not len(grow):
            return
        factors = torch.round(new_upper[grow] / self.upper[grow]).long()
        for f in factors.unique().tolist():
            rows = grow[factors == f]
            old = self.counts[rows]
            merged = torch.zeros_like(old)
            if f >= self.bins:
                merged[:, 0] = old.sum(1)
            else:
                merged[:, : self.bins // f] = old.view(len(rows), self.bins // f, f).sum(2)
            self.counts[rows] = merged
        self.upper[grow] = new_upper[grow]

    def update(self, values: torch.Tensor) -> None:
        """``values``: [C, M] non-negative (negative values count as 0)."""
        self.update_rows(values.unsqueeze(0))

    def update_rows(self, v: torch.Tensor) -> None:
        """``v``: [N, C, M] (row c of the histogram gets ``v[:, c]``), on any device; counted
        without copying to [C, N*M]. A value's bin is ``floor(v * bins / upper)``: with
        ``bins / upper`` a power of two the product is exact in float32, and for the clamped,
        non-negative product truncation to int is the floor."""
        v = v.detach()
        if not v.is_floating_point():
            v = v.float()
        if v.numel() == 0:  # an empty activation (a zero-size dim): no values to count
            return
        C = v.shape[1]
        cmax = v.amax(dim=(0, 2)).double().cpu().clamp_min(0)
        self.max = torch.maximum(self.max, cmax)
        self._regroup(torch.maximum(self.upper, _range_above(cmax)))
        if self.counts.device != v.device:
            self.counts = self.counts.to(v.device)
        scale = (self.bins / self.upper).to(v.device, v.dtype).reshape(1, C, 1)
        offsets = (torch.arange(C, device=v.device, dtype=torch.int32) * self.bins).reshape(1, C, 1)
        flat_counts = self.counts.view(-1)
        step = max(1, self.CHUNK_VALUES // max(1, v[0].numel()))
        for i in range(0, v.shape[0], step):
            idx = torch.mul(v[i:i + step], scale).clamp_(0, self.bins - 1).int().add_(offsets).reshape(-1)
            flat_counts.index_add_(0, idx, torch.ones(1, dtype=torch.int64, device=v.device).expand(idx.numel()))
        self.total += v.shape[0] * v.shape[2]

    @classmethod
    def combined(cls, rows: "StreamingHistogram") -> "StreamingHistogram":
        """One histogram of all rows' values together (exact: each row regrouped to the
        largest range, then added)."""
        out = cls(1, rows.bins)
        started = rows.upper > 0
        if not started.any():
            return out
        upper = rows.upper[started].max()
        tmp = cls(int(started.sum()), rows.bins)
        tmp.counts, tmp.upper = rows.counts[started].clone(), rows.upper[started].clone()
        tmp._regroup(upper.expand_as(tmp.upper).clone())
        out.counts = tmp.counts.sum(0, keepdim=True)
        out.upper = upper.reshape(1).clone()
        out.max = rows.max.max().reshape(1).clone()
        out.total = rows.total.sum().reshape(1).clone()
        return out

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

    def mse_threshold(self, timesteps: int, levels: int = 1, v_init: float = 0.5, tolerance: float = 0.0,
                      candidates: int = 48, refine: int = 24) -> torch.Tensor:
        """Per-row threshold minimising the squared error of a ``timesteps``-step IF neuron
        (:func:`neuron_error`) over this histogram: clipping the rare large values against
        resolution for the many small ones, at the T the network will run. A geometric grid
        from max / 2^10 to max (``candidates`` points), then ``refine`` points between the
        best one's neighbours; a row with no positive value gets its max (0).

        ``tolerance`` > 0 trades accuracy for spikes: the largest threshold (fewer spikes)
        whose error is at most ``1 + tolerance`` times the least, searched the same way (the
        largest grid point within the bound, then ``refine`` points up to the next one)."""
        counts = self.counts.cpu().float()
        width = self.upper / self.bins
        top = self.max.clamp_min(1e-12)
        logs = torch.linspace(-10.0, 0.0, candidates, dtype=torch.float64)
        coarse = top.unsqueeze(1) * torch.pow(2.0, logs).unsqueeze(0)  # [R, K]
        coarse_err = neuron_error(counts, width, coarse, timesteps, levels, v_init)
        k = coarse_err.argmin(1)
        gap = float(logs[1] - logs[0])
        lo = (logs[k] - gap).clamp(min=-10.0)
        span = (logs[k] + gap).clamp(max=0.0) - lo
        steps = torch.linspace(0.0, 1.0, refine, dtype=torch.float64)
        fine = lo.unsqueeze(1) + span.unsqueeze(1) * steps
        cand = top.unsqueeze(1) * torch.pow(2.0, fine)
        err = neuron_error(counts, width, cand, timesteps, levels, v_init)
        theta = cand.gather(1, err.argmin(1, keepdim=True)).squeeze(1)
        if tolerance > 0:
            bound = err.min(1, keepdim=True).values * (1.0 + tolerance)
            # the largest grid point within the bound (none: a row whose coarse minimum is above
            # it keeps the refined best), then refine points up to the next grid point
            j = torch.where(coarse_err <= bound, torch.arange(candidates).unsqueeze(0), -1).max(1).values
            fine = (logs[j.clamp_min(0)].unsqueeze(1) + gap * steps).clamp(max=0.0)
            cand = top.unsqueeze(1) * torch.pow(2.0, fine)
            ok = neuron_error(counts, width, cand, timesteps, levels, v_init) <= bound
            i = torch.where(ok, torch.arange(refine).unsqueeze(0), -1).max(1).values
            wide = cand.gather(1, i.clamp_min(0).unsqueeze(1)).squeeze(1)
            theta = torch.where((j >= 0) & (i >= 0), torch.maximum(theta, wide), theta)
        return torch.where(self.max > 0, theta, self.max)

    def percentile(self, q: float) -> torch.Tensor:
        """Per-row ``q``-th percentile (0-100), linear inside the bin; never above max."""
        counts = self.counts.cpu().double()
        cdf = counts.cumsum(1)
        target = (q / 100.0) * self.total
        b = torch.searchsorted(cdf, target.unsqueeze(1)).squeeze(1).clamp(max=self.bins - 1)
        below = torch.where(b > 0, cdf.gather(1, (b - 1).clamp_min(0).unsqueeze(1)).squeeze(1),
                            torch.zeros_like(target))
        inside = counts.gather(1, b.unsqueeze(1)).squeeze(1).clamp_min(1e-12)
        frac = ((target - below) / inside).clamp(0, 1)
        width = self.upper / self.bins
        return torch.minimum((b.double() + frac) * width, self.max)


def neuron_error(counts: torch.Tensor, width: torch.Tensor, theta: torch.Tensor, timesteps: int, levels: int = 1,
                 v_init: float = 0.5) -> torch.Tensor:
    """Expected squared error, per row and candidate, of what an IF neuron with threshold
    ``theta`` represents after ``timesteps`` steps of a constant input (its rate times
    theta: ``theta / T * clamp(floor(x * T / theta + v_init), 0, levels * T)``), against
    the activation value itself, over a histogram.

    ``counts``: [R, B] bin counts, ``width``: [R] bin widths (values at bin centres),
    ``theta``: [R, K] candidate thresholds. Returns [R, K] (sum over the bins, unnormalised).
    Rows are done a few at a time (bounded memory: about 2^22 values per block)."""
    R, B = counts.shape
    K = theta.shape[1]
    scale = theta / timesteps  # [R, K]: one spike's worth
    centres = (torch.arange(B, dtype=torch.float32) + 0.5).reshape(1, 1, B)
    err = torch.empty(R, K, dtype=torch.float64)
    step = max(1, (1 << 22) // (K * B))
    for i in range(0, R, step):
        u = centres * (width[i:i + step].unsqueeze(1) / scale[i:i + step]).float().unsqueeze(2)  # bin centres in spikes
        q = torch.clamp(torch.floor(u + v_init), 0, levels * timesteps)
        err[i:i + step] = torch.einsum("rkb,rb->rk", (q - u).square_(), counts[i:i + step].float()).double()
    return err * scale ** 2


class ActivationObserver:
    """Statistics of one activation's input: per channel (along ``axis``, the input's feature
    axis: see :func:`onnx2snn.graph.layout.channel_axes`; None: the layer is one channel) and
    per layer (the channel histograms combined, exactly, when asked for). Any strides: a
    transposed input is read as it is."""

    PERCENTILES = (99.0, 99.9, 99.99, 99.999)

    def __init__(self, name: str, bins: int = 2048, axis: "int | None" = 1, channels: "int | None" = None):
        self.name = name
        self.bins = bins
        self.axis = axis
        self.channels = channels  # the axis' size in the graph: one that differs grows with the batch
        self.channel: StreamingHistogram | None = None
        self._layer: StreamingHistogram | None = None
        self.samples = 0
        self.samples_per_rank = [0]

    @property
    def layer(self) -> StreamingHistogram:
        """The histogram of all channels' values together."""
        if self._layer is None:
            self._layer = StreamingHistogram(1, self.bins) if self.channel is None else \
                StreamingHistogram.combined(self.channel)
        return self._layer

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        if self.channel is None and self.axis is not None and self.channels is not None and \
                x.dim() > self.axis and x.shape[self.axis] != self.channels:
            self.axis = None  # the "channels" hold the batch (an odd layout): one threshold for the layer
        if x.dim() < 2 or self.axis is None:
            x = x.reshape(x.shape[0] if x.dim() else 1, 1, -1)
        elif self.axis != 1:
            x = x.movedim(self.axis, 1)
        c = x.shape[1]
        if self.channel is None:
            self.channel = StreamingHistogram(c, self.bins)
        self.channel.update_rows(x.reshape(x.shape[0], c, -1))
        self._layer = None
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
        self._layer = None

    def threshold(self, normalization: str = "channel", percentile: "float | str" = 99.99,
                  neuron: "dict | None" = None) -> torch.Tensor:
        """Per-channel thresholds (a [C] tensor; all equal for layer-wise). ``percentile``
        is a number, ``"max"``, or ``"mse"``: the threshold that minimises the neuron's
        squared error at ``neuron = {"timesteps": T, "levels": K, "v_init": v, "tolerance": e}``
        (see :meth:`StreamingHistogram.mse_threshold`)."""
        if self.channel is None:
            raise RuntimeError(f"observer {self.name!r} saw no data")
        if normalization not in ("channel", "layer"):
            raise ValueError(f"normalization must be 'channel' or 'layer', not {normalization!r}")

        def pick(hist: StreamingHistogram) -> torch.Tensor:
            if percentile == "max":
                return hist.max.clone()
            if percentile == "mse":
                return hist.mse_threshold(**(neuron or {"timesteps": 32}))
            return hist.percentile(float(percentile))

        theta = pick(self.channel if normalization == "channel" else self.layer)
        if normalization == "layer":
            theta = theta.expand(self.channel.counts.shape[0]).clone()
        else:
            theta = torch.where(theta > 0, theta, pick(self.layer).expand_as(theta))  # silent channels
        return theta.clamp_min(1e-6).float()

    def summary(self) -> dict:
        out = {"samples": self.samples, "world_size": len(self.samples_per_rank),
               "samples_per_rank": list(self.samples_per_rank), "max": float(self.layer.max[0])}
        for q in self.PERCENTILES:
            out[f"p{q:g}"] = float(self.layer.percentile(q)[0])
        return out


def _size(node: fx.Node, axis: "int | None") -> "int | None":
    """The size of ``axis`` of the node's input as recorded at import (None when unknown)."""
    src = node.all_input_nodes[0] if node.all_input_nodes else None
    shape = src.meta.get("shape") if src is not None else None
    ok = axis is not None and shape is not None and axis < len(shape) and isinstance(shape[axis], int)
    return shape[axis] if ok else None


def calibrate_twin(twin: fx.GraphModule, node_names: Iterable[str], batches: Iterable[torch.Tensor],
                   bins: int = 2048, progress: bool = True, device: "torch.device | str | None" = None,
                   total: int | None = None, shard: Shard = ALONE) -> dict[str, ActivationObserver]:
    """Run sample batches through the twin, observing the input of each named node, per
    channel along its feature axis (:func:`onnx2snn.graph.layout.channel_axes`).

    With ``shard`` active, ``batches`` are this rank's share; the observers are merged over
    the ranks at the end (every rank gets the same, exact, statistics)."""
    names = list(node_names)
    axes = channel_axes(twin, names)
    nodes = {n.name: n for n in twin.graph.nodes}
    observers = {n: ActivationObserver(n, bins, axes[n], _size(nodes[n], axes[n])) for n in names}
    handles = []
    for name in names:
        node = nodes[name]
        mod = twin.get_submodule(node.target)
        obs = observers[name]
        if isinstance(mod, Reencode):  # a two-sided neuron: its error is symmetric, observe |x|
            handles.append(mod.register_forward_pre_hook(lambda m, args, obs=obs: obs.observe(args[0].abs())))
        else:
            handles.append(mod.register_forward_pre_hook(lambda m, args, obs=obs: obs.observe(args[0])))
    dev = torch.device(device) if device is not None else module_device(twin)
    try:
        with torch.no_grad():
            for xb in progress_bar(batches, total=total, desc="calibrating", unit="batch",
                                   enabled=progress and shard.rank == 0):
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

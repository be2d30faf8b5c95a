"""Where spike events are consumed: event counts carried through the weight-free ops.

A neuron's output at a step is ``k * theta`` per element: k events (unit coding) or
popcount(k) (binary-weighted coding). Between neurons and the weight layers that read them lie
weight-free ops: reshape, transpose, concat, split, slice, pad, pools, upsampling, adds, scalings.
In an event-driven machine they are routing, folded into the synapses: every event still
arrives, once per place it is copied to. :class:`EventFlow` runs a spiking graph on event
*counts* instead of values, so the count reaching each element of a weight layer's input is the
number of events that element delivers:

- shape ops, concat, split, slice, gather, zero padding, nearest upsampling run as they are
  (they move counts; a copy counts again);
- adds and subtractions add the counts of their computed operands (a constant adds none);
  negation and multiplication / division by a constant leave counts as they are (the scale
  folds into the weights);
- average pools and means become sums (each event reaches every pooled output it is part of);
  linear / bilinear resizes route like nearest ones (each event to the outputs it weighs on);
- a spiking max-pool passes the increase of the window maximum of the accumulated counts
  (its own state, carried over chunks of time): exact for one-sign spikes with one threshold
  per channel;
- a weight layer, a time-averaged op or any other module outputs an *analog* value: zero
  events, and the node is marked analog (so are the ops that read it).
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..graph import functional as OF
from ..snn.neurons import time_folded, time_major

_ADDS = {operator.add, torch.add, operator.sub, torch.sub, operator.iadd, operator.isub}
_SCALES = {operator.mul, torch.mul, operator.truediv, torch.div, operator.neg, torch.neg}
_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def fanout(fn: Callable[[torch.Tensor], torch.Tensor], sample_shape) -> torch.Tensor:
    """Synapses driven by each input element of ``fn`` (a weight layer with all-ones weights
    and no bias) for one sample of ``sample_shape``: the input gradient of ``sum(fn(x))``,
    float64, in the shape of the sample (padding taps are not synapses: they get no gradient)."""
    with torch.enable_grad():
        x = torch.ones(tuple(sample_shape), requires_grad=True)
        fn(x).sum().backward()
    return x.grad.double()


def _analog(shape, like: torch.Tensor | None = None, dtype=torch.float32) -> torch.Tensor:
    device = like.device if like is not None else "cpu"
    return torch.zeros((), dtype=dtype, device=device).expand(tuple(shape))


class EventFlow(fx.Interpreter):
    """Runs ``gm`` on event counts (see the module doc).

    ``neurons``: module target -> the counts of this call (the neuron's events per element);
    ``shapes``: module target -> its output shape in this call (analog modules); ``consume``:
    called ``consume(key, counts, analog)`` for each weight node named in ``layers`` (key ->
    index of its data argument) with the counts reaching its data input; ``state``: the carried
    count state of the spiking max-pools; ``T``: steps of this call; ``layouts``: node name ->
    its batch layout ``(axis, outer)`` (:func:`onnx2snn.snn.network.batch_layout`; batch-first
    when missing). ``analog`` after a run: the analog nodes.
    """

    def __init__(self, gm: fx.GraphModule, neurons: dict[str, torch.Tensor], shapes: dict[str, tuple],
                 layers: dict[str, Callable], consume: Callable, state: dict, T: int,
                 analog_inputs: set[str] = frozenset(), layouts: dict | None = None):
        super().__init__(gm, garbage_collect_values=True)
        self.neurons, self.shapes, self.layers, self.consume = neurons, shapes, layers, consume
        self.state, self.T = state, T
        self.analog_inputs, self.layouts = analog_inputs, layouts or {}
        self.analog: set[str] = set()

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("placeholder", "get_attr", "output"):
            if n.op == "placeholder" and n.name in self.analog_inputs:
                self.analog.add(n.name)
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        computed = [a for a in n.all_input_nodes if a.op not in ("get_attr",)]
        if any(a.name in self.analog for a in computed):
            self.analog.add(n.name)
        key = n.target if n.op == "call_module" else n.name
        if key in self.layers:  # a weight layer: its data input's counts are consumed here
            data = self.layers[key]
            self.consume(key, args[data] if isinstance(data, int) else data(args), n.name in self.analog)
            self.analog.add(n.name)
            return self._analog_like(n, args, kwargs)
        if n.op == "call_module":
            return self._module(n, args, kwargs)
        return self._function(n, args, kwargs)

    def _analog_like(self, n: fx.Node, args, kwargs) -> torch.Tensor:
        if n.op == "call_module" and n.target in self.shapes:
            return _analog(self.shapes[n.target], next((a for a in args if isinstance(a, torch.Tensor)), None))
        with torch.device("meta"):  # the output shape only, at no cost
            meta = fx.node.map_aggregate((args, kwargs), lambda a: torch.empty(a.shape, dtype=a.dtype, device="meta")
                                         if isinstance(a, torch.Tensor) else a)
            if n.op == "call_module":
                y = self.module.get_submodule(n.target)(*meta[0], **meta[1])
            else:
                y = n.target(*meta[0], **meta[1])
        return _analog(y.shape, next((a for a in args if isinstance(a, torch.Tensor)), None))

    def _module(self, n: fx.Node, args, kwargs) -> Any:
        t = n.target
        if t in self.neurons:
            self.analog.discard(n.name)
            return self.neurons[t]
        m = self.module.get_submodule(t)
        if type(m).__name__ == "SpikingMaxPool":
            src = n.args[0].name if isinstance(n.args[0], fx.Node) else n.name
            return self._maxpool(t, m.pool, args[0], self.layouts.get(src), self.layouts.get(n.name))
        if isinstance(m, _AVG):
            c = args[0]
            if isinstance(m, nn.AvgPool1d):
                return F.avg_pool1d(c, m.kernel_size, m.stride, m.padding, m.ceil_mode, True) * m.kernel_size[0]
            fn = F.avg_pool2d if isinstance(m, nn.AvgPool2d) else F.avg_pool3d
            return fn(c, m.kernel_size, m.stride, m.padding, m.ceil_mode, True, 1)
        if isinstance(m, _ADAPTIVE_AVG):
            y = m(args[0])
            return y * (args[0][0, 0].numel() / max(1, y[0, 0].numel()))
        if isinstance(m, nn.Upsample) and m.mode != "nearest":
            return F.interpolate(args[0], size=m.size, scale_factor=m.scale_factor, mode="nearest")
        if type(m).__name__ in ("Flatten", "Unflatten", "Identity", "Dropout", "ZeroPad2d", "ConstantPad1d",
                                "ConstantPad2d", "ConstantPad3d", "PixelShuffle", "PixelUnshuffle", "Upsample",
                                "ChannelShuffle", "Reencode"):
            return m(*args, **kwargs)
        self.analog.add(n.name)  # a weight layer, a time-averaged op, anything else: analog
        return self._analog_like(n, args, kwargs)

    def _maxpool(self, t: str, pool: nn.Module, c: torch.Tensor, layout_in, layout_out) -> torch.Tensor:
        """The increase of the window maximum of the accumulated counts, at each step."""
        T = self.T
        xs = time_major(c, T, layout_in)
        st = self.state.get(t)
        cum = xs.cumsum(0) + (st[0] if st is not None else 0)
        pooled = time_major(pool(time_folded(cum, layout_in)), T, layout_out)
        prev = torch.cat([(st[1] if st is not None else torch.zeros_like(pooled[0]))[None], pooled[:-1]])
        self.state[t] = (cum[-1].clone(), pooled[-1].clone())
        return time_folded(pooled - prev, layout_out)

    def _function(self, n: fx.Node, args, kwargs) -> Any:
        f = n.target
        const = [not isinstance(a, fx.Node) or a.op == "get_attr" for a in n.args]
        if f in _ADDS and len(args) >= 2:
            a, b = args[0], args[1]
            a = a if not const[0] else _zeros(a)
            b = b if not const[1] else _zeros(b)
            if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
                return a + b
            return f(*args, **kwargs)  # arithmetic on sizes
        if f in _SCALES and isinstance(args[0], torch.Tensor) and not const[0]:
            other = args[1] if len(args) > 1 else None
            if isinstance(other, torch.Tensor):
                return args[0].expand(torch.broadcast_shapes(args[0].shape, other.shape)).clone()
            return args[0]
        if f in _SCALES and len(args) > 1 and isinstance(args[1], torch.Tensor) and not const[1] and \
                f in (operator.mul, torch.mul):
            return args[1].expand(torch.broadcast_shapes(args[0].shape if isinstance(args[0], torch.Tensor)
                                                         else (), args[1].shape)).clone()
        if f is torch.where and len(args) == 3:  # a selection: constant values chosen carry no events
            return torch.where(args[0], *[_zeros(a) if c else a for a, c in zip(args[1:], const[1:])])
        if f is torch.mean:
            return torch.sum(*args, **{k: v for k, v in kwargs.items() if k != "dtype"})
        if f is OF.pool_sum_div:
            return f(*args[:5], 1.0)
        if f is F.interpolate:
            kw = {k: v for k, v in kwargs.items() if k not in ("mode", "align_corners", "antialias")}
            return F.interpolate(*args[:3], **kw, mode="nearest") if len(args) < 4 else \
                F.interpolate(args[0], args[1], args[2], mode="nearest")
        if f is OF.matmul_axes:
            w = [(x != 0).to(args[0].dtype) for x in args[2]]
            return f(args[0], args[1], w, None)
        if f is OF.pad_then and (len(args) < 4 or args[3] == "constant"):
            return f(args[0], args[1], 0.0)
        if n.op == "call_method":
            self_obj, *rest = args
            return getattr(self_obj, f)(*rest, **kwargs)
        return f(*args, **kwargs)


def _zeros(x):
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else 0


__all__ = ["EventFlow", "fanout"]

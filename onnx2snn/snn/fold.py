"""Binary-spike form: fold every neuron's threshold into the synaptic weights.

``fold_thresholds(snn)`` returns an equivalent network whose neurons all have threshold 1
and fire spikes of amplitude 1 (IBT: +-1), Spiking-YOLO style. For an IF neuron with
threshold lam, ``IF_lam(x) = lam * IF_1(x / lam)`` (bias and initial potential scale along),
so each neuron is first wrapped as ``Scale(lam) . IF_1 . Scale(1 / lam)`` (exact), then the
per-channel scales move through the graph by exact identities until a weighted layer
absorbs them:

- into the output channels of the Conv/Linear (or BatchNorm) that feeds them,
- into the input channels of the Conv/Linear they feed,
- through ops that commute with a positive per-channel scale (max/avg pooling, zero
  padding, resizing, flatten), and across Add (a scale after an Add goes onto both
  branches) and Concat (split by channel).

Branch scales at an Add are thus matched in each branch's own weights. What cannot be
absorbed stays as a :class:`ChannelScale`: the per-channel synaptic weight of an identity
path (e.g. a residual skip from a neuron straight into an Add: weight lam_in / lam_out).
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..graph.analysis import analyze
from .network import partition
from ..graph.layout import per_channel as _per_channel
from .neurons import IFNeuron, SpikingMaxPool

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_COMMUTING = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
              nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d,
              nn.ZeroPad2d, nn.Upsample, nn.Identity, nn.Dropout, SpikingMaxPool)


class ChannelScale(nn.Module):
    """``y = x * scale`` per channel (dim 1): synaptic weights of an identity path."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _per_channel(self.scale, x).to(x)


class _Folder:
    """Inserts, moves and absorbs ChannelScale nodes in a copy of ``snn.rewritten``."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.graph = gm.graph
        self.count = 0

    # -- helpers -------------------------------------------------------------------
    def mod(self, node: fx.Node):
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    def is_scale(self, node) -> bool:
        return isinstance(node, fx.Node) and isinstance(self.mod(node), ChannelScale)

    def scale_of(self, node: fx.Node) -> torch.Tensor:
        return self.mod(node).scale

    def insert_scale(self, value: fx.Node, scale: torch.Tensor, before: fx.Node) -> fx.Node:
        self.count += 1
        name = f"fold_scale_{self.count}"
        self.gm.add_submodule(name, ChannelScale(scale))
        with self.graph.inserting_before(before):
            node = self.graph.call_module(name, (value,))
        node.meta = dict(value.meta)
        return node

    def remove_scale(self, node: fx.Node) -> None:
        node.replace_all_uses_with(node.args[0])
        self.graph.erase_node(node)
        self.gm.delete_submodule(node.target)

    def channels(self, node: fx.Node) -> int | None:
        shape = node.meta.get("shape")
        return int(shape[1]) if shape is not None and len(shape) > 1 else None

    # -- the rules (each an exact identity; True if the graph changed) --------------
    def merge(self, s: fx.Node) -> bool:
        """Scale(a) . Scale(b) -> Scale(a * b) when the inner one has no other user."""
        p = s.args[0]
        if not (self.is_scale(p) and len(p.users) == 1):
            return False
        self.mod(s).scale = self.scale_of(s) * self.scale_of(p)
        s.args = (p.args[0],)
        self.graph.erase_node(p)
        self.gm.delete_submodule(p.target)
        return True

    def pull(self, s: fx.Node) -> bool:
        """Move a scale backwards into (or through) the node that produces its input."""
        p = s.args[0]
        if not isinstance(p, fx.Node) or len(p.users) != 1:
            return False
        sc = self.scale_of(s)
        m = self.mod(p)
        if isinstance(m, _WEIGHTED + (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            _scale_out(m, sc)
            self.remove_scale(s)
            return True
        if p.op == "call_function" and p.target in (operator.add, torch.add) and len(p.args) == 2 and \
                all(isinstance(a, fx.Node) for a in p.args) and \
                all(self.channels(a) == self.channels(p) for a in p.args):
            p.args = tuple(self.insert_scale(a, sc, p) for a in p.args)
            self.remove_scale(s)
            return True
        if _is_cat1(p) and all(self.channels(a) for a in p.args[0]):
            parts, start = [], 0
            for a in p.args[0]:
                c = self.channels(a)
                parts.append(self.insert_scale(a, _slice(sc, start, c), p))
                start += c
            p.args = (parts,) + tuple(p.args[1:])
            self.remove_scale(s)
            return True
        return False

    def push(self, s: fx.Node) -> bool:
        """Move a scale forwards into (or through) the node that consumes its output."""
        users = list(s.users)
        if len(users) > 1:  # one copy per consumer
            for u in users[1:]:
                c = self.insert_scale(s.args[0], self.scale_of(s), u)
                u.replace_input_with(s, c)
            return True
        if not users:
            return False
        u = users[0]
        sc = self.scale_of(s)
        m = self.mod(u)
        if isinstance(m, _WEIGHTED) and u.args[0] is s and _scale_in(m, sc):
            self.remove_scale(s)
            return True
        if isinstance(m, _COMMUTING) or _is_commuting_fn(u):
            self._swap_after(s, u, sc)
            return True
        if isinstance(m, nn.Flatten) or _is_flatten_fn(u):
            shape = s.args[0].meta.get("shape") if isinstance(s.args[0], fx.Node) else None
            if shape is None or len(shape) < 2 or (isinstance(m, nn.Flatten) and m.start_dim != 1):
                return False
            per = 1
            for d in shape[2:]:
                per *= int(d)
            self._swap_after(s, u, _expand(sc, int(shape[1])).repeat_interleave(per))
            return True
        if _is_cat1(u) and all(self.is_scale(a) and len(a.users) == 1 or self.channels(a) for a in u.args[0]):
            if not all(self.is_scale(a) and len(a.users) == 1 for a in u.args[0]):
                # give the unscaled inputs a scale of 1 so the whole concat can move
                u.args = ([a if self.is_scale(a) else self.insert_scale(a, torch.ones(self.channels(a)), u)
                           for a in u.args[0]],) + tuple(u.args[1:])
            scales = [_expand(self.scale_of(a), self.channels(a.args[0]) or self.channels(a)) for a in u.args[0]]
            ins = list(u.args[0])
            u.args = ([a.args[0] for a in ins],) + tuple(u.args[1:])
            for a in ins:
                self.graph.erase_node(a)
                self.gm.delete_submodule(a.target)
            self._insert_after(u, torch.cat(scales))
            return True
        return False

    def _swap_after(self, s: fx.Node, u: fx.Node, new_scale: torch.Tensor) -> None:
        u.replace_input_with(s, s.args[0])
        self.graph.erase_node(s)
        self.gm.delete_submodule(s.target)
        self._insert_after(u, new_scale)

    def _insert_after(self, u: fx.Node, scale: torch.Tensor) -> None:
        nxt = u.next
        users = list(u.users)
        node = self.insert_scale(u, scale, nxt)
        for w in users:
            w.replace_input_with(u, node)


def _expand(scale: torch.Tensor, channels: int | None) -> torch.Tensor:
    return scale.expand(channels).clone() if scale.numel() == 1 and channels else scale


def _slice(scale: torch.Tensor, start: int, n: int) -> torch.Tensor:
    return scale.expand(start + n)[start:start + n].clone() if scale.numel() == 1 else scale[start:start + n]


def _is_cat1(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target is not torch.cat:
        return False
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    return dim == 1 and isinstance(node.args[0], (list, tuple)) and all(isinstance(a, fx.Node) for a in node.args[0])


def _is_commuting_fn(node: fx.Node) -> bool:
    if node.op != "call_function":
        return False
    if node.target is F.interpolate:
        return True
    if node.target is F.pad:
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else 0)
        return mode != "constant" or not value
    return node.target in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d)


def _is_flatten_fn(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target is not torch.flatten:
        return False
    start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    return start == 1


def _scale_out(m: nn.Module, sc: torch.Tensor) -> None:
    """Multiply a layer's output channels by ``sc``."""
    with torch.no_grad():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            c = m.num_features
            sc = _expand(sc, c).to(m.running_mean)
            if m.affine:
                m.weight.mul_(sc)
                m.bias.mul_(sc)
            else:  # fold into an affine form
                m.affine = True
                m.weight = nn.Parameter(sc.clone())
                m.bias = nn.Parameter(torch.zeros_like(sc))
            return
        out = m.weight.shape[0]
        sc = _expand(sc, out).to(m.weight)
        m.weight.mul_(sc.reshape((-1,) + (1,) * (m.weight.dim() - 1)))
        if m.bias is not None:
            m.bias.mul_(sc)


def _scale_in(m: nn.Module, sc: torch.Tensor) -> bool:
    """Multiply a layer's input channels by ``sc``; False if the layout is not supported."""
    w = m.weight
    if isinstance(m, nn.Linear):
        if sc.numel() not in (1, w.shape[1]):
            return False
        with torch.no_grad():
            w.mul_(_expand(sc, w.shape[1]).to(w).reshape(1, -1))
        return True
    groups = m.groups
    cin = w.shape[1] * groups
    if sc.numel() not in (1, cin):
        return False
    sc = _expand(sc, cin).to(w)
    per_group_out = w.shape[0] // groups
    idx = (torch.arange(w.shape[0]) // per_group_out).unsqueeze(1) * w.shape[1] + torch.arange(w.shape[1])
    with torch.no_grad():
        w.mul_(sc[idx].reshape(w.shape[:2] + (1,) * (w.dim() - 2)))
    return True


def no_binary_form(op_kinds: list[str], what: str = "snn") -> ConfigError:
    """The error for folding a network with time-averaged operators (one per entry of ``op_kinds``)."""
    kinds, n = sorted(set(op_kinds)), len(op_kinds)
    return ConfigError(f"the network has time-averaged operators ({', '.join(kinds)}; {n} node{'s' * (n != 1)}): they "
                       "compute on analog values, so it has no binary-spike form. For hardware, convert a fully "
                       "spike-driven network: replace_activations (e.g. {'SiLU': 'ReLU'}) then onnx2snn.finetune",
                       what)


def fold_thresholds(snn):
    """The binary-spike form of ``snn``: thresholds 1, spikes 0/1 (IBT: -1/0/1), weights and
    biases rescaled, branch scales matched at Add/Concat. Outputs equal the weighted form
    (exactly in exact arithmetic; to rounding in floating point, which can move a spike when
    a potential lands on a threshold to within float precision: compare in float64)."""
    if not hasattr(snn, "rewritten") or not hasattr(snn, "config"):
        raise ConfigError(f"fold_thresholds needs a SpikingNetwork from onnx2snn.convert, got {type(snn).__name__}",
                          "snn")
    if snn.config.get("folded"):
        return snn
    averaged = snn.averaged_ops() if hasattr(snn, "averaged_ops") else {}
    if averaged:  # a scale cannot pass a nonlinear op: there is no binary form to fold into
        raise no_binary_form([m.op_name for m in averaged.values()])
    other = {t: (m.channel_axis, m.time_axis) for t, m in snn.neurons().items()
             if m.theta.numel() > 1 and (tuple(m.time_layout) != (0, 1) or m.channel_axis != 1)}
    if other:  # the folding rules move per-channel scales along dim 1 of batch-first tensors
        t, (c, b) = next(iter(other.items()))
        raise ConfigError(f"fold_thresholds moves per-channel thresholds along dim 1 of batch-first tensors; "
                          f"{len(other)} neuron(s) have another layout (e.g. {t!r}: channel axis {c}, batch axis {b}, "
                          "as in token layouts [B, N, D] or [N, B, D]). Convert with normalization='layer' (one "
                          "threshold per layer) to fold such a network", "snn")
    gm = copy.deepcopy(snn.rewritten)
    folder = _Folder(gm)
    neurons = [n for n in gm.graph.nodes if isinstance(folder.mod(n), IFNeuron)]
    for n in neurons:
        neuron = folder.mod(n)
        lam = neuron.theta.clone()
        neuron.bias = neuron.bias / lam
        neuron.theta = torch.ones_like(lam)
        n.args = (folder.insert_scale(n.args[0], 1.0 / lam, n),) + tuple(n.args[1:])
        users = list(n.users)
        out = folder.insert_scale(n, lam, n.next)
        for u in users:
            u.replace_input_with(n, out)
    # first pull every scale back as far as it goes, then push what is left forward; the
    # two never alternate (a scale pushed across a Concat would be pulled back again)
    for rule in (folder.pull, folder.push):
        while any(folder.merge(s) or rule(s) for s in [n for n in gm.graph.nodes if folder.is_scale(n)]):
            pass
    for s in [n for n in gm.graph.nodes if folder.is_scale(n)]:  # drop scales of exactly 1
        if bool((folder.scale_of(s) == 1).all()):
            folder.remove_scale(s)
    gm.graph.lint()
    gm.recompile()
    gm.onnx_info = snn.ann.onnx_info
    analysis = analyze(snn.ann)
    core = {a.name for a in analysis.nodes if a.part == "core"}
    for n in gm.graph.nodes:  # a scale sits in the part of the value it scales
        if folder.is_scale(n) and (n.args[0].name in core or any(u.name in core for u in n.users)):
            core.add(n.name)
    neuron_names = {n.name for n in gm.graph.nodes if isinstance(folder.mod(n), IFNeuron)}
    config = {**snn.config, "folded": True}
    out = partition(snn.ann, gm, core, neuron_names, config)
    out.channel_axes = dict(snn.channel_axes)
    out.unfolded_from = snn
    return out


__all__ = ["fold_thresholds", "ChannelScale"]

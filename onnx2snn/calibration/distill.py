"""Label-free distillation: the source network teaches its spiking-ready twin.

The teacher is the source network exactly as it was (original activations, SiLU
included; frozen, float). The student is the twin being fine-tuned (activations
replaced where asked, single-step T-level neurons with noise). The loss compares them on
the *outputs of the spiking part*: the tensors that enter post-processing (classifier
logits; detection head maps before box decoding and sigmoid), found from the graph
split of :func:`onnx2snn.graph.analysis.analyze`, so it needs no labels and no task
loss and works for any model. Each such tensor gets the term that fits what follows it:

- a ``Softmax`` (e.g. the DFL bins of a YOLOv8 head): KL divergence of the two
  distributions along the softmax axis;
- a ``Sigmoid`` (class scores): binary KL divergence of the two probabilities;
- a 2-D graph output ``[B, C]`` (classifier logits): KL divergence of the softmaxes at
  temperature ``temperature``, times its square (Hinton et al. 2015);
- anything else (raw head maps decoded outside the graph, regression outputs): squared
  error divided by the teacher's per-channel variance, measured once on sample inputs.

Terms are averaged over their elements and the tensors' terms are averaged, so heads of
different scale weigh alike. Optional feature terms (``feature_weight``) add the
normalised squared error of every neuron's input (the pre-activation) against the
teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .. import settings
from ..errors import Onnx2SnnError
from ..graph.analysis import analyze

KINDS = ("softmax", "sigmoid", "logits", "maps")
MODES = settings.DISTILL_MODES
DEFAULT_TEMPERATURE = settings.FINETUNE["temperature"].default


@dataclass
class Target:
    """One tensor the student must match: fx node name, loss kind, softmax axis."""

    node: str
    kind: str
    dim: int | None = None


def spiking_outputs(twin: fx.GraphModule) -> list[Target]:
    """The tensors leaving the spiking part (core or readout) for post-processing or the
    graph output, each with the loss kind its consumer calls for."""
    info = analyze(twin).by_name()
    targets = []
    for n in twin.graph.nodes:
        if n.op in ("placeholder", "get_attr", "output") or info[n.name].part not in ("core", "readout"):
            continue
        consumers = [u for u in n.users if u.op == "output" or info[u.name].part == "post"]
        if not consumers:
            continue
        kinds = set()
        for u in consumers:
            m = twin.get_submodule(u.target) if u.op == "call_module" else None
            if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
                kinds.add(("softmax", int(m.dim)))
            elif isinstance(m, nn.Sigmoid):
                kinds.add(("sigmoid", None))
            elif u.op == "output":
                kinds.add(("output", None))
            else:
                kinds.add(("maps", None))
        kind, dim = kinds.pop() if len(kinds) == 1 else ("maps", None)
        targets.append(Target(n.name, kind, dim))
    if not targets:
        raise Onnx2SnnError("distillation: found no tensor leaving the spiking part (no activations in the model?)")
    return targets


FEATURES_AT = "output"


def neuron_inputs(twin: fx.GraphModule, at: str | None = None) -> list[str]:
    """Node names of the core activations' outputs (``at="output"``) or inputs (for feature terms)."""
    at = at or FEATURES_AT
    analysis = analyze(twin)
    nodes = {n.name: n for n in twin.graph.nodes}
    out = []
    for a in analysis.activations():
        if a.part == "core":
            arg = nodes[a.name] if at == "output" else nodes[a.name].args[0]
            if isinstance(arg, fx.Node) and arg.name not in out:
                out.append(arg.name)
    return out


def probe(twin: fx.GraphModule, names: list[str], with_outputs: bool = True) -> fx.GraphModule:
    """A GraphModule sharing ``twin``'s modules that returns (outputs..., tensors named ``names``)."""
    g = fx.Graph()
    env = {}
    out_node = None
    for n in twin.graph.nodes:
        if n.op == "output":
            out_node = n
            continue
        env[n] = g.node_copy(n, lambda a: env[a])
    by_name = {n.name: env[n] for n in twin.graph.nodes if n in env}
    outs = []
    if with_outputs:
        res = out_node.args[0]
        outs = list(res) if isinstance(res, (tuple, list)) else [res]
        outs = [env[o] if isinstance(o, fx.Node) else o for o in outs]
    g.output(tuple(outs) + tuple(by_name[k] for k in names))
    gm = fx.GraphModule(twin, g)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    gm.n_outputs = len(outs)
    return gm


class DistillLoss(nn.Module):
    """Distillation loss between a student's and a teacher's spiking-part outputs.

    Build it with :meth:`build` (teacher twin, student twin, sample inputs); call it with
    the student's probe outputs and the teacher's (both from :func:`probe`).
    ``mode="mse"`` uses the normalised squared error for every tensor (for comparison).
    """

    def __init__(self, targets: list[Target], scales: list[torch.Tensor], features: list[str],
                 feature_scales: list[torch.Tensor], temperature: float = DEFAULT_TEMPERATURE,
                 feature_weight: float = 0.0, mode: str = "auto", confidence_weighting: bool = True):
        super().__init__()
        if mode not in MODES:
            raise Onnx2SnnError(f"distillation mode must be one of {MODES}, not {mode!r}")
        if not temperature > 0:
            raise Onnx2SnnError(f"temperature must be > 0, got {temperature!r}")
        self.targets, self.features = targets, features
        self.temperature, self.feature_weight, self.mode = float(temperature), float(feature_weight), mode
        self.confidence_weighting = bool(confidence_weighting)
        for i, s in enumerate(scales):
            self.register_buffer(f"scale_{i}", s)
        for i, s in enumerate(feature_scales):
            self.register_buffer(f"fscale_{i}", s)

    @staticmethod
    def _channel_std(t: torch.Tensor) -> torch.Tensor:
        """Per-channel (dim 1) standard deviation, shaped to broadcast; floors avoid dividing by ~0."""
        if t.dim() < 2:
            s = t.float().std().reshape(())
        else:
            s = t.float().transpose(0, 1).reshape(t.shape[1], -1).std(1)
            s = s.reshape((1, -1) + (1,) * (t.dim() - 2))
        return s.clamp_min(1e-3 * float(s.max().clamp_min(1e-12)))

    @classmethod
    def build(cls, teacher_probe: fx.GraphModule, targets: list[Target], features: list[str],
              sample: torch.Tensor, **kwargs) -> "DistillLoss":
        with torch.no_grad():
            outs = teacher_probe(sample)
        n0 = teacher_probe.n_outputs
        t_outs = outs[n0:n0 + len(targets)]
        f_outs = outs[n0 + len(targets):]
        for tg, t in zip(targets, t_outs):
            if tg.kind == "output":
                tg.kind = "logits" if t.dim() == 2 else "maps"
        return cls(targets, [cls._channel_std(t) for t in t_outs], features,
                   [cls._channel_std(t) for t in f_outs], **kwargs)

    def _term(self, i: int, s: torch.Tensor, t: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        tg = self.targets[i]
        kind = "maps" if self.mode == "mse" else tg.kind
        if kind == "softmax":
            kl = F.kl_div(F.log_softmax(s, tg.dim), F.log_softmax(t, tg.dim), log_target=True,
                          reduction="none").sum(tg.dim)
            if weight is not None and self.mode == "auto" and kl.shape[-1] == weight.shape[-1] and \
                    kl.shape[0] == weight.shape[0]:
                w = weight.reshape((weight.shape[0],) + (1,) * (kl.dim() - 2) + (weight.shape[-1],))
                return (kl * w).sum() / (w.sum() * kl[0, ..., 0].numel()).clamp_min(1e-12)
            return kl.mean()
        if kind == "sigmoid":  # binary KL = BCE(s, p_t) - H(p_t), summed over the classes (dim 1)
            p = torch.sigmoid(t)
            kl = F.binary_cross_entropy_with_logits(s, p, reduction="none") - \
                F.binary_cross_entropy_with_logits(t, p, reduction="none")
            return kl.sum(1).mean() if kl.dim() > 1 else kl.mean()
        if kind == "logits":
            T = self.temperature
            return F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True,
                            reduction="batchmean") * T * T
        return (((s - t) / getattr(self, f"scale_{i}")) ** 2).mean()

    def forward(self, student: tuple, teacher: tuple) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, parts) from the probes' tensors: the targets, then the features."""
        k = len(self.targets)
        s_t, t_t = student[:k], teacher[:k]
        weight = None  # the teacher's confidence per position (e.g. anchor), from the tensors entering a sigmoid
        for tg, t in zip(self.targets, t_t):
            if tg.kind == "sigmoid" and t.dim() >= 2 and self.confidence_weighting:
                c = torch.sigmoid(t.float()).flatten(1, -2).amax(1) if t.dim() > 2 else torch.sigmoid(t.float())
                weight = c if weight is None or weight.shape != c.shape else torch.maximum(weight, c)
        terms = [self._term(i, s.float(), t.float(), weight) for i, (s, t) in enumerate(zip(s_t, t_t))]
        loss = torch.stack(terms).mean()
        parts = {"distill": float(loss.detach())}
        parts.update({f"{tg.kind}:{tg.node}": float(v.detach()) for tg, v in zip(self.targets, terms)})
        if self.feature_weight and self.features:
            s_f, t_f = student[k:], teacher[k:]
            feats = torch.stack([(((s - t) / getattr(self, f"fscale_{i}")) ** 2).mean()
                                 for i, (s, t) in enumerate(zip(s_f, t_f))]).mean()
            parts["features"] = float(feats.detach())
            loss = loss + self.feature_weight * feats
        return loss, parts


__all__ = ["DistillLoss", "Target", "spiking_outputs", "neuron_inputs", "probe", "KINDS", "MODES",
           "DEFAULT_TEMPERATURE"]

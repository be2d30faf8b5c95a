"""``import_nir(path)``: a NIR graph as a runnable PyTorch network.

Nodes become modules (Conv1d/Conv2d, Affine/Linear, Scale, Flatten, AvgPool2d, SumPool2d,
IF); a node with several incoming edges gets their sum. The graph runs multi-step like our
engine: a tensor carries time folded into the batch, ``[T*B, ...]``; nodes that no neuron
feeds (with direct encoding: the layers on the analog input) run once on ``[B, ...]``, the
output is the mean over T of each Output node.

IF semantics follow the file: files written by onnx2snn (metadata ``reset`` =
``"subtract"``) run our neuron, a unit spike when ``v >= v_threshold`` then ``v -=
v_threshold``, starting from the node's metadata ``v_init``, computed with the same
arithmetic as :class:`onnx2snn.snn.neurons.IFNeuron`; other files run NIR's IF from
``v = 0``: a spike when ``v > v_threshold``, then ``v = v_reset`` (nir >= 1.0.5) or ``v -=
v_threshold`` (files of nir <= 1.0.4, as that version's spec said).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidModelError, Onnx2SnnError
from ..graph.importer import import_onnx
from ..snn.network import poisson
from ..snn.neurons import cumsum_time, diff_time


def _t(a) -> torch.Tensor:
    """Float64 here; the network is cast to the dtype asked for at the end (exact for
    float32 files)."""
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


class NIRIF(nn.Module):
    """NIR's IF over T steps on ``[T*B, ...]`` with per-neuron ``r``, ``v_threshold``,
    ``v_reset``, ``v_init``. ``mode``: ``"onnx2snn"`` (a spike when ``v >= thr``, then
    ``v -= thr``: our neuron, in the same closed form and arithmetic as IFNeuron),
    ``"subtract"`` (nir <= 1.0.4: ``v > thr``, then ``v -= thr``) or ``"reset"`` (nir >=
    1.0.5: ``v > thr``, then ``v = v_reset``)."""

    def __init__(self, r, v_threshold, v_reset, v_init, mode: str):
        super().__init__()
        self.register_buffer("r", _t(r))
        self.register_buffer("v_threshold", _t(v_threshold))
        self.register_buffer("v_reset", _t(v_reset))
        self.register_buffer("v_init", _t(v_init))
        self.mode = mode
        self.unit_r = bool((self.r == 1).all())
        self.T = 1

    def extra_repr(self) -> str:
        return f"shape={tuple(self.v_threshold.shape)}, mode={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.T
        xs = x.reshape((T, x.shape[0] // T) + tuple(x.shape[1:]))
        if not self.unit_r:
            xs = xs * self.r.to(x)
        thr = self.v_threshold.to(x)
        if self.mode == "onnx2snn":
            # closed form of subtractive reset, as IFNeuron: the net spike count so far is
            # N_t = clamp(floor((v0 + sum_{k<=t} I_k) / thr), N_{t-1}, N_{t-1} + 1)
            u = xs / thr
            u[0] += self.v_init.to(x) / thr
            u = cumsum_time(u, out=u).floor_()
            prev = torch.zeros_like(u[0])
            for t in range(T):
                prev = torch.clamp(u[t], min=prev, max=prev + 1, out=u[t])
            return diff_time(u).reshape(x.shape)
        v = self.v_init.to(x).expand_as(xs[0]).clone()
        out = torch.empty_like(xs)
        reset = self.v_reset.to(x)
        for t in range(T):
            v = v + xs[t]
            z = v > thr
            out[t] = z.to(x)
            v = v - z.to(x) * thr if self.mode == "subtract" else torch.where(z, reset, v)
        return out.reshape(x.shape)


class Scale(nn.Module):
    """NIR Scale: ``x * scale`` element-wise over the per-sample shape."""

    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", _t(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x)


class SumPool2d(nn.Module):
    """NIR SumPool2d: window sums (average pooling without the division)."""

    def __init__(self, kernel, stride, padding):
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, divisor_override=1)


def _pair(a) -> tuple[int, ...]:
    a = np.atleast_1d(np.asarray(a)).astype(int).tolist()
    return tuple(a) if len(a) > 1 else (a[0], a[0])


def _meta(d: dict, key: str, default=None):
    v = d.get(key, default)
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO" and v.shape == ():
        v = v[()]
        return v.decode("utf8") if isinstance(v, bytes) else v
    if isinstance(v, np.generic):
        return v.item()
    return v


def _module(name: str, node, nir, mode: str) -> nn.Module | None:
    """The torch module of one NIR node (None for Input / Output)."""
    if isinstance(node, (nir.Input, nir.Output)):
        return None
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        w = _t(node.weight)
        nd = w.dim() - 2
        cls = nn.Conv1d if nd == 1 else nn.Conv2d
        pad = node.padding
        if isinstance(pad, str):
            raise InvalidModelError(f"NIR node {name!r}: padding {pad!r} is not supported; use explicit sizes")
        fix = (lambda a: tuple(np.atleast_1d(np.asarray(a)).astype(int).tolist()) * (nd if np.size(a) == 1 else 1))
        conv = cls(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), stride=fix(node.stride),
                   padding=fix(pad), dilation=fix(node.dilation), groups=int(node.groups), bias=True,
                   dtype=torch.float64)
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(_t(node.bias))
        return conv
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _t(node.weight)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine), dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(w)
            if isinstance(node, nir.Affine):
                lin.bias.copy_(_t(node.bias))
        return lin
    if isinstance(node, nir.Scale):
        return Scale(node.scale)
    if isinstance(node, nir.Flatten):
        start = int(node.start_dim) + 1 if int(node.start_dim) >= 0 else int(node.start_dim)
        end = int(node.end_dim) + 1 if int(node.end_dim) >= 0 else int(node.end_dim)
        return nn.Flatten(start, end)
    if isinstance(node, nir.AvgPool2d):
        return nn.AvgPool2d(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
    if isinstance(node, nir.SumPool2d):
        return SumPool2d(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
    if isinstance(node, nir.IF):
        thr = np.asarray(node.v_threshold)
        v_reset = getattr(node, "v_reset", None)
        v_init = (getattr(node, "metadata", None) or {}).get("v_init") if mode == "onnx2snn" else None
        return NIRIF(node.r, thr, np.zeros_like(thr) if v_reset is None else v_reset,
                     np.zeros_like(thr) if v_init is None else v_init, mode)
    return None


class NIRNetwork(nn.Module):
    """A NIR graph run over T steps; ``verify`` accepts it as the SNN.

    Attributes: ``graph`` (the ``nir.NIRGraph``), ``metadata`` (the graph's), ``config``
    (the onnx2snn conversion config it was exported from, when present), ``timesteps``,
    ``ann`` (the twin of the source ONNX stored in the file, else a stub that only knows
    the input shape), ``order`` (node names in execution order)."""

    def __init__(self, graph, modules: dict[str, nn.Module], order: list[str], preds: dict[str, list[str]],
                 static: set[str], outputs: list[str], metadata: dict, ann):
        super().__init__()
        self.graph = graph
        self.layers = nn.ModuleDict({k.replace(".", "_"): m for k, m in modules.items()})
        self._names = {k: k.replace(".", "_") for k in modules}
        self.order, self.preds, self.static, self.outputs = order, preds, static, outputs
        self.metadata = metadata
        cfg = _meta(metadata, "onnx2snn_config")
        self.config = json.loads(cfg) if isinstance(cfg, str) and cfg else {}
        self.config["nir"] = True
        self.timesteps = int(_meta(metadata, "timesteps", self.config.get("timesteps", 32)))
        self.ann = ann
        self.inputs = [n for n in order if n not in modules and not preds.get(n)]

    def neurons(self) -> dict[str, NIRIF]:
        """The IF nodes, by NIR node name."""
        return {k: self.layers[v] for k, v in self._names.items() if isinstance(self.layers[v], NIRIF)}

    def forward(self, x: torch.Tensor, timesteps: int | None = None):
        return self.run_timesteps(x, checkpoints=[int(timesteps or self.timesteps)])[0]

    def run_timesteps(self, x: torch.Tensor, checkpoints: Sequence[int]):
        """Outputs (the mean over the first T steps of each Output) at each T in
        ``checkpoints``, from one run to the largest T."""
        cps = sorted(set(int(t) for t in checkpoints))
        if not cps or cps[0] < 1:
            raise Onnx2SnnError(f"timesteps must be >= 1, got {list(checkpoints)}")
        T = cps[-1]
        for m in self.neurons().values():
            m.T = T
        B = x.shape[0]
        poisson_enc = str(_meta(self.metadata, "input_encoding", "direct")).startswith("poisson")
        vals: dict[str, torch.Tensor] = {}
        for name in self.order:
            ins = self.preds.get(name, [])
            if not ins:  # an Input
                vals[name] = poisson(x, T, int(self.config.get("seed", 0))) if poisson_enc else x
                continue
            parts = [vals[p] if name in self.static or p not in self.static else _repeat(vals[p], T) for p in ins]
            v = parts[0]
            for p in parts[1:]:
                v = v + p
            m = self._names.get(name)
            vals[name] = self.layers[m](v) if m is not None else v
        results = {t: [] for t in cps}
        for o in self.outputs:
            y = vals[o] if o not in self.static else _repeat(vals[o], T)
            sums = cumsum_time(y.reshape((T, B) + tuple(y.shape[1:])))
            for t in cps:
                results[t].append(sums[t - 1] / t)
        out = [results[int(t)] for t in checkpoints]
        return [r[0] if len(r) == 1 else tuple(r) for r in out]


def _repeat(x: torch.Tensor, T: int) -> torch.Tensor:
    return x.unsqueeze(0).expand((T,) + tuple(x.shape)).reshape((T * x.shape[0],) + tuple(x.shape[1:]))


def import_nir(source: Any, dtype: torch.dtype = torch.float32) -> NIRNetwork:
    """Read a NIR file (or a ``nir.NIRGraph``) into a runnable :class:`NIRNetwork`.

    ``net(x, timesteps=T)`` gives the mean output over T steps; ``net.run_timesteps(x,
    checkpoints=[...])`` every T from one run; ``onnx2snn.verify(net, data=...)`` scores it
    against the source ONNX stored in the file (or ``reference=``). ``dtype``: the
    precision it runs in (``torch.float64`` for files written with ``dtype="float64"``)."""
    import nir

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise InvalidModelError(f"{path}: no such file")
        try:
            graph = nir.read(path)
        except Exception as e:  # noqa: BLE001 - h5py / nir raise many types
            raise InvalidModelError(f"{path}: not a readable NIR file ({type(e).__name__}: {str(e)[:200]})") from None
        try:
            import h5py

            with h5py.File(path, "r") as f:
                written_by = f["version"][()].decode("utf8") if "version" in f else ""
        except Exception:  # noqa: BLE001
            written_by = ""
    elif isinstance(source, nir.NIRGraph):
        graph, written_by = source, getattr(nir, "version", "") or getattr(nir, "__version__", "")
    else:
        raise InvalidModelError(f"import_nir needs a NIR file path or a nir.NIRGraph, got {type(source).__name__}")
    meta = dict(graph.metadata or {})
    ours = _meta(meta, "reset") == "subtract"
    mode = "onnx2snn" if ours else "subtract" if written_by and _version_tuple(written_by) <= (1, 0, 4) else "reset"
    modules, bad = {}, []
    for name, node in graph.nodes.items():
        m = _module(name, node, nir, mode)
        if m is None and not isinstance(node, (nir.Input, nir.Output)):
            bad.append(f"{name} ({type(node).__name__})")
        elif m is not None:
            modules[name] = m
    if bad:
        raise InvalidModelError(f"NIR nodes with no onnx2snn runtime: {', '.join(bad)}. Supported: Input, Output, "
                                "Conv1d, Conv2d, Affine, Linear, Scale, Flatten, AvgPool2d, SumPool2d, IF")
    preds: dict[str, list[str]] = defaultdict(list)
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.edges:
        preds[b].append(a)
        succ[a].append(b)
    order, indeg = [], {n: len(preds[n]) for n in graph.nodes}
    ready = [n for n in graph.nodes if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for s in succ[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    if len(order) != len(graph.nodes):
        raise InvalidModelError("the NIR graph has a cycle (recurrent connections): not supported by import_nir")
    neurons = {n for n, m in modules.items() if isinstance(m, NIRIF)}
    poisson_enc = str(_meta(meta, "input_encoding", "direct")).startswith("poisson")
    static: set[str] = set()
    for n in order:  # run once on [B]: no neuron upstream and the input constant in time
        if n not in neurons and not poisson_enc and all(p in static for p in preds[n]):
            static.add(n)
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    ann = _source_twin(meta, graph)
    net = NIRNetwork(graph, modules, order, dict(preds), static, outputs, meta, ann)
    return net.to(dtype).eval().requires_grad_(False)  # an inference artifact: no autograd through the engine


class StepIF(nn.Module):
    """Our IF one timestep per call, as nirtorch's step-wise executor calls a node:
    ``(spikes, v) = m(x, v)``; a unit spike when ``v >= v_threshold``, then ``v -=
    v_threshold``, starting from the node's metadata ``v_init``."""

    def __init__(self, node):
        super().__init__()
        self.v0 = torch.as_tensor(np.asarray(node.metadata["v_init"], dtype=np.float32))
        self.thr = torch.as_tensor(np.asarray(node.v_threshold, dtype=np.float32))

    def forward(self, x, state=None):
        v = (self.v0.expand_as(x).clone() if state is None else state) + x
        z = (v >= self.thr).to(x)
        return z, v - z * self.thr


def nirtorch_node_map(nir) -> dict:
    """A node map for ``nirtorch.nir_to_torch`` (nirtorch >= 2.6) that runs a file written
    by onnx2snn with its semantics: our layer modules and :class:`StepIF` (nirtorch's default
    map leaves Affine biases unset and flattens the batch dim; see docs/guide/nir.md)."""
    layer = (lambda node: _module("n", node, nir, "onnx2snn"))
    return {**{t: layer for t in (nir.Conv2d, nir.Affine, nir.Scale, nir.Flatten, nir.AvgPool2d, nir.SumPool2d)},
            nir.IF: StepIF}


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for p in v.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _source_twin(meta: dict, graph):
    """The twin of the source ONNX stored in the metadata, else a stub with the input shape
    (``verify`` then needs ``reference=``)."""
    src = meta.get("source_onnx")
    if src is not None and np.size(src):
        return import_onnx(np.asarray(src, dtype=np.uint8).tobytes())
    shape = meta.get("input_shape")
    if shape is None:
        node = next(iter(graph.inputs.values()), None) if hasattr(graph, "inputs") else None
        shape = [1] + list(np.asarray(node.input_type["input"]).tolist()) if node is not None else None
    info = SimpleNamespace(onnx_bytes=b"", source="", input_shapes={"input": tuple(int(d) for d in shape)}
                           if shape is not None else {})
    return SimpleNamespace(onnx_info=info)


__all__ = ["import_nir", "NIRNetwork", "NIRIF"]

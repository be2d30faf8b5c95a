"""``export_nir(snn, path)``: the binary-spike form of a spiking network as a NIR graph.

The network is folded first (:func:`onnx2snn.fold_thresholds`: thresholds 1, spikes
0/1), then its graph is written node by node:

- Conv1d / Conv2d -> ``Conv1d`` / ``Conv2d`` (bias zeros when absent), Linear -> ``Affine``;
- IF neuron -> ``IF`` with per-neuron arrays ``r`` = 1, ``v_threshold`` = 1 (``v_reset`` = 0,
  left out of the file, see below) and the initial potential in the node's metadata
  ``v_init``; a neuron input bias (``onnx2snn.calibrate``) goes into the bias of
  a layer feeding it;
- a per-channel synaptic weight kept by folding (``ChannelScale``) -> ``Scale``;
- average pooling -> ``AvgPool2d`` (``pool="avg"``) or ``SumPool2d`` whose 1/k^2 goes into
  the next layer's weights (``pool="sum"``, for toolkits and chips with sum pooling only);
- Flatten -> ``Flatten``; Identity / Dropout vanish;
- a residual add -> several edges into one node (NIR sums a node's inputs);
- a Concat read by a convolution -> one convolution per input block with that block's
  slice of the weights, all feeding the next node (exact: the convolution is linear).

The readout layers (the last linear layers, which our engine runs once on time-averaged
spikes) are written per step: they are linear, so the mean over T of their per-step output
is our output. What NIR cannot express is collected over the whole graph and refused in one
:class:`NIRExportError` listing each node and the way out. The graph's metadata states
what NIR itself does not: ``dt`` = 1, reset by subtraction, the firing condition, the
initial potential, the timesteps, the input encoding, the output decoding, the producer,
and (by default) the source ONNX file, so that ``verify`` can compare the reloaded network
with it.

Versions: the files are read alike by nir 1.0.4 (whose ``IF`` has no ``v_reset`` and, by
that version's spec, resets by subtraction: what we run) and nir >= 1.0.5 (``IF`` resets to
``v_reset``, zeros when absent). ``v_reset`` (all zeros) is therefore left out of the file:
nir 1.0.4 rejects the field. The metadata states the reset either way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..errors import Onnx2SnnError
from ..graph.encoders import ENCODE_PREFIX
from ..settings import ENCODINGS, saved
from ..snn.fold import ChannelScale, fold_thresholds
from ..snn.network import SpikingNetwork
from ..snn.neurons import IFNeuron, SpikingMaxPool
from ..snn.serialize import load

FORMAT = "onnx2snn.nir/1"
NEURON_MODEL = ("IF, dt = 1: v[t] = v[t-1] + r * I[t]; a unit spike when v[t] >= v_threshold, then "
                "v[t] -= v_threshold (reset by subtraction; v_reset is not used); v[0] = v_init (node metadata)")
_AVG_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_PASS_MODULES = (nn.Identity, nn.Dropout)


class NIRExportError(Onnx2SnnError):
    """The network has parts NIR cannot express; ``.nodes`` lists (node, op, reason, way out)."""

    def __init__(self, problems: list[tuple[str, str, str, str]]):
        self.nodes = problems
        groups: dict[tuple[str, str, str], list[str]] = {}
        for name, op, reason, fix in problems:
            groups.setdefault((op, reason, fix), []).append(name)
        lines = [f"  - {op}: {reason}. Way out: {fix}.\n      {len(names)} node(s): {', '.join(names)}"
                 for (op, reason, fix), names in groups.items()]
        super().__init__(f"cannot export to NIR: {len(problems)} node(s) have no NIR form:\n" + "\n".join(lines)
                         + "\nNIR-compatible conversion: onnx2snn.convert(..., signed_relu=False, signed_ibt=False, "
                         "levels=1) of a model with ReLU activations, average (not max) pooling, no upsampling, "
                         "and only linear layers after the last activation.")


@dataclass
class _Value:
    """What an fx value is in NIR terms: the sum of the outputs of ``terms`` (times
    ``factor``, a pending scale of a sum-pool), or a channel concatenation of ``blocks``."""

    terms: list[str] = field(default_factory=list)
    blocks: list["_Value"] | None = None
    channels: int = 0
    shape: tuple[int, ...] = ()
    factor: float = 1.0


class _Writer:
    def __init__(self, gm: fx.GraphModule, pool: str, dtype: np.dtype):
        self.gm = gm
        self.pool = pool
        self.dtype = dtype
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.problems: list[tuple[str, str, str, str]] = []
        self.values: dict[fx.Node, _Value] = {}
        self.producer: dict[str, fx.Node] = {}   # NIR node -> the fx node it was written for
        import nir

        self.nir = nir
        self.has_v_reset = "v_reset" in {f.name for f in dataclasses.fields(nir.IF)}

    # -- helpers ---------------------------------------------------------------------
    def arr(self, t) -> np.ndarray:
        return np.asarray(t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else t, dtype=self.dtype)

    def problem(self, node: fx.Node, op: str, reason: str, fix: str) -> None:
        self.problems.append((node.name, op, reason, fix))

    def add(self, name: str, nir_node, inputs: list[str]) -> None:
        self.nodes[name] = nir_node
        for src in inputs:
            if (src, name) in self.edges:
                raise _Refuse("the same value enters twice (x + x)", "write it as one layer with doubled weights")
            self.edges.append((src, name))

    def materialize(self, v: _Value, name: str) -> _Value:
        """A value with a pending sum-pool factor, as a Scale node (for consumers that
        cannot absorb the factor in their weights)."""
        if v.factor == 1.0:
            return v
        scale = np.full(v.shape, v.factor, dtype=self.dtype)
        self.add(name + "_scale", self.nir.Scale(scale=scale), v.terms)
        return _Value([name + "_scale"], channels=v.channels, shape=v.shape)

    @staticmethod
    def shape(node: fx.Node) -> tuple[int, ...]:
        s = node.meta.get("shape")
        if s is None:
            raise _Refuse("its shape is unknown", "import the model with a static input shape")
        return tuple(int(d) for d in s[1:])

    def module(self, node: fx.Node):
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    # -- the walk --------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            try:
                self.visit(node)
            except _Refuse as e:
                op = type(self.module(node)).__name__ if node.op == "call_module" else getattr(
                    node.target, "__name__", str(node.target))
                self.problem(node, op, e.reason, e.fix)
                # keep walking with a stand-in of the right shape, to list every problem
                shape = tuple(int(d) for d in node.meta["shape"][1:]) if node.meta.get("shape") else ()
                self.values[node] = _Value([f"!{node.name}"], channels=shape[0] if shape else 0, shape=shape)

    def inputs(self, node: fx.Node) -> list[_Value]:
        return [self.values[a] for a in node.all_input_nodes if a in self.values]

    def visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            shape = self.shape(node)
            self.nodes[node.name] = self.nir.Input(input_type={"input": np.array(shape)})
            self.values[node] = _Value([node.name], channels=shape[0] if shape else 0, shape=shape)
            return
        if node.op == "get_attr":
            return
        if node.op == "output":
            outs = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
            for k, o in enumerate(outs):
                name = "output" if len(outs) == 1 else f"output_{k}"
                v = self.values.get(o) if isinstance(o, fx.Node) else None
                if v is None:
                    raise _Refuse("an output of the network is a constant", "return layer outputs only")
                if v.blocks is not None:
                    raise _Refuse("an output of the network is a concatenation: NIR has no concat node",
                                  "return the concatenated tensors as separate outputs")
                v = self.materialize(v, name)
                self.add(name, self.nir.Output(output_type={"output": np.array(v.shape)}), v.terms)
            return
        args = self.inputs(node)
        m = self.module(node)
        if isinstance(m, IFNeuron):
            return self.neuron(node, m, args[0])
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            return self.conv(node, m, args[0])
        if isinstance(m, nn.Linear):
            return self.affine(node, m, args[0])
        if isinstance(m, ChannelScale):
            return self.scale(node, m, args[0])
        if isinstance(m, _PASS_MODULES):
            self.values[node] = args[0]
            return
        if isinstance(m, _AVG_MODULES) or (node.op == "call_function" and node.target in (
                F.avg_pool2d, F.adaptive_avg_pool2d)):
            return self.avgpool(node, m, args[0])
        if isinstance(m, nn.Flatten) or (node.op == "call_function" and node.target is torch.flatten):
            start = m.start_dim if m is not None else node.kwargs.get("start_dim", node.args[1] if len(
                node.args) > 1 else 0)
            end = m.end_dim if m is not None else node.kwargs.get("end_dim", node.args[2] if len(
                node.args) > 2 else -1)
            return self.flatten(node, args[0], start, end)
        if node.op == "call_function" and node.target in (operator.add, torch.add):
            return self.residual(node, args)
        if node.op == "call_function" and node.target is torch.cat:
            return self.concat(node, args)
        if node.op == "call_function" and node.target in (operator.getitem, torch.split, torch.chunk):
            raise _Refuse("a channel split / slice: NIR has no slicing node",
                          "give each branch its own convolution instead of splitting one output (e.g. C2f's cv1 as "
                          "two 1x1 convolutions)")
        if isinstance(m, (SpikingMaxPool, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            raise _Refuse("max-pooling has no NIR node (the spiking max-pool passes analog increments, not spikes)",
                          "replace it by average pooling before conversion (onnx2snn.replace_maxpool(model, "
                          "out_path), then onnx2snn.finetune)")
        if isinstance(m, nn.Upsample) or (node.op == "call_function" and node.target is F.interpolate):
            raise _Refuse("upsampling has no NIR node, and no exact rewrite: NIR has no transposed convolution and "
                          "no reshape after an Affine",
                          "design the model without upsampling (no top-down neck), or run that part off-chip on "
                          "the averaged outputs")
        what = type(m).__name__ if m is not None else getattr(node.target, "__name__", str(node.target))
        raise _Refuse(f"{what} has no NIR form", "remove it from the spiking part, or end the exported network before "
                      "it and apply it to the averaged outputs yourself")

    # -- node kinds ------------------------------------------------------------------
    def single(self, v: _Value, what: str) -> _Value:
        if v.blocks is not None:
            raise _Refuse(f"a concatenation feeds a {what}", "only a convolution can read a concatenation in NIR "
                          "(its weights are split per block)")
        return v

    def neuron(self, node: fx.Node, m: IFNeuron, v: _Value) -> None:
        if m.two_sided and node.name.startswith(ENCODE_PREFIX):
            raise _Refuse("a spike encoder before a weight layer that reads an analog value (two-sided, multi-level "
                          "spikes have no NIR form)", "convert(..., encode_analog='off')")
        if m.alpha:
            raise _Refuse("IBT neuron (LeakyReLU / PReLU): spikes of -1 have no NIR form",
                          "train the model with ReLU activations")
        if m.signed:
            raise _Refuse("signed IF neuron (takes spikes back with -1 spikes): NIR spikes are unit events",
                          "convert(..., signed_relu=False)")
        if m.levels > 1:
            raise _Refuse(f"multi-level firing (up to {m.levels} spikes per step): NIR spikes are unit events",
                          "convert(..., levels=1)")
        v = self.materialize(self.single(v, "neuron"), node.name)
        shape = self.shape(node)
        c = shape[0] if shape else 1
        theta = m.theta.detach().double().cpu()
        if not bool((theta == 1).all()):
            raise _Refuse("threshold is not 1 after folding", "export the folded network (onnx2snn.fold_thresholds)")
        if m.use_bias and bool(m.bias.abs().sum() > 0):
            self.absorb_bias(node, v, m.bias.detach().double().cpu())
        v_init = _per_neuron(m.v_init.detach().double().cpu(), c, shape)
        ones = np.ones(shape, dtype=self.dtype)
        kw = {"v_reset": np.zeros(shape, dtype=self.dtype)} if self.has_v_reset else {}
        nir_if = self.nir.IF(r=ones, v_threshold=ones.copy(), metadata={"v_init": v_init.astype(self.dtype)}, **kw)
        self.add(node.name, nir_if, v.terms)
        self.values[node] = _Value([node.name], channels=c, shape=shape)

    def absorb_bias(self, node: fx.Node, v: _Value, bias: torch.Tensor) -> None:
        """Add a neuron's per-channel input bias to a layer that feeds only it."""
        for t in v.terms:
            carrier = self.nodes.get(t)
            src = self.producer.get(t)
            if isinstance(carrier, (self.nir.Conv1d, self.nir.Conv2d, self.nir.Affine)) and src is not None and \
                    len(src.users) == 1:
                carrier.bias = carrier.bias + self.arr(bias.expand(carrier.bias.shape[0]))
                return
        raise _Refuse("the neuron's input bias (from onnx2snn.calibrate) has no layer of its own to carry it",
                      "calibrate with method='potential', or export before calibrating")

    def conv(self, node: fx.Node, m: nn.Module, v: _Value) -> None:
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise _Refuse(f"padding mode {m.padding_mode!r} / {m.padding!r}", "use zero padding with explicit sizes")
        nd = 1 if isinstance(m, nn.Conv1d) else 2
        shape = self.shape(node)
        w = m.weight.detach().double().cpu()
        b = m.bias.detach().double().cpu() if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        blocks = v.blocks if v.blocks is not None else [v]
        if len(blocks) > 1 and m.groups != 1:
            raise _Refuse("a grouped convolution reads a concatenation", "use groups=1 after a Concat")
        names, start = [], 0
        for k, blk in enumerate(blocks):
            c = blk.channels
            wk = w[:, start:start + c] * blk.factor
            start += c
            name = node.name if len(blocks) == 1 else f"{node.name}_block{k}"
            bias = b if k == 0 else torch.zeros_like(b)
            in_shape = blk.shape[1:]
            cls = self.nir.Conv1d if nd == 1 else self.nir.Conv2d
            conv = cls(input_shape=in_shape[0] if nd == 1 else tuple(in_shape), weight=self.arr(wk),
                       stride=_tup(m.stride, nd), padding=_tup(m.padding, nd), dilation=_tup(m.dilation, nd),
                       groups=int(m.groups), bias=self.arr(bias))
            self.add(name, conv, blk.terms)
            self.producer[name] = node
            names.append(name)
        self.values[node] = _Value(names, channels=shape[0], shape=shape)

    def affine(self, node: fx.Node, m: nn.Linear, v: _Value) -> None:
        v = self.single(v, "linear layer")
        if len(v.shape) != 1:
            raise _Refuse(f"a linear layer on a {len(v.shape) + 1}-D tensor", "flatten its input first")
        w = m.weight.detach().double().cpu() * v.factor
        b = m.bias.detach().double().cpu() if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        self.add(node.name, self.nir.Affine(weight=self.arr(w), bias=self.arr(b)), v.terms)
        self.producer[node.name] = node
        self.values[node] = _Value([node.name], channels=int(w.shape[0]), shape=(int(w.shape[0]),))

    def scale(self, node: fx.Node, m: ChannelScale, v: _Value) -> None:
        v = self.single(v, "synaptic scale")
        shape = self.shape(node)
        s = _per_neuron(m.scale.detach().double().cpu(), shape[0], shape) * v.factor
        self.add(node.name, self.nir.Scale(scale=s.astype(self.dtype)), v.terms)
        self.values[node] = _Value([node.name], channels=shape[0], shape=shape)

    def avgpool(self, node: fx.Node, m, v: _Value) -> None:
        v = self.single(v, "pooling layer")
        in_shape, shape = v.shape, self.shape(node)
        if len(in_shape) != 3:
            raise _Refuse("NIR pools in 2-D only", "use 2-D average pooling")
        if m is None:
            raise _Refuse("average pooling as a function call", "use an nn.AvgPool2d module")
        if isinstance(m, nn.AdaptiveAvgPool2d):
            if in_shape[1] % shape[1] or in_shape[2] % shape[2]:
                raise _Refuse(f"adaptive pooling {in_shape[1:]} -> {shape[1:]} has uneven windows",
                              "use an input size divisible by the output size")
            kernel = stride = (in_shape[1] // shape[1], in_shape[2] // shape[2])
        else:
            pad = _tup(m.padding, 2)
            if any(pad) or m.ceil_mode or m.divisor_override:
                raise _Refuse("average pooling with padding / ceil_mode / divisor_override",
                              "use unpadded average pooling")
            kernel, stride = _tup(m.kernel_size, 2), _tup(m.stride or m.kernel_size, 2)
        k = np.array(kernel)
        st = np.array(stride)
        if self.pool == "avg":
            self.add(node.name, self.nir.AvgPool2d(kernel_size=k, stride=st, padding=np.array([0, 0])), v.terms)
            factor = v.factor
        else:  # sum pooling; 1 / window goes into the next layer (or a Scale node)
            self.add(node.name, self.nir.SumPool2d(kernel_size=k, stride=st, padding=np.array([0, 0])), v.terms)
            factor = v.factor / float(k.prod())
        self.values[node] = _Value([node.name], channels=shape[0], shape=shape, factor=factor)

    def flatten(self, node: fx.Node, v: _Value, start: int, end: int) -> None:
        v = self.single(v, "flatten")
        if start != 1 or end != -1:
            raise _Refuse(f"flatten({start}, {end}) touches the batch dim or keeps trailing dims",
                          "flatten from dim 1 to the end")
        shape = self.shape(node)
        if len(v.shape) == 1:
            self.values[node] = v
            return
        self.add(node.name, self.nir.Flatten(input_type={"input": np.array(v.shape)}, start_dim=0, end_dim=-1),
                 v.terms)
        self.values[node] = _Value([node.name], channels=shape[0], shape=shape, factor=v.factor)

    def residual(self, node: fx.Node, args: list[_Value]) -> None:
        if len(args) != 2 or len(node.all_input_nodes) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise _Refuse("an add with a constant or a scaled operand", "only tensor + tensor is a fan-in")
        a, b = (self.single(x, "residual add") for x in args)
        if a.shape != b.shape:
            raise _Refuse(f"an add with broadcasting {a.shape} + {b.shape}", "add tensors of equal shape")
        if a.factor != b.factor:
            a, b = self.materialize(a, node.name + "_a"), self.materialize(b, node.name + "_b")
        self.values[node] = _Value(a.terms + b.terms, channels=a.channels, shape=a.shape, factor=a.factor)

    def concat(self, node: fx.Node, args: list[_Value]) -> None:
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if dim != 1:
            raise _Refuse(f"concat along dim {dim}", "concatenate channels (dim 1)")
        blocks = []
        for a in args:
            blocks.extend(a.blocks if a.blocks is not None else [a])
        shape = self.shape(node)
        self.values[node] = _Value([], blocks=blocks, channels=shape[0], shape=shape)


class _Refuse(Exception):
    def __init__(self, reason: str, fix: str):
        super().__init__(reason)
        self.reason, self.fix = reason, fix


def _tup(x, n: int) -> tuple[int, ...]:
    return tuple(int(a) for a in x) if isinstance(x, (tuple, list)) else (int(x),) * n


def _per_neuron(t: torch.Tensor, channels: int, shape: tuple[int, ...]) -> np.ndarray:
    """A scalar or per-channel [C] tensor as a per-neuron array of ``shape``."""
    t = t.reshape(-1)
    if t.numel() == 1:
        return np.full(shape, float(t), dtype=np.float64)
    return t.reshape((channels,) + (1,) * (len(shape) - 1)).expand(shape).numpy().copy()


def export_nir(snn: "SpikingNetwork | str | os.PathLike", path: "str | os.PathLike", pool: str = "avg",
               dtype: str = "float32", include_source: bool = True):
    """Write ``snn`` (a SpikingNetwork or a ``.snn.pt`` file) as a NIR graph to ``path``
    (HDF5, read with ``nir.read``); returns the ``nir.NIRGraph``.

    Args:
        pool: ``"avg"`` writes average pooling as ``AvgPool2d``; ``"sum"`` as ``SumPool2d``
            with the 1/k^2 in the next layer's weights (Speck / sinabs pool by sums).
        dtype: ``"float32"`` (default) or ``"float64"`` weights.
        include_source: store the source ONNX file in the graph metadata (``source_onnx``,
            bytes as uint8), so that ``onnx2snn.verify(onnx2snn.import_nir(path), ...)`` can
            compare the reloaded network with it.

    Raises :class:`NIRExportError` listing every node NIR cannot express and the way out.
    """
    import nir

    if pool not in ("avg", "sum"):
        raise Onnx2SnnError(f"pool must be 'avg' or 'sum', not {pool!r}")
    if dtype not in ("float32", "float64"):
        raise Onnx2SnnError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    if isinstance(snn, (str, os.PathLike)):
        snn = load(snn)
    if not isinstance(snn, SpikingNetwork):
        raise Onnx2SnnError(f"export_nir needs a SpikingNetwork (from onnx2snn.convert or onnx2snn.load), got "
                            f"{type(snn).__name__}")
    config = dict(snn.config)
    if saved(config, "encoding") not in ENCODINGS:
        raise Onnx2SnnError(f"unknown input encoding {config.get('encoding')!r}")
    folded = fold_thresholds(snn)
    writer = _Writer(folded.rewritten, pool, np.dtype(dtype))
    writer.run()
    if writer.problems:
        raise NIRExportError(writer.problems)
    v_init = saved(folded.config, "v_init")
    info = snn.ann.onnx_info
    meta: dict[str, Any] = {
        "format": FORMAT,
        "producer": "onnx2snn",
        "producer_version": __version__,
        "nir_version": getattr(nir, "version", getattr(nir, "__version__", "")),
        "dt": 1.0,
        "neuron_model": NEURON_MODEL,
        "reset": "subtract",
        "fire_condition": "v >= v_threshold",
        "spikes": "unit events (0/1); thresholds folded into the weights",
        "initial_potential": "node metadata v_init (absolute, v_threshold = 1)" + (
            f"; {float(v_init)} for every neuron" if isinstance(v_init, (int, float)) else ""),
        "timesteps": int(folded.timesteps),
        "input_encoding": "direct: the analog input at every step" if saved(config, "encoding") == "direct"
        else f"poisson: Bernoulli spikes of the input clipped to [0, 1], seed {saved(config, 'seed')}",
        "output_decoding": "mean over the timesteps of each Output (membrane-potential readout)",
        "pool": pool,
        "onnx2snn_config": json.dumps(config, default=str),
        "source_onnx_sha256": hashlib.sha256(bytes(info.onnx_bytes)).hexdigest() if info.onnx_bytes else "",
        "input_shape": np.array(next(iter(info.input_shapes.values())), dtype=np.int64),
    }
    if include_source and info.onnx_bytes:
        meta["source_onnx"] = np.frombuffer(bytes(info.onnx_bytes), dtype=np.uint8)
    try:
        graph = nir.NIRGraph(nodes=writer.nodes, edges=writer.edges, metadata=meta)
    except (ValueError, AssertionError) as e:  # a bug of ours: the graph's types do not line up
        raise Onnx2SnnError(f"export_nir built an inconsistent NIR graph ({e}); please report it") from None
    nir.write(os.fspath(path), graph)
    _drop_v_reset(os.fspath(path), [k for k, n in writer.nodes.items() if isinstance(n, nir.IF)])
    return graph


def _drop_v_reset(path: str, if_nodes: list[str]) -> None:
    """Remove the IF nodes' ``v_reset`` datasets (all zeros): nir 1.0.4 rejects the field,
    and nir >= 1.0.5 reads a missing one as zeros, so both read the same graph."""
    import h5py

    with h5py.File(path, "r+") as f:
        for k in if_nodes:
            key = f"node/nodes/{k}/v_reset"
            if key in f:
                del f[key]


__all__ = ["export_nir", "NIRExportError", "FORMAT", "NEURON_MODEL"]

"""Graphs that place every kind of op the engine time-averages between neurons, with the batch
on axis 0, 1 or 2, and the check every one of them must pass (tests/test_layouts.py).

Two sources:
- the ONNX backend node tests (the generators in the ``onnx`` wheel): each single-node case with
  a float input of rank >= 2 becomes ``X -> Transpose (batch to axis p) -> Relu -> the node ->
  Relu``, its other inputs baked as initializers, the batch the test input's axis p;
- torch modules: ``nn.MultiheadAttention`` in both layouts, softmax over every axis, LayerNorm /
  GroupNorm over different axes, batched MatMul, Div / Sqrt / Pow / Log, Transpose and Reshape
  around them (one that puts the batch inside another axis, ``[N, B, D] -> [N * B, D]``).

:func:`check` converts a case and asserts the engine's promise: chunked == one-shot == step
mode (relative difference <= 1e-6), analog == twin (<= 1e-5), outputs finite where the ANN's
are; with ``full`` also that verify runs and save / load gives the same outputs. A case may
instead be refused with an error of ours (an op with no spiking form, a graph tied to its batch,
a layout the engine cannot follow); never a foreign exception, never a silent difference.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import onnx2snn
from onnx2snn.errors import Onnx2SnnError

T = 6
CHUNK_DIFF, ANALOG_DIFF = 1e-6, 1e-5


# -- ONNX node tests ---------------------------------------------------------------------------
def node_cases() -> "dict[str, tuple]":
    """name -> (case, batch axis) for every usable node test and batch axis 0 / 1 / 2."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    out = {}
    for c in cases:
        m = c.model
        if len(m.graph.node) != 1 or not c.data_sets or m.graph.node[0].domain not in ("", "ai.onnx"):
            continue
        ins, outs = c.data_sets[0]
        if not ins or not isinstance(ins[0], np.ndarray) or ins[0].dtype != np.float32 or ins[0].ndim < 2:
            continue
        if not isinstance(outs[0], np.ndarray) or outs[0].dtype != np.float32 or outs[0].ndim != ins[0].ndim:
            continue
        if not all(isinstance(v, np.ndarray) for v in ins):
            continue
        for p in range(min(3, ins[0].ndim)):
            out[f"{c.name}[batch@{p}]"] = (c, p)
    return out


def build_node_case(case, p: int) -> "tuple[bytes, torch.Tensor]":
    """The wrapped model (see the module docstring) and its input, batch first."""
    from onnx import TensorProto, helper, numpy_helper

    m = case.model
    node = m.graph.node[0]
    ins, outs = case.data_sets[0]
    x = np.moveaxis(ins[0], p, 0)
    gi = m.graph.input
    inits = [numpy_helper.from_array(np.asarray(v), gi[k].name) for k, v in enumerate(ins) if k > 0]
    rank = x.ndim
    perm = list(range(1, rank))
    perm.insert(p, 0)  # batch-first input -> the batch on axis p, the node's own layout
    X = helper.make_tensor_value_info("X_wrapped", TensorProto.FLOAT, ["batch"] + list(x.shape[1:]))
    nodes = [helper.make_node("Transpose", ["X_wrapped"], ["Xt_wrapped"], perm=perm, name="to_layout"),
             helper.make_node("Relu", ["Xt_wrapped"], [gi[0].name], name="relu_in"), node,
             helper.make_node("Relu", [node.output[0]], ["Y_wrapped"], name="relu_out")]
    shape = list(outs[0].shape)
    shape[p] = "batch"
    Y = helper.make_tensor_value_info("Y_wrapped", TensorProto.FLOAT, shape)
    g = helper.make_graph(nodes, "wrapped", [X], [Y], inits)
    model = helper.make_model(g, opset_imports=m.opset_import, ir_version=m.ir_version)
    return model.SerializeToString(), torch.as_tensor(np.ascontiguousarray(x))


# -- torch modules -----------------------------------------------------------------------------
N, D = 5, 8


def _to(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, N, D] -> the batch on axis p."""
    return x if p == 0 else x.transpose(0, 1) if p == 1 else x.permute(1, 2, 0)


def _back(x: torch.Tensor, p: int) -> torch.Tensor:
    return x if p == 0 else x.transpose(0, 1) if p == 1 else x.permute(2, 0, 1)


class Block(nn.Module):
    """Linear -> ReLU -> (batch to axis p) -> op -> (back) -> ReLU -> Linear, on [B, N, D]."""

    def __init__(self, op, p: int):
        super().__init__()
        self.op, self.p = op, p
        self.fc1, self.g, self.fc2 = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        h = _back(self.op(self, _to(h, self.p), self.p), self.p)
        return self.fc2(F.relu(h)).flatten(1)


class MHA(nn.Module):
    """nn.MultiheadAttention in its default [N, B, D] layout or batch first, with LayerNorm."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.batch_first = batch_first
        self.fc1, self.ln, self.fc2 = nn.Linear(D, D), nn.LayerNorm(D), nn.Linear(D, 3)
        self.attn = nn.MultiheadAttention(D, 2, batch_first=batch_first)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        s = h if self.batch_first else h.transpose(0, 1)
        a, _ = self.attn(s, s, s, need_weights=False)
        a = a if self.batch_first else a.transpose(0, 1)
        return self.fc2(F.relu(self.ln(h + a))).flatten(1)


def _other(m, h, p):  # a second computed tensor in the same layout
    return _to(F.relu(m.g(_back(h, p))), p)


OPS = {
    "softmax": lambda d: (lambda m, h, p: h * torch.softmax(h, d)),
    "layernorm": lambda d: (lambda m, h, p: (h - h.mean(d, keepdim=True)) /
                            torch.sqrt(h.var(d, keepdim=True, unbiased=False) + 1e-5)),
    "matmul": lambda d: _attention,
    "div": lambda d: (lambda m, h, p: h / (_other(m, h, p) + 0.5)),
    "sqrt_pow": lambda d: (lambda m, h, p: torch.sqrt(h + 1) * torch.pow(_other(m, h, p), 2)),
    "log": lambda d: (lambda m, h, p: torch.log(h + 1)),
    "silu_gelu": lambda d: (lambda m, h, p: F.silu(h) + F.gelu(_other(m, h, p))),
}


def _attention(m, h, p):
    """Two-head attention as batched MatMuls whose leading dims hold the batch: [B, 2, N, 4]
    (batch first) or [2, B, N, 4] (the batch on axis 1), from h in layout p."""
    q, v = _back(h, p), _back(_other(m, h, p), p)  # [B, N, D]
    q, v = (t.reshape(-1, N, 2, D // 2).permute(0, 2, 1, 3) for t in (q, v))  # [B, 2, N, 4]
    if p:
        q, v = q.transpose(0, 1), v.transpose(0, 1)  # [2, B, N, 4]
    a = torch.softmax(q @ q.transpose(-1, -2), -1) @ v
    a = a.transpose(0, 1) if p else a
    return _to(a.permute(0, 2, 1, 3).reshape(-1, N, D), p)


def _merged(m, h, p):
    """[N, B, D] -> [N * B, D] (the batch inside another axis) -> LayerNorm rows -> back."""
    return F.layer_norm(h.reshape(-1, D), (D,)).reshape(N, -1, D)


def _groupnorm(m, h, p):
    """GroupNorm over the feature axis of [B, N, D] (channels D), batch first."""
    return F.group_norm(h.transpose(1, 2), 2).transpose(1, 2)


def module_cases() -> "dict[str, tuple]":
    """name -> (model factory, input shape)."""
    out = {}
    for p in (0, 1, 2):
        for name, make in OPS.items():
            for d in ((0, 1, 2) if name in ("softmax", "layernorm") else (None,)):  # over every axis
                label = name if d is None else f"{name}(axis {d})"
                out[f"{label}[batch@{p}]"] = (lambda make=make, d=d, p=p: Block(make(d), p), (2, N, D))
    out["reshape_merges_batch[batch@1]"] = (lambda: Block(_merged, 1), (2, N, D))
    out["groupnorm[batch@0]"] = (lambda: Block(_groupnorm, 0), (2, N, D))
    out["mha(batch_first=False)"] = (lambda: MHA(False), (2, N, D))
    out["mha(batch_first=True)"] = (lambda: MHA(True), (2, N, D))
    return out


def build_module_case(factory, shape, folder) -> "tuple[str, torch.Tensor]":
    """The model exported (dynamic batch) into ``folder``, and 24 inputs."""
    torch.manual_seed(0)
    model = factory().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = onnx2snn.export_onnx(model, torch.rand(*shape), str(folder / "case.onnx"))
    g = torch.Generator().manual_seed(1)
    return path, torch.rand((24,) + tuple(shape[1:]), generator=g)


# -- the check ---------------------------------------------------------------------------------
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return float("inf")
    m = torch.isfinite(a)
    if not m.any():
        return 0.0
    return float((a[m] - b[m]).abs().max() / max(1e-12, float(b[m].abs().max())))


def check(model: "bytes | str", x: torch.Tensor, full: bool = False, tmp=None) -> str:
    """Convert and run one case; returns "refused: <error class>" or "ran (<time-averaged ops>)".
    Raises AssertionError on a difference, and lets any foreign exception through."""
    calib = torch.cat([x, x.flip(0)]) if len(x) < 16 else x
    try:
        snn = onnx2snn.convert(model, calib, timesteps=T, progress=False)
    except Onnx2SnnError as e:
        return f"refused: {type(e).__name__}"
    xs = x[:4]
    with torch.no_grad():
        one = snn(xs, timesteps=T)
        for chunk in (1, 4):
            d = _rel(snn(xs, timesteps=T, chunk=chunk), one)
            assert d <= CHUNK_DIFF, f"chunk={chunk} differs from one-shot by {d:.3g}"
        snn.reset()
        for _ in range(T):
            step = snn.step(xs)
        d = _rel(step, one)
        assert d <= CHUNK_DIFF, f"step mode differs from one-shot by {d:.3g}"
        ann = snn.ann(xs)
        assert torch.equal(torch.isfinite(one), torch.isfinite(ann)), "non-finite outputs where the ANN's are finite"
        snn.set_analog(True)
        d = _rel(snn(xs), ann)
        snn.set_analog(False)
        assert d <= ANALOG_DIFF, f"analog differs from the twin by {d:.3g}"
    if full:
        again = onnx2snn.load(snn.save(tmp / "case.snn.pt"))
        with torch.no_grad():
            assert torch.equal(again(xs, timesteps=T), one), "save / load changed the outputs"
        rep = onnx2snn.verify(snn, data=x, timesteps=[1, 2, T], progress=False)
        assert rep.layers["ops"]["snn"][T]["energy_pj"] > 0
    return f"ran ({', '.join(sorted({m.op_name for m in snn.averaged_ops().values()}))})"

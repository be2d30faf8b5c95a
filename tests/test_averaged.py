"""Time-averaged operators: the running output average equals the op of the running input
averages at every step; chunks, step mode and save / load give the same numbers; the
re-encoding neuron; verify counts their float work."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onnx2snn
from onnx2snn.graph import functional as OF
from onnx2snn.snn.averaged import TimeAveraged, _Slot
from onnx2snn.snn.neurons import IFNeuron

T, B = 12, 3
W = torch.randn(6)  # a constant (weight) input

UNARY = {
    "SiLU": nn.SiLU(), "GELU(erf)": nn.GELU(), "GELU(tanh)": nn.GELU(approximate="tanh"), "HardSwish": nn.Hardswish(),
    "HardSigmoid": nn.Hardsigmoid(), "Sigmoid": nn.Sigmoid(), "Tanh": nn.Tanh(), "Mish": nn.Mish(),
    "Softplus": nn.Softplus(), "ELU": nn.ELU(), "Softmax": nn.Softmax(-1), "LayerNorm": nn.LayerNorm(6),
    "GroupNorm": nn.GroupNorm(2, 4), "InstanceNorm": lambda x: OF.instance_norm(x, torch.ones(4), torch.zeros(4), 1e-5),
    "RMSNorm": lambda x: OF.rms_norm(x, 3, 1e-6, torch.ones(6)), "Sqrt": lambda x: torch.sqrt(x.abs() + 1),
    "Pow": lambda x: torch.pow(x, 2), "Reciprocal": lambda x: torch.reciprocal(x.abs() + 1),
    "Div(activation)": lambda x: 1.0 / (x.abs() + 2), "ReduceMax": lambda x: torch.amax(x, dim=-1, keepdim=True),
    "ReduceMean": lambda x: torch.mean(x, dim=-1, keepdim=True),
}
BINARY = {"Mul": torch.mul, "Div": lambda a, b: a / (b.abs() + 1), "MatMul": lambda a, b: a @ b.transpose(-1, -2),
          "gate": lambda a, b: a * torch.sigmoid(b)}


def _series(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, 4, 5, 6, generator=g)


def _check_running_average(mod, xs, fn):
    """mean_{k<=t} y_k == fn(mean_{k<=t} x_k) at every t, for [T, B, ...] inputs ``xs``."""
    mod.T = T
    y = mod(*[x.reshape((T * B,) + tuple(x.shape[2:])) for x in xs])
    y = y.reshape((T, B) + tuple(y.shape[1:]))
    for t in range(1, T + 1):
        want = fn(*[x[:t].mean(0) for x in xs])
        got = y[:t].sum(0) / t
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * t), (t, float((got - want).abs().max()))


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_op_is_exact_at_every_step(name):
    fn = UNARY[name]
    x = _series()
    if name == "GroupNorm" or name == "InstanceNorm":
        x = x[..., :5]  # [T, B, 4, 5, 5]: channels 4
    mod = TimeAveraged(fn, (_Slot(0),), {}, ["dynamic"], name)
    _check_running_average(mod, [x], fn)


@pytest.mark.parametrize("name", list(BINARY))
def test_product_of_two_time_varying_tensors_is_exact(name):
    fn = BINARY[name]
    a, b = _series(1), _series(2)
    mod = TimeAveraged(fn, (_Slot(0), _Slot(1)), {}, ["dynamic", "dynamic"], name)
    _check_running_average(mod, [a, b], fn)


def test_constant_and_static_inputs_are_not_averaged():
    """A weight (constant) and a value from the static prefix (the same at every step) enter f
    as they are; only dynamic inputs are averaged."""
    x, s = _series(3), torch.randn(B, 4, 5, 6)
    xs = x.reshape(T * B, 4, 5, 6)
    static = s.unsqueeze(0).expand(T, *s.shape).reshape(T * B, 4, 5, 6)
    mod = TimeAveraged(lambda a, b, w: F.layer_norm(a * b, (6,), w), (_Slot(0), _Slot(1), _Slot(2)), {},
                       ["dynamic", "static", "constant"])
    mod.T = T
    y = mod(xs, static, W).reshape(T, B, 4, 5, 6)
    for t in (1, 5, T):
        want = F.layer_norm(x[:t].mean(0) * s, (6,), W)
        assert torch.allclose(y[:t].mean(0), want, atol=1e-5 * t)


def test_chunks_and_step_mode_equal_one_call():
    fn = nn.Softmax(-1)
    x = _series(4)
    one = TimeAveraged(fn, (_Slot(0),), {}, ["dynamic"])
    one.T = T
    ref = one(x.reshape(T * B, 4, 5, 6))
    chunked = TimeAveraged(fn, (_Slot(0),), {}, ["dynamic"])
    chunked.carry = True
    parts = []
    for t0, n in ((0, 5), (5, 4), (9, 3)):
        chunked.T = n
        parts.append(chunked(x[t0:t0 + n].reshape(n * B, 4, 5, 6)))
    assert torch.equal(torch.cat(parts), ref)
    stepped = TimeAveraged(fn, (_Slot(0),), {}, ["dynamic"])
    stepped.step_mode = True
    steps = torch.cat([stepped(x[t]) for t in range(T)])
    assert torch.equal(steps, ref)
    stepped.reset()
    assert stepped.state is None


@pytest.mark.parametrize("levels", [1, 2])
def test_two_sided_neuron_rounds_both_signs(levels):
    """Constant input x: after T steps the mean is theta / T * round(T x / theta), clipped to
    [-levels theta, levels theta] (v_init = 1/2 rounds half up)."""
    theta = torch.tensor([0.5, 1.0])
    x = (torch.linspace(-2.5, 2.5, 101) + 0.0123).reshape(1, 1, -1)  # off the rounding ties.expand(1, 2, -1).contiguous()
    n = IFNeuron(theta, signed=True, two_sided=True, activation=nn.Identity(), levels=levels)
    for steps in (1, 3, 8):
        n.T = steps
        out = n(x.expand(steps, 2, 101).reshape(steps, 2, 101)).reshape(steps, 1, 2, 101).mean(0)
        th = theta.reshape(1, 2, 1)
        want = (th / steps * torch.floor(steps * x / th + 0.5)).clamp(-levels * th, levels * th)
        assert torch.allclose(out, want, atol=1e-6), steps
        lo, hi = n.clip_range(x)
        assert torch.equal(hi, levels * th) and torch.equal(lo, -levels * th)


class Gated(nn.Module):
    """SiLU, an SE-style gate (a product of two computed tensors), LayerNorm, softmax attention."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.se = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.ln, self.fc = nn.LayerNorm(8), nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = F.silu(self.c1(x))
        y = F.gelu(self.c2(x))
        y = y * torch.sigmoid(self.se(y.mean((2, 3), keepdim=True)))
        y = self.ln(y)
        y = torch.softmax(y @ y.transpose(2, 3), -1) @ y
        return self.fc(F.hardswish(y).flatten(1))


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("gated")
    path = onnx2snn.export_onnx(Gated().eval(), torch.rand(2, 1, 8, 8), str(d / "gated.onnx"))
    x = torch.rand(48, 1, 8, 8)
    return path, x, onnx2snn.convert(path, x, timesteps=8, progress=False), d


def test_network_analog_equals_twin_and_spiking_converges(gated):
    path, x, snn, _ = gated
    twin = onnx2snn.import_onnx(path)
    assert {m.op_name for m in snn.averaged_ops().values()} >= {"GELU", "Sigmoid", "Mul", "MatMul", "Softmax"}
    with torch.no_grad():
        ref = twin(x[:5])
        snn.set_analog(True)
        assert (snn(x[:5]) - ref).abs().max() <= 1e-5
        snn.set_analog(False)
        outs = snn.run_timesteps(x[:5], checkpoints=[1, 4, 16, 64])
        err = [float((o - ref).norm() / ref.norm()) for o in outs]
        assert all(b < a for a, b in zip(err, err[1:])) and err[-1] < 0.1, err
        one = snn(x[:5], timesteps=9)
        assert torch.equal(one, snn(x[:5], timesteps=9, chunk=2))  # chunked == one-shot
        snn.reset()
        for _ in range(9):
            step = snn.step(x[:5])
        assert torch.equal(step, one)


def test_save_load_keeps_time_averaged_network(gated):
    path, x, snn, d = gated
    again = onnx2snn.load(snn.save(d / "gated.snn.pt"))
    with torch.no_grad():
        assert torch.equal(again(x[:4]), snn(x[:4]))
    assert set(again.averaged_ops()) == set(snn.averaged_ops())


def test_verify_counts_float_work_and_error_against_ideal_rate(gated):
    path, x, snn, d = gated
    np.savez(d / "data.npz", x=x.numpy(), y=np.zeros(len(x), dtype=np.int64))
    rep = onnx2snn.verify(snn, reference=path, data=str(d / "data.npz"), timesteps=[1, 2, 4, 8], progress=False)
    from onnx2snn.verification.energy import FLOAT_KINDS, FP32

    ops = rep.layers["ops"]
    rows = {r["name"]: r for r in rep.layers["energy"]}
    # counted by hand, per sample: the attention products [8 x 8] @ [8 x 8] for 8 channels, 8^4 multiply-adds
    # each, every step; their compensation: an add and a multiply per element of both inputs and the output,
    # every step after the first (at t = 1 the output is f(x_1))
    for name in ("MatMul", "MatMul_1"):
        r = rows[name]
        assert r["form"] == "time-averaged" and r["ann"] == {"mac": 8 ** 4}
        for t in (1, 2, 4, 8):
            assert r["snn"][t] == {"mac": t * 8 ** 4, "add": (t - 1) * 3 * 512, "mul": (t - 1) * 3 * 512}
    # softmax over 8 of 512 elements: compare (max), subtract, exp, sum, divide per element
    assert rows["Softmax"]["ann"] == {"cmp": 512, "add": 1024, "exp": 512, "div": 512}
    assert rows["Softmax"]["snn"][4] == {"cmp": 4 * 512, "add": 4 * 1024 + 3 * 1024, "exp": 4 * 512, "div": 4 * 512,
                                         "mul": 3 * 1024}
    # LayerNorm over the last dim (8) of [8, 8, 8]: 64 rows, one sqrt and one divide each
    assert rows["ln"]["ann"]["sqrt"] == rows["ln"]["ann"]["div"] == 64 and rows["ln"]["snn"][8]["sqrt"] == 8 * 64
    assert rows["Mul"]["form"] == "static" and rows["Mul"]["snn"][8] == rows["Mul"]["ann"]  # before the first neuron
    neurons = sum(n["neurons"] for n in rep.layers["neurons"])
    for t in (1, 2, 4, 8):
        tot = ops["snn"][t]
        for k in tot["counts"]:  # the totals are the sum of the nodes
            assert tot["counts"][k] == pytest.approx(sum(r["snn"][t].get(k, 0.0) for r in rows.values()))
        assert tot["counts"]["neuron"] == t * neurons
        assert tot["nonspiking_flops"] == pytest.approx(sum(tot["counts"][k] for k in FLOAT_KINDS))
        assert tot["energy_pj"] == pytest.approx(sum(FP32[k] * v for k, v in tot["counts"].items()))
        assert 0 < tot["float_share"] < 1
    assert ops["ann_energy_pj"] == pytest.approx(sum(FP32[k] * v for k, v in ops["ann_counts"].items()))
    for n in rep.layers["neurons"]:  # the spiking error (vs the ideal rate function) falls with T
        errs = [n["rel_error"][t] for t in (1, 2, 4, 8)]
        assert errs[-1] < 0.5 * errs[0], n
        assert 0 <= n["clip_error"] < 1 and not math.isnan(n["clip_error"])
    assert "non-spiking FLOPs" in rep.table() and "Work per layer" in rep.table()


def test_binary_weighted_spikes_same_outputs_fewer_events(gated):
    """reencode_coding="binary": k spikes of a step go out as the set bits of k (thresholds theta,
    2 theta, ...): the same outputs, popcount(k) events instead of k."""
    from onnx2snn.verification.monitor import _spike_counts

    s = torch.tensor([0.0, 1.0, 2.0, 3.0, -3.0, 7.0, -4.0]) * 0.5
    assert _spike_counts(s, torch.tensor(0.5)).tolist() == [0, 1, 2, 3, 3, 7, 4]
    assert _spike_counts(s, torch.tensor(0.5), binary=True).tolist() == [0, 1, 1, 2, 2, 3, 1]
    path, x, binary, d = gated  # the default: binary
    snn = onnx2snn.convert(path, x, timesteps=8, progress=False, reencode_coding="unit")
    assert all(n.binary_events == n.two_sided for n in binary.neurons().values())
    assert not any(n.binary_events for n in snn.neurons().values())
    with torch.no_grad():
        assert torch.equal(binary(x[:4]), snn(x[:4]))
    reps = [onnx2snn.verify(s, reference=path, data=(x[:16], torch.zeros(16, dtype=torch.long)), timesteps=[8],
                            progress=False) for s in (snn, binary)]
    unit, bits = (r.layers["ops"]["snn"][8]["synops"] for r in reps)
    assert 0 < bits < unit
    with pytest.raises(onnx2snn.ConfigError, match="reencode_coding"):
        onnx2snn.convert(path, x, timesteps=8, progress=False, reencode_coding="gray")

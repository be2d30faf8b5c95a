"""The engine runs time in chunks: every neuron's and spiking max-pool's state is carried from
chunk to chunk, and the outputs equal the one-shot run bit for bit in float32 (IF, signed IF,
IBT, signed IBT, multi-level, max-pool, Poisson input, biases and per-channel initial
potentials, folded networks). The chunk comes from a memory budget. The public calls work
with and without torch.no_grad(), and spiking runs never build an autograd graph.

The networks here are convolutional: the bit-for-bit claim needs layers that compute each
sample independently of the batch size (true of convolutions, pooling and element-wise ops;
a matrix product over few rows may round differently for another batch size)."""

import pytest
import torch
from torch import nn

import onnx2snn
from onnx2snn.snn.neurons import IFNeuron, SpikingMaxPool

T = 24
CPS = [1, 7, 16, 24]


class Net(nn.Module):
    """Conv-BN-ReLU, max-pool, a LeakyReLU (IBT) branch, residual add, concat, upsample, conv readout."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.1))
        self.down = nn.Sequential(nn.Conv2d(16, 12, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(12 + 8, 5, 1)

    def forward(self, x):
        s = self.stem(x)
        y = torch.cat([self.a(s) + s, self.b(s)], 1)
        return self.head(torch.cat([self.up(self.down(y)), s], 1))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("chunk") / "net.onnx"
    onnx2snn.export_onnx(net, torch.randn(1, 3, 16, 16), str(path))
    g = torch.Generator().manual_seed(1)
    return str(path), torch.rand(64, 3, 16, 16, generator=g), torch.rand(6, 3, 16, 16, generator=g)


CONFIGS = {
    "signed IF, signed IBT": {},
    "IF, IBT": {"signed_relu": False, "signed_ibt": False},
    "multi-level signed": {"levels": 3},
    "multi-level": {"levels": 2, "signed_relu": False},
    "poisson input": {"encoding": "poisson"},
}


def _convert(model, **kw):
    path, calib, _ = model
    snn = onnx2snn.convert(path, calib, timesteps=T, progress=False, **kw)
    g = torch.Generator().manual_seed(2)
    for n in snn.neurons().values():  # per-channel biases and initial potentials, as calibrate sets them
        n.set_bias(torch.randn(n.theta.shape, generator=g) * 0.05 * n.theta)
        n.set_v_init(torch.rand(n.theta.shape, generator=g))
    return snn


def _equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_chunked_equals_one_shot_bit_for_bit(model, cfg):
    snn = _convert(model, **CONFIGS[cfg])
    kinds = {m.extra_repr().split(",")[0] for m in snn.neurons().values()}
    assert any(isinstance(m, SpikingMaxPool) for m in snn.spiking_modules().values())
    assert len(kinds) == 2  # a ReLU kind and a LeakyReLU kind
    x = model[2]
    with torch.no_grad():
        one = snn.run_timesteps(x, checkpoints=CPS, chunk=T)
        for chunk in (1, 5, 8, 23):
            assert _equal(snn.run_timesteps(x, checkpoints=CPS, chunk=chunk), one), chunk
        assert torch.equal(snn(x, timesteps=16, chunk=3), one[2])
        for m in snn.spiking_modules().values():  # nothing left behind after a run
            assert not m.carry and getattr(m, "state", None) is None and getattr(m, "acc", None) is None
        # step mode draws the same numbers step by step
        snn.reset()
        for _ in range(T):
            streamed = snn.step(x)
        assert torch.equal(streamed, one[-1])


def test_folded_network_chunked(model):
    snn = onnx2snn.fold_thresholds(_convert(model))
    x = model[2]
    with torch.no_grad():
        one = snn.run_timesteps(x, checkpoints=CPS, chunk=T)
        assert _equal(snn.run_timesteps(x, checkpoints=CPS, chunk=4), one)


def test_chunk_from_memory_budget(model):
    snn = _convert(model)
    per_step, state = snn.memory_per_sample()
    assert per_step > 0 and state > 0
    B = len(model[2])
    assert snn.chunk_length(T, B, max_memory=B * state + 3 * B * per_step) == 3
    assert snn.chunk_length(T, B, max_memory=1) == 1
    assert snn.chunk_length(T, B, max_memory=1 << 40) == T
    seen = []
    h = next(iter(snn.neurons().values())).register_forward_hook(lambda m, i, o: seen.append(snn.time_window))
    with torch.no_grad():
        want = snn(model[2], chunk=T)
        snn.max_memory = B * state + 5 * B * per_step
        got = snn(model[2])  # 24 steps in 5 balanced chunks of at most 5
    h.remove()
    assert torch.equal(got, want)
    assert seen[1:] == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 4)]
    with pytest.raises(onnx2snn.ConfigError, match="chunk"):
        snn(model[2], chunk=0)
    with pytest.raises(onnx2snn.ConfigError, match="timesteps"):
        snn(model[2], timesteps=0)


@pytest.mark.parametrize("kind", ["IF", "signed IF", "IBT", "signed IBT", "multi-level", "multi-level signed"])
@pytest.mark.parametrize("fused", [False, True])
def test_neuron_carries_state_across_chunks(kind, fused):
    kw = {"IF": {}, "signed IF": {"signed": True}, "IBT": {"alpha": 0.1}, "signed IBT": {"alpha": 0.1, "signed": True},
          "multi-level": {"levels": 3}, "multi-level signed": {"levels": 2, "signed": True}}[kind]
    g = torch.Generator().manual_seed(5)
    n = IFNeuron(torch.rand(4, generator=g) + 0.3, v_init=torch.rand(4, generator=g), **kw)
    n.set_bias(torch.randn(4, generator=g) * 0.1)
    n.FUSED_STEP_BYTES = 1 if fused else 1 << 40  # both loops of the IF neuron
    xs = torch.randn(20, 3, 4, 5, 5, generator=g)
    n.T = 20
    one = n(xs.reshape(60, 4, 5, 5))
    n.carry = True
    parts = []
    for a, b in [(0, 3), (3, 4), (4, 13), (13, 20)]:
        n.T = b - a
        parts.append(n(xs[a:b].reshape(-1, 4, 5, 5)))
    n.carry = False
    n.reset()
    assert torch.equal(torch.cat(parts), one)


def test_spiking_maxpool_carries_state():
    g = torch.Generator().manual_seed(6)
    p = SpikingMaxPool(nn.MaxPool2d(2))
    xs = torch.randn(9, 2, 3, 6, 6, generator=g)
    p.T = 9
    one = p(xs.reshape(18, 3, 6, 6))
    p.carry = True
    parts = []
    for a, b in [(0, 2), (2, 7), (7, 9)]:
        p.T = b - a
        parts.append(p(xs[a:b].reshape(-1, 3, 6, 6)))
    assert torch.equal(torch.cat(parts), one)


# -- with and without torch.no_grad() -------------------------------------------------
@pytest.mark.parametrize("grad", [False, True])
def test_public_calls_with_and_without_no_grad(model, grad):
    """snn(x), snn(x, timesteps=T), run_timesteps, step mode, analog mode and folded networks
    work in both grad modes; spiking outputs never carry a graph, analog ones do (they are
    the twin's, differentiable) when grad is on."""
    snn = _convert(model)
    folded = onnx2snn.fold_thresholds(snn)
    x = model[2]
    with torch.no_grad():
        ref = {"default": snn(x), "T8": snn(x, timesteps=8), "sweep": snn.run_timesteps(x, checkpoints=[2, 8]),
               "folded": folded(x, timesteps=8)}
    with torch.set_grad_enabled(grad):
        got = {"default": snn(x), "T8": snn(x, timesteps=8), "sweep": snn.run_timesteps(x, checkpoints=[2, 8]),
               "folded": folded(x, timesteps=8)}
        snn.reset()
        for _ in range(8):
            streamed = snn.step(x)
        analog = snn.set_analog(True)(x, timesteps=4)
        snn.set_analog(False)
    for k in ref:
        a, b = (ref[k], got[k]) if k != "sweep" else (torch.stack(ref[k]), torch.stack(got[k]))
        assert torch.equal(a, b), k
        assert not b.requires_grad, k
    assert torch.equal(streamed, ref["T8"]) and not streamed.requires_grad
    twin = onnx2snn.import_onnx(model[0])
    with torch.no_grad():
        assert (analog - twin(x)).abs().max() <= 1e-5
    assert analog.requires_grad == grad
    if grad:
        analog.sum().backward()
        assert any(p.grad is not None for p in snn.parameters())


def test_compiled_kernel_carries_state():
    """snn.compile()'s fused kernel, run in chunks, gives the eager one-shot spikes exactly."""
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on the CPU needs a C compiler")
    g = torch.Generator().manual_seed(3)
    n = IFNeuron(torch.rand(6, generator=g) + 0.5, levels=2, signed=True)
    n.set_bias(torch.randn(6, generator=g) * 0.1)
    x = torch.randn(8 * 3, 6, 5, 5, generator=g)
    n.T = 8
    eager = n(x)
    n.compiled, n.carry, n.T = True, True, 4
    parts = [n(x[:12]), n(x[12:])]
    assert torch.equal(torch.cat(parts), eager)

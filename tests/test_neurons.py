"""IF neurons: the vectorised multi-step form equals the membrane-potential definition, step
mode equals multi-step, multi-level firing, bias and per-channel initial potential."""

import pytest
import torch

from onnx2snn.snn.neurons import IFNeuron


def reference_if(xs, theta, v0, bias, levels):
    """The definition, one step at a time: v += x + b; k = min(K, max(0, floor(v / theta)))
    spikes of theta; v -= k theta."""
    th = theta.reshape(1, -1, 1, 1)
    v = v0.reshape(1, -1, 1, 1) * th + torch.zeros_like(xs[0])
    out = []
    for x in xs:
        v = v + x + bias.reshape(1, -1, 1, 1)
        k = torch.clamp(torch.floor(v / th), 0, levels)
        v = v - k * th
        out.append(k * th)
    return torch.stack(out)


def reference_signed(xs, theta, v0):
    """Signed IF by its definition: +theta at v >= theta; -theta when v < 0 and the net
    number of spikes so far is positive (it takes back over-firing)."""
    th = theta.reshape(1, -1, 1, 1)
    v = v0 * th + torch.zeros_like(xs[0])
    net = torch.zeros_like(v)
    out = []
    for x in xs:
        v = v + x
        pos = (v >= th).double()
        neg = ((v < 0) & (net > 0)).double()
        s = (pos - neg) * th
        v, net = v - s, net + pos - neg
        out.append(s)
    return torch.stack(out)


def dyadic(shape, seed):
    """Inputs on a grid of 1/16 so that every sum is exact in floating point."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-24, 40, shape, generator=g).double() / 16


def make(theta, levels=1, v_init=0.5, bias=None, **kw):
    n = IFNeuron(theta, v_init=v_init, levels=levels, **kw).double()
    if bias is not None:
        n.set_bias(bias)
        n.double()
    return n


def run_multi(n, xs):
    T = xs.shape[0]
    n.T, n.step_mode = T, False
    return n(xs.reshape((-1,) + tuple(xs.shape[2:]))).reshape(xs.shape)


def run_steps(n, xs):
    n.reset()
    n.T, n.step_mode = 1, True
    out = torch.stack([n(x) for x in xs])
    n.reset()
    return out


@pytest.mark.parametrize("levels", [1, 3])
@pytest.mark.parametrize("per_channel", [False, True])
def test_multistep_equals_definition_exactly(levels, per_channel):
    T, C = 24, 4
    xs = dyadic((T, 5, C, 3, 3), seed=levels)
    theta = torch.tensor([0.5, 1.0, 2.0, 4.0]).double()
    v0 = torch.tensor([0.5, 0.25, 0.0, 0.75]).double() if per_channel else torch.full((C,), 0.5).double()
    bias = torch.tensor([0.125, -0.25, 0.0, 0.5]).double() if per_channel else torch.zeros(C).double()
    n = make(theta, levels=levels, v_init=v0 if per_channel else 0.5, bias=bias if per_channel else None)
    want = reference_if(xs, theta, v0, bias, levels)
    got = run_multi(n, xs)
    assert torch.equal(got, want)
    assert torch.equal(run_steps(n, xs), want)


def test_signed_equals_definition_exactly():
    xs = dyadic((32, 4, 3, 3, 3), seed=7)
    theta = torch.tensor([0.5, 1.0, 2.0]).double()
    n = IFNeuron(theta, signed=True).double()
    want = reference_signed(xs, theta, 0.5)
    assert torch.equal(run_multi(n, xs), want)
    assert torch.equal(run_steps(n, xs), want)
    assert (want < 0).any()  # negative spikes do occur


@pytest.mark.parametrize("kind", ["if", "ibt", "signed", "signed ibt"])
def test_step_mode_equals_multistep(kind):
    T, C = 16, 3
    xs = torch.randn(T, 2, C, 4, 4, generator=torch.Generator().manual_seed(1)).double()
    theta = torch.tensor([0.7, 1.3, 2.1])
    kw = {"if": {}, "ibt": {"alpha": 0.1}, "signed": {"signed": True}, "signed ibt": {"alpha": 0.1, "signed": True}}[kind]
    n = IFNeuron(theta, **kw).double()
    assert torch.allclose(run_multi(n, xs), run_steps(n, xs), atol=1e-12)


def test_constant_input_rate_and_multilevel():
    """Constant input x: after T steps the mean output is within theta/T of clip(x, 0, K theta)."""
    T = 64
    x = torch.linspace(-1, 4, 101).double().reshape(1, 1, 101, 1).expand(T, 1, 101, 1).clone()
    theta = torch.ones(1).double()
    for K in (1, 2, 4):
        mean = run_multi(make(theta, levels=K), x).mean(0)
        want = x[0].clamp(0, K)
        assert (mean - want).abs().max() <= 1 / T + 1e-12, K


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("alpha", [0.1, 0.25])
def test_signed_ibt_constant_input_equals_ibt(alpha, levels):
    """For constant input the take-back never triggers: signed IBT counts what IBT counts
    (so the single-step model of fine-tuning holds for it too); for a varying input it
    does take back."""
    T = 32
    x = torch.linspace(-3, 2, 81).double().reshape(1, 1, 81, 1).expand(T, 1, 81, 1).clone()
    theta = torch.ones(1).double()
    plain = run_multi(IFNeuron(theta, alpha=alpha, levels=levels).double(), x)
    signed = run_multi(IFNeuron(theta, alpha=alpha, signed=True, levels=levels).double(), x)
    assert torch.equal(plain.sum(0), signed.sum(0))
    g = torch.Generator().manual_seed(0)
    xv = torch.randn(T, 4, 1, 8, 8, generator=g).double()
    n_plain = run_multi(IFNeuron(theta, alpha=alpha, levels=levels).double(), xv)
    n_signed = run_multi(IFNeuron(theta, alpha=alpha, signed=True, levels=levels).double(), xv)
    assert not torch.equal(n_plain, n_signed)
    # the take-back keeps the output closer to LeakyReLU of the mean input
    want = torch.nn.functional.leaky_relu(xv.mean(0), alpha)
    assert (n_signed.mean(0) - want).abs().mean() < (n_plain.mean(0) - want).abs().mean()


def test_bias_shifts_rate():
    """A bias b on a constant input x gives the rate of x + b."""
    T = 64
    x = torch.full((T, 1, 2, 1, 1), 0.3).double()
    n = make(torch.ones(2).double(), bias=torch.tensor([0.0, 0.4]))
    mean = run_multi(n, x).mean(0).flatten()
    assert abs(float(mean[0]) - 0.3) <= 1 / T and abs(float(mean[1]) - 0.7) <= 1 / T


def test_state_dict_roundtrip_keeps_bias_and_v_init():
    n = IFNeuron(torch.ones(3), v_init=torch.tensor([0.1, 0.5, 0.9]))
    n.set_bias(torch.tensor([0.0, 0.2, -0.1]))
    m = IFNeuron(torch.ones(3))
    m.load_state_dict(n.state_dict())
    assert m.use_bias and torch.equal(m.v_init, n.v_init) and torch.equal(m.bias, n.bias)


def test_bad_levels():
    with pytest.raises(ValueError, match="levels"):
        IFNeuron(torch.ones(2), levels=0)


def test_compiled_kernel_equals_eager():
    """snn.compile()'s fused kernel gives the eager engine's spikes exactly."""
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on the CPU needs a C compiler")
    g = torch.Generator().manual_seed(3)
    for signed in (False, True):
        n = IFNeuron(torch.rand(6, generator=g) + 0.5, levels=2, signed=signed)
        n.set_bias(torch.randn(6, generator=g) * 0.1)
        x = torch.randn(8 * 3, 6, 5, 5, generator=g)
        n.T = 8
        eager = n(x)
        n.compiled = True
        assert torch.equal(n(x), eager)

"""Increment products (snn/products.py): the same values as the time-averaged product, chunked ==
one-shot == step mode; with ``spike_products`` an attention block's products are counted by
events, by hand."""

import pytest
import torch

import onnx2snn
from onnx2snn.snn.averaged import TimeAveraged, _Slot
from onnx2snn.snn.products import IncrementProduct
from onnx2snn.verification import energy
from test_energy import Attention  # the attention block the energy tests count by hand

T, B = 9, 2
PRODUCTS = {"MatMul": lambda a, b: a @ b, "Mul": torch.mul}


def _spikes(seed, shape):
    """Signed multi-level spikes: k * theta, k in -3..3, theta 0.25."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (T, B) + shape, generator=g).float() * 0.25


def _pair(name):
    return (_spikes(1, (4, 5)), _spikes(2, (5, 3))) if name == "MatMul" else (_spikes(1, (4, 5)), _spikes(2, (4, 5)))


def _flat(x):
    return x.reshape((-1,) + tuple(x.shape[2:]))


@pytest.mark.parametrize("name", list(PRODUCTS))
def test_increment_product_equals_time_averaged_product(name):
    fn = PRODUCTS[name]
    a, b = _pair(name)
    ref = TimeAveraged(fn, (_Slot(0), _Slot(1)), {}, ["dynamic", "dynamic"])
    inc = IncrementProduct(fn, (_Slot(0), _Slot(1)), {}, ["dynamic", "dynamic"])
    ref.T = inc.T = T
    want, got = ref(_flat(a), _flat(b)), inc(_flat(a), _flat(b))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), float((got - want).abs().max())
    # the running average of the output is the product of the running averages, at every step
    y = got.reshape((T, B) + tuple(got.shape[1:]))
    for t in range(1, T + 1):
        assert torch.allclose(y[:t].sum(0) / t, fn(a[:t].mean(0), b[:t].mean(0)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(PRODUCTS))
def test_increment_product_chunks_and_steps_equal_one_call(name):
    fn = PRODUCTS[name]
    a, b = _pair(name)
    one = IncrementProduct(fn, (_Slot(0), _Slot(1)), {}, ["dynamic", "dynamic"])
    one.T = T
    ref = one(_flat(a), _flat(b))
    chunked = IncrementProduct(fn, (_Slot(0), _Slot(1)), {}, ["dynamic", "dynamic"])
    chunked.carry = True
    parts = []
    for t0, n in ((0, 4), (4, 2), (6, 3)):
        chunked.T = n
        parts.append(chunked(_flat(a[t0:t0 + n]), _flat(b[t0:t0 + n])))
    assert torch.equal(torch.cat(parts), ref)
    stepped = IncrementProduct(fn, (_Slot(0), _Slot(1)), {}, ["dynamic", "dynamic"])
    stepped.step_mode = True
    assert torch.equal(torch.cat([stepped(a[t], b[t]) for t in range(T)]), ref)
    stepped.reset()
    assert stepped.state is None


def test_spike_products_attention_counted_by_hand(tmp_path):
    x = torch.rand(32, 4, 8)
    path = onnx2snn.export_onnx(Attention().eval(), x[:2], str(tmp_path / "attn.onnx"))
    exact = onnx2snn.convert(path, x, timesteps=4, progress=False)
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False, spike_products=True)
    assert snn.config["spike_products"] is True and exact.config["spike_products"] is False
    incs = [m for m in snn.rewritten.modules() if isinstance(m, IncrementProduct)]
    assert len(incs) == 2 and not any(isinstance(m, IncrementProduct) for m in exact.rewritten.modules())
    ts = [1, 2, 4]
    rep = onnx2snn.verify(snn, reference=path, data=(x[:8], torch.zeros(8, dtype=torch.long)), timesteps=ts,
                          progress=False)
    ops, neurons = rep.layers["ops"], {r["name"]: r for r in rep.layers["neurons"]}
    ops_names = sorted(n for n in neurons if n.startswith("reencode_operand_"))
    assert len(ops_names) == 4  # q, k^T, the softmax's output a, v
    size = {n: neurons[n]["neurons"] for n in ops_names}
    assert sorted(size.values()) == [16, 32, 32, 32]
    # an event of q (of k^T) meets 4 partner scores, of a: 8 outputs, of v: 4; + 1 for its running sum
    fan = {}
    for n in ops_names:
        first = n.split("_")[-1] == "0"
        fan[n] = (4 if size[n] == 32 else 8) + 1 if first else 4 + 1
    per_layer = {r["name"]: r for r in rep.layers["energy"]}
    prods = [r for r in per_layer.values() if r["form"] == "increment product"]
    assert len(prods) == 2
    for t in ts:
        want = sum(fan[n] * neurons[n]["spikes_per_sample"][t] for n in ops_names)
        assert sum(r["snn"][t]["ac"] for r in prods) == pytest.approx(want, rel=1e-9)
        c = ops["snn"][t]["counts"]
        assert c["mac"] == 4 * 8 * 8  # the static embedding only: no dense product per step
        # outputs of q k^T (16) and a v (32): an add + a multiply each per step after the first; the scale
        # (16 multiplies) every step; softmax: 2 adds per score every step + its compensation (16 in + 16 out)
        # after the first
        assert c["add"] == t * 2 * 16 + (t - 1) * (16 + 32 + 32) + 32
        assert c["mul"] == t * 16 + (t - 1) * (16 + 32 + 32)
        assert c["neuron"] == t * sum(r["neurons"] for r in rep.layers["neurons"])
        assert ops["snn"][t]["energy_pj"] == pytest.approx(sum(energy.FP32[k] * v for k, v in c.items()))
    # save / load keeps the increment products and their outputs
    snn.save(str(tmp_path / "sp.snn"))
    back = onnx2snn.load(str(tmp_path / "sp.snn"))
    assert sum(isinstance(m, IncrementProduct) for m in back.rewritten.modules()) == 2
    assert torch.allclose(back(x[:4], timesteps=4), snn(x[:4], timesteps=4), atol=1e-6)


def test_search_builds_what_it_chose_spike_or_exact_products(tmp_path):
    """convert(target=) with the products on spikes (the search's choice, here the only one) or
    exact: the SNN it returns is built the way its config says and loads back the same."""
    x = torch.rand(96, 4, 8)
    path = onnx2snn.export_onnx(Attention().eval(), x[:2], str(tmp_path / "attn.onnx"))
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False, target=0.5, spike_products=True,
                           search={"spike_products": (True,), "max_runs": 3})
    assert snn.config["spike_products"] is True
    assert sum(isinstance(m, IncrementProduct) for m in snn.rewritten.modules()) == 2
    snn.save(str(tmp_path / "t.snn"))
    back = onnx2snn.load(str(tmp_path / "t.snn"))
    assert torch.allclose(back(x[:4], timesteps=2), snn(x[:4], timesteps=2), atol=1e-6)
    exact = onnx2snn.convert(path, x, timesteps=4, progress=False, target=0.5,
                             search={"spike_products": (False,), "max_runs": 3})
    assert exact.config["spike_products"] is False
    assert not any(isinstance(m, IncrementProduct) for m in exact.rewritten.modules())
    assert not any(str(n).startswith("reencode_operand_") for n, _ in exact.rewritten.named_modules())
    with pytest.raises(onnx2snn.errors.ConfigError, match="spike_products"):
        onnx2snn.convert(path, x, timesteps=4, progress=False, target=0.5, search={"spike_products": True})

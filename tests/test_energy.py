"""The energy model (verification/energy.py, events.py, work.py, tally.py): equivalent graphs that
carry the same spikes cost the same, an attention block counted by hand, the cost tables, bad
input, and a torchvision ViT (tokens-first layout) that verify counts."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import onnx2snn
from onnx2snn.errors import EnergyModelError
from onnx2snn.verification import energy
from onnx2snn.verification.flops import count_ops

TS = [1, 2, 4]


class Base(nn.Module):
    """x [B, 16] -> Linear -> ReLU (multi-level neurons) -> <path> -> Linear (no bias) -> ReLU -> Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2, self.l3 = nn.Linear(16, 32), nn.Linear(32, 24, bias=False), nn.Linear(24, 10)

    def path(self, h):
        return self.l2(h)

    def forward(self, x):
        return self.l3(torch.relu(self.path(torch.relu(self.l1(x)))))


class Reshaped(Base):
    def path(self, h):  # through a reshape, a split + concat, a zero pad and a slice
        h = h.reshape(-1, 4, 8).reshape(-1, 32)
        h = torch.cat(h.split([12, 20], 1), 1)
        h = nn.functional.pad(h, (0, 3))[:, :32]
        return self.l2(h)


class Transposed(Base):
    def __init__(self):
        super().__init__()
        w = self.l2.weight.detach().reshape(24, 4, 8).transpose(1, 2).reshape(24, 32)  # columns permuted
        self.l2t = nn.Linear(32, 24, bias=False)
        self.l2t.weight.data.copy_(w)

    def path(self, h):
        return self.l2t(h.reshape(-1, 4, 8).transpose(1, 2).reshape(-1, 32))


class NdMatMul(Base):
    def __init__(self):
        super().__init__()
        self.register_buffer("w3", self.l2.weight.detach().t().reshape(1, 32, 24).clone())

    def path(self, h):  # x @ W with a 3-D constant W: a weight layer like the Linear
        return torch.matmul(h.unsqueeze(1), self.w3).squeeze(1)


def _run(model, d, x):
    path = onnx2snn.export_onnx(model.eval(), x[:2], str(d / f"{type(model).__name__}.onnx"))
    snn = onnx2snn.convert(path, x, timesteps=4, levels=3, progress=False)
    rep = onnx2snn.verify(snn, reference=path, data=(x[:24], torch.zeros(24, dtype=torch.long)), timesteps=TS,
                          batch_size=8, progress=False)
    return snn, rep


def _layer_ac(rep, t):
    """Accumulates of the spike-driven layer after the first neuron (the only one in the core)."""
    rows = [r for r in rep.layers["energy"] if r["form"] == "spike-driven"]
    assert len(rows) == 1, [(r["name"], r["form"]) for r in rep.layers["energy"]]
    return rows[0]["snn"][t]["ac"]


@pytest.fixture(scope="module")
def equivalent(tmp_path_factory):
    d = tmp_path_factory.mktemp("energy_eq")
    x = torch.rand(96, 16) * 2
    return {cls.__name__: _run(cls(), d, x) for cls in (Base, Reshaped, Transposed, NdMatMul)}, x


def test_same_spikes_cost_the_same_through_any_path(equivalent):
    runs, x = equivalent
    snn, rep = runs["Base"]
    # counted by hand: each of the first neuron's k-spikes (k events) reaches the 24 synapses of l2
    neuron = next(iter(snn.neurons()))
    ks = []
    h = snn.neurons()[neuron].register_forward_hook(lambda m, i, o: ks.append((o.abs() / m.theta).round()))
    with torch.no_grad():
        for b in range(3):
            snn(x[8 * b:8 * b + 8], timesteps=4)
    h.remove()
    k = torch.stack([c.reshape(4, -1).sum(1) for c in ks]).sum(0).double()  # events per step, 24 samples
    nonzero = sum(float((c != 0).sum()) for c in ks)
    assert max(float(c.max()) for c in ks) > 1 and float(k.sum()) > nonzero  # k-spikes: more events than non-zeros
    for t in TS:
        assert _layer_ac(rep, t) == pytest.approx(24 * float(k[:t].sum()) / 24, rel=1e-12)
    for name in ("Reshaped", "Transposed", "NdMatMul"):
        other = runs[name][1]
        for t in TS:
            assert _layer_ac(other, t) == pytest.approx(_layer_ac(rep, t), rel=1e-12), (name, t)
        assert other.layers["ops"]["ann_macs"] == rep.layers["ops"]["ann_macs"]
    # the N-D MatMul is a weight layer: spike-driven, with its fan-out, not free
    w = {r["name"]: r for r in runs["NdMatMul"][1].layers["weighted"]}
    mm = [r for r in w.values() if r["op"] == "MatMul"]
    assert len(mm) == 1 and mm[0]["input"] == "spiking" and mm[0]["macs"] == 32 * 24


class Attention(nn.Module):
    """Tokens [B, 4, 8] -> Linear + ReLU -> q, k, v (no bias) -> softmax(q k^T * 0.35) v -> Linear + ReLU
    -> Linear (the hidden ReLU after the attention puts it inside the spiking part)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.Linear(8, 8)
        self.q, self.k, self.v = (nn.Linear(8, 8, bias=False) for _ in range(3))
        self.out, self.head = nn.Linear(32, 16), nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.emb(x))
        a = torch.softmax(torch.matmul(self.q(h), self.k(h).transpose(1, 2)) * 0.35, -1)
        return self.head(torch.relu(self.out(torch.matmul(a, self.v(h)).flatten(1))))


def test_attention_block_counted_by_hand(tmp_path):
    x = torch.rand(32, 4, 8)
    path = onnx2snn.export_onnx(Attention().eval(), x[:2], str(tmp_path / "attn.onnx"))
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False)
    rep = onnx2snn.verify(snn, reference=path, data=(x[:8], torch.zeros(8, dtype=torch.long)), timesteps=TS,
                          progress=False)
    ops = rep.layers["ops"]
    n, d = 4, 8  # tokens, width; per sample
    # products q k^T and a v: n*n*d multiply-adds each, every step; compensation: an add and a multiply per
    # element of both inputs and the output (q k^T: 32 + 32 + 16, a v: 16 + 32 + 32), every step after the first
    # scale: one multiply per score (16), an analog value: every step; softmax over 4 of 16 scores: compare, 2 adds, exp, divide per
    # score, plus its compensation (16 in + 16 out)
    neurons = sum(r["neurons"] for r in rep.layers["neurons"])
    assert neurons == 32 + 32 + 16  # the ReLUs and the re-encoder of a v before the Linear
    for t in TS:
        c = ops["snn"][t]["counts"]
        assert c["mac"] == t * 2 * n * n * d + 4 * 8 * 8  # + the static embedding, once
        # compensation (80 + 80 + 32) every step after the first: at t = 1 a time-averaged op outputs f(x_1)
        assert c["add"] == t * 2 * 16 + (t - 1) * (80 + 80 + 32) + 32  # + the embedding's bias (an Add node), once
        assert c["mul"] == t * 16 + (t - 1) * (80 + 80 + 32)
        assert (c["cmp"], c["exp"], c["div"], c["sqrt"]) == (t * 16, t * 16, t * 16, 0)
        assert c["neuron"] == t * neurons
        e = ops["snn"][t]
        assert e["energy_pj"] == pytest.approx(sum(energy.FP32[k] * v for k, v in c.items()))
        assert e["energy_int8_pj"] == pytest.approx(sum(energy.INT8[k] * v for k, v in c.items()))
    a = ops["ann_counts"]  # the ANN by the same rules, once
    assert a["mac"] == 4 * 8 * 8 + 3 * 4 * 8 * 8 + 2 * n * n * d + 32 * 16 + 16 * 10
    assert (a["add"], a["mul"], a["cmp"], a["exp"], a["div"]) == (32 + 32, 16, 32 + 16 + 16, 16, 16)
    assert a["ac"] == 16 + 10 and a["neuron"] == 0  # bias adds of out and head (emb's is an Add node)


def test_cost_tables_and_bad_input():
    assert energy.FP32["add"] == 0.9 and energy.FP32["mul"] == 3.7 and energy.FP32["mac"] == pytest.approx(4.6)
    assert energy.INT8["ac"] == 0.1 and energy.INT8["mac"] == pytest.approx(0.2 + 0.1)
    assert energy.FP32["exp"] == energy.FP32["div"] == energy.FP32["sqrt"] == pytest.approx(4 * 3.7 + 4 * 0.9)
    assert energy.energy_pj({"ac": 10, "mac": 1, "neuron": 2}) == pytest.approx(9 + 4.6 + 5.4)
    bad = dict(energy.FP32)
    del bad["exp"]
    with pytest.raises(EnergyModelError, match="missing entries \\['exp'\\]"):
        energy.energy_pj({"ac": 1}, bad)
    with pytest.raises(EnergyModelError, match="'mul' must be a finite number >= 0"):
        energy.energy_pj({"ac": 1}, dict(energy.FP32, mul=-1.0))
    with pytest.raises(EnergyModelError, match="unknown op kind\\(s\\) \\['flop'\\]"):
        energy.energy_pj({"flop": 3})
    with pytest.raises(EnergyModelError, match="unknown kinds \\['fma'\\]"):
        energy.check_costs(dict(energy.FP32, fma=1.0))
    assert "| `neuron` |" in energy.rules_table()


def test_float_ops_by_kind():
    x = torch.rand(2, 3, 5)
    assert count_ops(torch.softmax, x, -1) == {"cmp": 30, "add": 60, "exp": 30, "div": 30}
    assert count_ops(lambda: x + x * 2) == {"mul": 30, "add": 30}
    assert count_ops(torch.exp, x) == {"exp": 30}  # an exp costs the same inside softmax and alone
    assert count_ops(nn.functional.layer_norm, x, (5,)) == {"add": 120, "mul": 90, "sqrt": 6, "div": 6}
    assert count_ops(lambda: x.reshape(6, 5).t().contiguous()) == {}
    assert count_ops(torch.matmul, x, torch.rand(5, 4)) == {"mac": 2 * 3 * 5 * 4}


def test_torchvision_vit_tokens_first_layout(tmp_path):
    """torchvision's VisionTransformer: attention Linears read [tokens, T*B, D]; events and SynOps are
    split over time on that axis (issue #28 item 3: verify crashed there)."""
    tv = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    m = tv.VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10).eval()
    path = onnx2snn.export_onnx(m, torch.rand(2, 3, 16, 16), str(tmp_path / "vit.onnx"))
    x, y = onnx2snn.zoo.load_digits(16, "test")
    x, y = np.repeat(x[:40], 3, axis=1), y[:40]
    snn = onnx2snn.convert(path, x[:24], timesteps=2, progress=False)
    data = (x[24:34], y[24:34])  # 10 samples in batches of 4: T*B differs from the token count
    rep = onnx2snn.verify(snn, reference=path, data=data, timesteps=[1, 2, 8], batch_size=4, progress=False)
    one = onnx2snn.verify(snn, reference=path, data=data, timesteps=[1], batch_size=4, progress=False)
    rows = {r["name"]: r for r in rep.layers["weighted"]}
    attn = [r for k, r in rows.items() if k.endswith("self_attention") and r["input"] == "spiking"]
    assert attn and all(r["macs"] == 17 * 32 * 96 for r in attn)
    first = {r["name"]: r for r in one.layers["weighted"]}
    for r in attn:  # uniform fan-out 96: SynOps = 96 x events; step 1 of a T=8 run is a T=1 run's step
        events = r["input_density"][8] * 8 * 17 * 32
        assert r["synops"][8] == pytest.approx(96 * events, rel=1e-9) and r["synops"][8] > 0
        assert r["synops"][1] == pytest.approx(first[r["name"]]["synops"][1], rel=1e-12)
    ops = rep.layers["ops"]
    assert all(ops["snn"][t]["energy_pj"] > 0 and math.isfinite(ops["snn"][t]["energy_ratio_vs_ann"]) for t in (1, 2, 8))
    assert ops["snn"][8]["counts"]["exp"] > 0 and ops["snn"][8]["counts"]["sqrt"] > 0  # softmax, LayerNorm


def test_docs_state_the_rules_and_costs_of_the_code():
    """The energy model's table in the docs is rendered from the code (docs/hooks.py)."""
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    assert "<!-- generated: energy-rules -->" in (root / "docs" / "guide" / "verify.md").read_text()
    spec = importlib.util.spec_from_file_location("onnx2snn_docs_hooks", root / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    assert hooks.expand("<!-- generated: energy-rules -->") == energy.rules_table()


def test_counts_do_not_depend_on_chunks_of_time(tmp_path):
    """digits_vgg (max-pools: the event count carries their state between chunks), multi-level
    neurons: verify in chunks of one step counts what one chunk of T counts."""
    from onnx2snn import zoo

    path = str(onnx2snn.export_zoo_model("digits_vgg", tmp_path / "vgg.onnx"))
    xtr, _ = zoo.load_digits(16, "train")
    xte, yte = zoo.load_digits(16, "test")
    snn = onnx2snn.convert(path, xtr[:128], timesteps=4, progress=False)
    data = (xte[:16], yte[:16])
    whole = onnx2snn.verify(snn, path, data=data, timesteps=[1, 2, 4], batch_size=16, progress=False)
    per_step, state = snn.memory_per_sample()
    snn.max_memory = 16 * (state + per_step) + 1  # one step per chunk
    assert snn.chunk_length(4, 16) == 1
    chunked = onnx2snn.verify(snn, path, data=data, timesteps=[1, 2, 4], batch_size=16, progress=False)
    for t in (1, 2, 4):
        a, b = whole.layers["ops"]["snn"][t]["counts"], chunked.layers["ops"]["snn"][t]["counts"]
        assert a == pytest.approx(b, rel=1e-12) and a["ac"] > 0, t

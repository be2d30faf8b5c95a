"""Spike encoders before weight layers that would read an analog value at every step
(encode_analog, onnx2snn/graph/encoders.py): where they go, exactness of the engine with them
(chunked == one-shot == step mode, save / load), the energy count by hand, and quality on the
zoo's MobileNetV3."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onnx2snn
from onnx2snn import settings
from onnx2snn.graph.analysis import analyze, prepare_averaged
from onnx2snn.graph.averaged import Reencode
from onnx2snn.graph.encoders import ENCODE_PREFIX, encoding_points, fanout


class Bottlenecks(nn.Module):
    """A MobileNetV2/V3-like stack: stem, then two inverted residual blocks (1x1 expand + HardSwish,
    depthwise + ReLU, 1x1 linear projection, residual add), pooled Linear readout. Block 2's expand
    conv reads block 1's linear bottleneck (an analog value); block 2's add reads it too (skip)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.e1, self.d1, self.p1 = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 8, 1)
        self.e2, self.d2, self.p2 = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = h + self.p1(F.relu(self.d1(F.hardswish(self.e1(h)))))
        h = h + self.p2(F.relu(self.d2(F.hardswish(self.e2(h)))))
        return self.fc(F.relu(h).mean((2, 3)))


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    d = tmp_path_factory.mktemp("bottleneck")
    x = torch.rand(48, 1, 8, 8)
    path = onnx2snn.export_onnx(Bottlenecks().eval(), x[:2], str(d / "block.onnx"))
    return path, x, onnx2snn.convert(path, x, timesteps=4, progress=False), d


def _forms(twin):
    return {n.name: n.form for n in analyze(twin).nodes}


def test_encoder_goes_before_the_weight_layer_only(block):
    path, x, snn, _ = block
    off = prepare_averaged(onnx2snn.import_onnx(path), encode_analog="off")
    analog = [k for k, v in _forms(off).items() if v == "analog per step"]
    assert len(analog) == 1  # block 2's expand conv reads block 1's residual sum
    on = prepare_averaged(onnx2snn.import_onnx(path), encode_analog="auto")
    forms = _forms(on)
    assert forms[analog[0]] == "spike-driven" and "analog per step" not in forms.values()
    enc = [n for n in on.graph.nodes if n.name.startswith(ENCODE_PREFIX)]
    assert len(enc) == 1 and isinstance(on.get_submodule(enc[0].target), Reencode)
    src = enc[0].args[0]
    # the weight layer reads the spikes; the residual add of block 2 keeps the exact analog sum
    assert [u.name for u in enc[0].users] == analog
    assert any(u.op == "call_function" and "add" in u.name.lower() for u in src.users)
    with torch.no_grad():  # the encoder is the identity in the twin: the twin still equals the source
        assert torch.equal(on(x[:4]), off(x[:4]))
    assert encoding_points(on, analyze(on)) == {}  # prepared once: nothing left to encode
    assert set(snn.neurons()) >= {enc[0].target}
    assert snn.config["encode_analog"] == "auto"


class Concat(nn.Module):
    """A conv reads cat(spikes of a ReLU, an analog conv output), as YOLO11's C2PSA ends."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.a, self.b, self.c = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(8, 6, 1)

    def forward(self, x):
        h = F.relu(self.a(x))
        return F.relu(self.c(torch.cat([h, self.b(h)], 1))).mean((2, 3))


def test_concatenation_encodes_its_analog_input_only(tmp_path):
    path = onnx2snn.export_onnx(Concat().eval(), torch.rand(2, 1, 6, 6), str(tmp_path / "cat.onnx"))
    on = prepare_averaged(onnx2snn.import_onnx(path))
    enc = [n for n in on.graph.nodes if n.name.startswith(ENCODE_PREFIX)]
    assert len(enc) == 1 and enc[0].args[0].target == "b"  # the conv output, not the ReLU's spikes
    assert [u.op == "call_function" and u.target is torch.cat for u in enc[0].users] == [True]
    assert _forms(on)["c"] == "spike-driven"


def test_fanout_from_shapes(block):
    gm = onnx2snn.import_onnx(block[0])
    nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    convs = {k: v for k, v in nodes.items() if isinstance(gm.get_submodule(k), nn.Conv2d)}
    fans = sorted(fanout(gm, n) for n in convs.values())
    # stem 8 x 9, expand 16 x 1 (twice), depthwise 1 x 9 (twice), project 8 x 1 (twice)
    assert fans == [8.0, 8.0, 9.0, 9.0, 16.0, 16.0, 72.0]


def test_engine_exact_with_encoders(block):
    """chunked == one-shot == step mode, the analog mode equals the twin, save / load the same."""
    path, x, snn, d = block
    twin = onnx2snn.import_onnx(path)
    with torch.no_grad():
        snn.set_analog(True)
        assert (snn(x[:5]) - twin(x[:5])).abs().max() <= 1e-5
        snn.set_analog(False)
        one = snn(x[:5], timesteps=7)
        assert torch.equal(one, snn(x[:5], timesteps=7, chunk=2))
        assert torch.equal(one, snn(x[:5], timesteps=7, chunk=3))
        snn.reset()
        for _ in range(7):
            step = snn.step(x[:5])
        assert torch.equal(step, one)
        again = onnx2snn.load(snn.save(d / "block.snn.pt"))
        assert torch.equal(again(x[:5], timesteps=7), one)
        assert set(again.neurons()) == set(snn.neurons())
        ref = twin(x[:16])
        err = [float((snn(x[:16], timesteps=t) - ref).norm() / ref.norm()) for t in (2, 8, 32)]
        assert err[-1] < 0.1 and err[-1] < err[0], err


def test_old_files_meant_off():
    assert settings.saved({}, "encode_analog") == "off"
    assert settings.CONVERT["encode_analog"].default == "auto"


def test_bad_setting_is_our_error(block):
    path, x, _, _ = block
    with pytest.raises(onnx2snn.errors.ConfigError, match="encode_analog"):
        onnx2snn.convert(path, x, timesteps=2, progress=False, encode_analog="on")


class Tiny(nn.Module):
    """1x1 convs on [1, 4, 4]: stem (static) -> ReLU -> c2 (2 -> 2, no bias: an analog output) -> c3
    (2 -> 3, no bias) reading it -> ReLU -> Linear readout."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1, bias=False), nn.Conv2d(2, 3, 1, bias=False)
        self.fc = nn.Linear(48, 4)

    def forward(self, x):
        return self.fc(F.relu(self.c3(self.c2(F.relu(self.c1(x))))).flatten(1))


def _events(k: torch.Tensor, coding: str) -> float:
    """Events of signed spike counts k: |k| unit events, or one per set bit of |k| (binary)."""
    k = k.abs().round().long()
    if coding == "unit":
        return float(k.sum())
    return float(sum(((k >> b) & 1).sum() for b in range(8)))


@pytest.mark.parametrize("coding", ["binary", "unit"])
def test_counts_by_hand(tmp_path, coding):
    """With the encoder: c3 does one accumulate per encoder event and synapse (fan-out 3), no
    MACs; the encoder is 32 neuron updates per step. Without: 32 x 3 MACs per step."""
    x = torch.rand(32, 1, 4, 4)
    path = onnx2snn.export_onnx(Tiny().eval(), x[:2], str(tmp_path / "tiny.onnx"))
    data = (x[:8], torch.zeros(8, dtype=torch.long))
    T = 4
    on = onnx2snn.convert(path, x, timesteps=T, progress=False, reencode_coding=coding)
    off = onnx2snn.convert(path, x, timesteps=T, progress=False, encode_analog="off", reencode_coding=coding)
    enc = [k for k in on.neurons() if k.startswith(ENCODE_PREFIX)]
    assert len(enc) == 1 and not [k for k in off.neurons() if k.startswith(ENCODE_PREFIX)]
    neuron = on.neurons()[enc[0]]
    seen = []
    hook = neuron.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    with torch.no_grad():
        on(x[:8], timesteps=T)
    hook.remove()
    theta = neuron.theta.reshape(1, -1, 1, 1)
    spikes = torch.cat(seen) / theta  # [T x 8, 2, 4, 4] signed spike counts
    assert torch.allclose(spikes, spikes.round(), atol=1e-4)
    per_step = spikes.reshape(T, 8, 2, 4, 4)
    r_on = onnx2snn.verify(on, path, data=data, timesteps=[T], progress=False)
    r_off = onnx2snn.verify(off, path, data=data, timesteps=[T], progress=False)
    rows_on = {r["name"]: r for r in r_on.layers["energy"]}
    rows_off = {r["name"]: r for r in r_off.layers["energy"]}
    c3 = next(k for k, r in rows_on.items() if r["op"] == "Conv2d" and r["ann"]["mac"] == 32 * 3)
    assert rows_off[c3]["form"] == "analog per step" and rows_off[c3]["snn"][T] == {"mac": T * 32 * 3}
    assert rows_on[c3]["form"] == "spike-driven"
    assert rows_on[c3]["snn"][T]["ac"] == pytest.approx(3 * _events(per_step, coding) / 8, rel=1e-9)
    assert rows_on[c3]["snn"][T].get("mac", 0) == 0
    enc_rows = [r for k, r in rows_on.items() if k.startswith(ENCODE_PREFIX)]
    assert len(enc_rows) == 1 and enc_rows[0]["snn"][T] == {"neuron": T * 32}
    n_on, n_off = (r.layers["ops"]["snn"][T]["counts"] for r in (r_on, r_off))
    assert n_on["neuron"] - n_off["neuron"] == T * 32
    assert n_off["mac"] - n_on["mac"] == T * 32 * 3


def test_mobilenetv3_quality_and_energy(tmp_path):
    """digits_mobilenetv3, default conversion: >= 99 % of the ANN's top-1 at T=2 and T=4 on 200
    test digits, and at T=2 cheaper than the FP32 ANN (1.34x with encode_analog="off"; measured
    0.53x with it)."""
    from onnx2snn import zoo

    path = str(onnx2snn.export_zoo_model("digits_mobilenetv3", tmp_path / "m.onnx"))
    xtr, _ = zoo.load_digits(16, "train")
    xte, yte = (torch.as_tensor(a) for a in zoo.load_digits(16, "test"))
    snn = onnx2snn.convert(path, xtr[:256], timesteps=4, progress=False)
    rep = onnx2snn.verify(snn, path, data=(xte[:200], yte[:200]), timesteps=[2, 4], progress=False)
    ref = rep.metrics["reference"]["top1"]
    for T in (2, 4):
        assert rep.metrics["snn"][T]["top1"] >= 0.99 * ref, T
    assert rep.layers["ops"]["snn"][2]["energy_ratio_vs_ann"] < 0.6
    weights = [r for r in rep.layers["energy"] if r["ann"].get("mac")]  # the residual adds stay analog
    assert len(weights) > 20 and "analog per step" not in {r["form"] for r in weights}


def test_finetuned_twin_without_data_keeps_macs(tmp_path):
    """A fine-tuned twin converts with no calibration data (its thresholds are learned): no
    encoder there (it would need data for its thresholds), recorded as encode_analog="off";
    with data, the encoder is calibrated and the learned thresholds kept."""
    x = torch.rand(32, 1, 4, 4)
    path = onnx2snn.export_onnx(Tiny().eval(), x[:2], str(tmp_path / "tiny.onnx"))
    ft = onnx2snn.finetune(path, (x, torch.zeros(32, dtype=torch.long)), timesteps=4, epochs=0, progress=False)
    bare = onnx2snn.convert(ft, timesteps=4, progress=False)
    assert bare.config["encode_analog"] == "off" and not [k for k in bare.neurons() if k.startswith(ENCODE_PREFIX)]
    with_data = onnx2snn.convert(ft, x, timesteps=4, progress=False)
    assert with_data.config["encode_analog"] == "auto"
    assert [k for k in with_data.neurons() if k.startswith(ENCODE_PREFIX)]
    for k, theta in ft.learned_thresholds.items():
        assert torch.equal(with_data.neurons()[k].theta.flatten(), theta.flatten())
    again = onnx2snn.load(bare.save(tmp_path / "bare.snn.pt"))
    with torch.no_grad():
        assert torch.equal(again(x[:4]), bare(x[:4]))


def test_nir_export_names_the_encoder_and_the_way_out(tmp_path):
    """NIR has no two-sided multi-level spikes: a binary-spike conversion with an encoder is
    refused naming encode_analog='off'; with it off, the same network exports."""
    pytest.importorskip("nir")
    x = torch.rand(32, 1, 4, 4)
    path = onnx2snn.export_onnx(Tiny().eval(), x[:2], str(tmp_path / "tiny.onnx"))
    kw = dict(timesteps=4, progress=False, levels=1, signed_relu=False, signed_ibt=False)
    snn = onnx2snn.convert(path, x, **kw)
    with pytest.raises(onnx2snn.NIRExportError) as e:
        onnx2snn.export_nir(onnx2snn.fold_thresholds(snn), tmp_path / "x.nir")
    assert "encode_analog='off'" in str(e.value) and len(e.value.nodes) == 1
    off = onnx2snn.convert(path, x, encode_analog="off", **kw)
    onnx2snn.export_nir(onnx2snn.fold_thresholds(off), tmp_path / "off.nir")
    assert (tmp_path / "off.nir").is_file()


class Pooled(nn.Module):
    """HardSwish (time-averaged) -> global average pool -> Linear, as MobileNetV3's squeeze-
    excitation and classifier read it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16, 12), nn.Linear(12, 5)

    def forward(self, x):
        h = F.hardswish(self.c2(F.relu(self.c1(x))))
        return self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(h, 1).flatten(1))))


def test_reencoder_before_a_global_pool_moves_after_it(tmp_path):
    """auto: the pool reads the HardSwish's analog output and one encoder per pooled element
    (16, not 16 x 8 x 8) feeds the Linear; the engine stays exact; off: as before."""
    x = torch.rand(32, 1, 8, 8)
    path = onnx2snn.export_onnx(Pooled().eval(), x[:2], str(tmp_path / "pooled.onnx"))
    off = prepare_averaged(onnx2snn.import_onnx(path), encode_analog="off")
    on = prepare_averaged(onnx2snn.import_onnx(path), encode_analog="auto")
    points = lambda g: {n.name: n.meta.get("shape") for n in g.graph.nodes  # noqa: E731
                        if n.op == "call_module" and isinstance(g.get_submodule(n.target), Reencode)}
    assert list(points(off).values()) == [(1, 16, 8, 8)]
    assert list(points(on).values()) == [(1, 16)] and all(k.startswith(ENCODE_PREFIX) for k in points(on))
    assert "analog per step" not in {n.form for n in analyze(on).nodes if n.role == "weighted"}
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False)
    rep = onnx2snn.verify(snn, path, data=(x[:4], torch.zeros(4, dtype=torch.long)), timesteps=[3], progress=False)
    assert rep.layers["ops"]["snn"][3]["counts"]["neuron"] == 3 * (8 * 8 * 8 + 16 + 12)  # ReLU, encoders, ReLU
    with torch.no_grad():
        one = snn(x[:5], timesteps=6)
        assert torch.equal(one, snn(x[:5], timesteps=6, chunk=4))
        snn.reset()
        for _ in range(6):
            step = snn.step(x[:5])
        assert torch.equal(step, one)
        ref = onnx2snn.import_onnx(path)(x[:16])
        err = float((snn(x[:16], timesteps=32) - ref).norm() / ref.norm())
        assert err < 0.1, err

"""NIR export / import: the exported file, read back, runs the same network as ours (the
same spike at every step of every neuron, T = 1..64), verify scores it, what NIR cannot
express is refused in one error, and other toolkits' readers behave as the README says."""

import dataclasses

import h5py
import numpy as np
import pytest
import torch

import onnx2snn

nir = pytest.importorskip("nir")

N_TEST = 48


def _nirtorch():
    """nirtorch >= 2.6 (its nir_to_torch; older ones, as sinabs' venv has, differ)."""
    nirtorch = pytest.importorskip("nirtorch")
    from importlib.metadata import version

    if tuple(int(p) for p in version("nirtorch").split(".")[:2]) < (2, 6):
        pytest.skip("these checks are written against nirtorch >= 2.6")
    return nirtorch


@pytest.fixture(scope="module")
def models(tmp_path_factory, digits):
    """digits_resnet and digits_vgg (max-pools replaced by average pools, fine-tuned 2
    epochs) converted with NIR-compatible settings; their folded forms; NIR files."""
    tmp = tmp_path_factory.mktemp("nir")
    xtr, ytr, xte, yte = digits
    out = {}
    res = onnx2snn.export_zoo_model("digits_resnet", str(tmp / "digits_resnet.onnx"))
    out["digits_resnet"] = onnx2snn.convert(res, xtr[:512], signed_relu=False, levels=1, progress=False)
    vgg = onnx2snn.export_zoo_model("digits_vgg", str(tmp / "digits_vgg.onnx"))
    avg = onnx2snn.replace_maxpool(vgg, str(tmp / "digits_vgg_avg.onnx"))
    twin = onnx2snn.finetune(avg, (xtr, ytr), timesteps=32, epochs=2, lr=3e-3, levels=1, progress=False)
    out["digits_vgg"] = onnx2snn.convert(twin, timesteps=32, signed_relu=False, levels=1, progress=False)
    files = {}
    for name, snn in out.items():
        files[name] = str(tmp / f"{name}.nir")
        onnx2snn.export_nir(snn, files[name])
    return {k: (v, onnx2snn.fold_thresholds(v), files[k]) for k, v in out.items()}, tmp


def _record(neurons):
    store, hooks = {}, []
    for k, m in neurons.items():
        hooks.append(m.register_forward_hook(lambda mod, i, o, k=k: store.__setitem__(k, o.detach().clone())))
    return store, hooks


@pytest.mark.parametrize("name", ["digits_resnet", "digits_vgg"])
def test_roundtrip_same_spikes_and_outputs(models, digits, name):
    _, folded, path = models[0][name]
    x, y = digits[2][:N_TEST], digits[3][:N_TEST]
    net = onnx2snn.import_nir(path)
    ts = list(range(1, 65))
    ours, h1 = _record(folded.neurons())
    theirs, h2 = _record(net.neurons())
    with torch.no_grad():
        want = folded.run_timesteps(x, checkpoints=ts)
        got = net.run_timesteps(x, checkpoints=ts)
    for h in h1 + h2:
        h.remove()
    # every neuron: the same spike at every step (so the same counts at every T <= 64)
    names = {n.target: n.name for n in folded.rewritten.graph.nodes if n.op == "call_module"}
    assert set(names[k] for k in ours) == set(theirs)
    total = 0
    for k, s in ours.items():
        assert torch.equal(s, theirs[names[k]]), f"{k}: spikes differ"
        assert set(torch.unique(s).tolist()) <= {0.0, 1.0}
        total += int(s.sum())
    assert total > 0
    for t, a, b in zip(ts, want, got):
        # the readout runs per step in NIR, on the mean in our engine: rounding only
        assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max())), t
        assert torch.equal(a.argmax(1), b.argmax(1)), t
    acc32 = float((got[31].argmax(1) == y).float().mean())
    assert acc32 >= 0.95, acc32


def test_file_states_semantics(models):
    snn, folded, path = models[0]["digits_resnet"]
    g = nir.read(path)
    meta = g.metadata
    text = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in meta.items()}
    assert text["reset"] == "subtract" and float(text["dt"]) == 1.0
    assert int(text["timesteps"]) == 32 and text["producer"] == "onnx2snn"
    assert "direct" in text["input_encoding"] and "mean" in text["output_decoding"]
    assert bytes(np.asarray(meta["source_onnx"], dtype=np.uint8)) == bytes(snn.ann.onnx_info.onnx_bytes)
    ifs = {k: n for k, n in g.nodes.items() if isinstance(n, nir.IF)}
    assert len(ifs) == len(folded.neurons()) == 7
    for n in ifs.values():
        assert (np.asarray(n.v_threshold) == 1).all() and (np.asarray(n.r) == 1).all()
        assert (np.asarray(n.metadata["v_init"]) == 0.5).all()
        assert np.asarray(n.v_threshold).shape == np.asarray(n.metadata["v_init"]).shape
    # residual adds are fan-ins: three neurons take two edges each
    fan_in = {k: sum(1 for a, b in g.edges if b == k) for k in ifs}
    assert sorted(fan_in.values()) == [1, 1, 1, 1, 2, 2, 2]
    assert sum(isinstance(n, nir.Scale) for n in g.nodes.values()) == 1  # the skip straight from a neuron
    with h5py.File(path, "r") as f:  # readable by nir 1.0.4: no v_reset field
        assert not any("v_reset" in f[f"node/nodes/{k}"] for k in ifs)


def test_sum_pooling_matches(models, digits):
    snn, folded, path = models[0]["digits_vgg"]
    x = digits[2][:N_TEST]
    tmp = models[1]
    g = onnx2snn.export_nir(snn, tmp / "vgg_sum.nir", pool="sum")
    assert sum(isinstance(n, nir.SumPool2d) for n in g.nodes.values()) == 3
    assert not any(isinstance(n, nir.AvgPool2d) for n in g.nodes.values())
    a = onnx2snn.import_nir(path, dtype=torch.float64)
    b = onnx2snn.import_nir(tmp / "vgg_sum.nir", dtype=torch.float64)
    with torch.no_grad():
        ya, yb = a(x.double(), timesteps=16), b(x.double(), timesteps=16)
    assert torch.equal(b(x[:4].double(), timesteps=16), yb[:4])  # works without no_grad too
    # 1/4 moves from the pool into the next conv: the same network up to rounding
    assert float((ya - yb).abs().max()) <= 1e-3 * float(ya.abs().max())
    assert (ya.argmax(1) == yb.argmax(1)).float().mean() >= 0.98


def test_float64_export_exact(models, digits):
    snn, _, _ = models[0]["digits_resnet"]
    x = digits[2][:16].double()
    s64 = onnx2snn.convert(snn.ann, digits[0][:512], signed_relu=False, levels=1, progress=False).double()
    folded = onnx2snn.fold_thresholds(s64)
    path = models[1] / "resnet64.nir"
    onnx2snn.export_nir(folded, path, dtype="float64")
    net = onnx2snn.import_nir(path, dtype=torch.float64)
    ours, h1 = _record(folded.neurons())
    theirs, h2 = _record(net.neurons())
    with torch.no_grad():
        a, b = folded(x, timesteps=32), net(x, timesteps=32)
    for h in h1 + h2:
        h.remove()
    names = {n.target: n.name for n in folded.rewritten.graph.nodes if n.op == "call_module"}
    assert all(torch.equal(s, theirs[names[k]]) for k, s in ours.items())
    assert float((a - b).abs().max()) <= 1e-12 * float(a.abs().max())


def test_verify_takes_the_reloaded_network(models, digits):
    snn, folded, path = models[0]["digits_vgg"]
    data = (digits[2][:N_TEST], digits[3][:N_TEST])
    net = onnx2snn.import_nir(path)
    rep_nir = onnx2snn.verify(net, data=data, timesteps=[4, 32], progress=False)
    rep_ours = onnx2snn.verify(folded, data=data, timesteps=[4, 32], progress=False, layers=False)
    for t in (4, 32):
        assert rep_nir.metrics["snn"][t]["top1"] == rep_ours.metrics["snn"][t]["top1"]
        assert rep_nir.metrics["snn"][t]["agreement"] == rep_ours.metrics["snn"][t]["agreement"]
    # the reference is the source ONNX stored in the file (the average-pool model)
    assert "stored" in rep_nir.reference["source"]
    assert rep_nir.metrics["snn"][32]["top1"] >= 0.95
    assert rep_nir.layers is None and rep_nir.config["snn"]["nir"] is True


def test_without_source_verify_needs_reference(models, digits):
    snn, _, _ = models[0]["digits_resnet"]
    path = models[1] / "nosrc.nir"
    onnx2snn.export_nir(snn, path, include_source=False)
    net = onnx2snn.import_nir(path)
    data = (digits[2][:8], digits[3][:8])
    with pytest.raises(onnx2snn.Onnx2SnnError, match="reference="):
        onnx2snn.verify(net, data=data, timesteps=[4], progress=False)
    onnx_path = models[1] / "digits_resnet.onnx"
    rep = onnx2snn.verify(net, reference=str(onnx_path), data=data, timesteps=[4], progress=False)
    assert rep.metrics["reference"]["top1"] == 1.0


def test_refuses_maxpool_and_signed_neurons(tmp_path, digits):
    path = onnx2snn.export_zoo_model("digits_vgg", str(tmp_path / "vgg.onnx"))
    snn = onnx2snn.convert(path, digits[0][:128], progress=False)  # defaults: signed IF, spiking max-pool
    with pytest.raises(onnx2snn.NIRExportError) as e:
        onnx2snn.export_nir(snn, tmp_path / "x.nir")
    ops = {op for _, op, _, _ in e.value.nodes}
    assert ops == {"IFNeuron", "SpikingMaxPool"}
    assert len(e.value.nodes) == 7 + 3  # every neuron and every pool, not just the first
    msg = str(e.value)
    assert "signed_relu=False" in msg and "replace_maxpool" in msg and "features_6" in msg
    assert not (tmp_path / "x.nir").exists()


def test_refuses_detector_with_concat_and_upsampling(tmp_path):
    scenes = onnx2snn.zoo.digit_scenes("val", 8)
    x = onnx2snn.zoo.scenes_to_tensors(scenes)
    x = x[0] if isinstance(x, tuple) else x
    path = onnx2snn.export_zoo_model("yolo_relu", str(tmp_path / "yolo_relu.onnx"))
    snn = onnx2snn.convert(path, x, signed_relu=False, levels=1, progress=False)
    with pytest.raises(onnx2snn.NIRExportError) as e:
        onnx2snn.export_nir(snn, tmp_path / "yolo.nir")
    by_op = {}
    for name, op, reason, fix in e.value.nodes:
        by_op.setdefault(op, []).append(name)
    assert sorted(by_op["interpolate"]) == ["up_1_resize", "up_resize"]  # both upsamplings
    assert len(by_op["SpikingMaxPool"]) == 3  # SPPF
    assert len(by_op["getitem"]) == 10  # the C2f channel splits
    assert "upsampling has no NIR node" in str(e.value)


def test_cli_export(models, tmp_path, capsys):
    from onnx2snn.cli import main

    snn, folded, _ = models[0]["digits_resnet"]
    src = snn.save(tmp_path / "resnet.snn.pt")
    assert main(["export", src, "--format", "nir", "-o", str(tmp_path / "r.nir"), "--pool", "sum"]) == 0
    assert "7 IF" in capsys.readouterr().out
    g = nir.read(str(tmp_path / "r.nir"))
    assert any(isinstance(n, nir.SumPool2d) for n in g.nodes.values())
    assert main(["export", str(tmp_path / "missing.snn.pt")]) == 2


def test_import_errors(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(onnx2snn.InvalidModelError, match="not a readable NIR file"):
        onnx2snn.import_nir(bad)
    g = nir.NIRGraph.from_list(nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3)))
    with pytest.raises(onnx2snn.InvalidModelError, match="LI"):
        onnx2snn.import_nir(g)


def test_nir_spec_if_without_our_metadata():
    """A foreign file: NIR's IF (>= 1.0.5) fires when v > v_threshold and resets to v_reset."""
    kw = {"v_reset": np.full(2, 0.25)} if "v_reset" in {f.name for f in dataclasses.fields(nir.IF)} else {}
    g = nir.NIRGraph.from_list(nir.IF(r=np.ones(2), v_threshold=np.ones(2), **kw))
    net = onnx2snn.import_nir(g)
    x = torch.tensor([[0.5, 1.0]])
    spikes = []
    h = next(iter(net.neurons().values())).register_forward_hook(lambda m, i, o: spikes.append(o))
    with torch.no_grad():
        net(x, timesteps=4)
    h.remove()
    s = spikes[0].reshape(4, 2)
    if kw:  # v: 0.5, 1.0 (not > 1), 1.5 -> spike, reset 0.25, 0.75 | 1, 2 -> spike, 0.25+1, ...
        assert s[:, 0].tolist() == [0, 0, 1, 0] and s[:, 1].tolist() == [0, 1, 1, 1]
    else:  # nir <= 1.0.4: v > v_threshold, then v -= v_threshold: 0.5, 1, 1.5 -> 0.5 | 1, 2 -> 1, 2 -> 1
        assert s[:, 0].tolist() == [0, 0, 1, 0] and s[:, 1].tolist() == [0, 1, 1, 1]


# -- other toolkits' readers ------------------------------------------------------------


def test_nirtorch_reader_with_node_map(models, digits):
    """nirtorch's own graph executor, stepping one timestep per call, with a node map of
    step-wise modules (nir_import.nirtorch_node_map: a subtractive-reset IF): the same accuracy at T=32."""
    nirtorch = _nirtorch()
    from onnx2snn.deploy.nir_import import nirtorch_node_map

    snn, folded, path = models[0]["digits_resnet"]
    x, y = digits[2][:N_TEST], digits[3][:N_TEST]
    gm = nirtorch.nir_to_torch(nir.read(path), nirtorch_node_map(nir))
    state, acc = None, 0
    with torch.no_grad():
        for _ in range(32):
            out, state = gm(x, state)
            acc = acc + out
        ours = folded(x, timesteps=32)
    theirs = acc / 32
    # a step-wise membrane (v - 1 after each spike) rounds differently from our closed form
    # (cumulative input, floor): a few spikes move, the outputs stay within 1 %
    assert float((theirs - ours).abs().max()) <= 1e-2 * float(ours.abs().max())
    assert torch.equal(theirs.argmax(1), ours.argmax(1))
    assert float((theirs.argmax(1) == y).float().mean()) == float((ours.argmax(1) == y).float().mean())


def test_nirtorch_default_map_bugs(models):
    """Documented in the README: nirtorch's default Affine map leaves the bias unset and its
    Flatten flattens the batch dim (NIR dims exclude it). We always pass our own node map."""
    nirtorch = _nirtorch()
    from nirtorch.nir_interpreter import DEFAULT_MAP

    aff = nir.Affine(weight=np.ones((2, 3), dtype=np.float32), bias=np.full(2, 5.0, dtype=np.float32))
    lin = DEFAULT_MAP[nir.Affine](aff)
    assert not torch.allclose(lin.bias, torch.full((2,), 5.0))  # bias not taken from the file
    flat = DEFAULT_MAP[nir.Flatten](nir.Flatten(input_type={"input": np.array([2, 3])}, start_dim=0))
    assert flat(torch.zeros(4, 2, 3)).shape == (24,)  # batch flattened away


def test_snntorch_reader_known_bugs(models):
    """snnTorch 1.0.0's import_from_nir maps IF to a *leaky* neuron (beta 0.9) that returns a
    (spike, membrane) tuple, which the next layer cannot take, and has no Scale: it cannot
    run these files (README: known importer bugs)."""
    pytest.importorskip("snntorch")
    _nirtorch()
    import snntorch
    from snntorch.import_nir import import_from_nir

    snn, folded, path = models[0]["digits_vgg"]
    gm = import_from_nir(nir.read(path))
    leaky = [m for m in gm.modules() if isinstance(m, snntorch.Leaky)]
    assert len(leaky) == 7 and all(abs(float(m.beta) - 0.9) < 1e-6 for m in leaky)
    with pytest.raises(TypeError):
        gm(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="Scale"):
        import_from_nir(nir.read(models[0]["digits_resnet"][2]))


def test_sinabs_reader(models, digits):
    """sinabs (pins nir <= 1.0.4; runs in its own venv, see README): the VGG with sum pooling
    reads and scores like ours at T=32; the ResNet loses its residual branches (the Scale node
    is dropped, and a shortcut that the executor orders after its sum arrives one call late)."""
    pytest.importorskip("sinabs")
    from sinabs import from_nir

    x, y = digits[2][:N_TEST], digits[3][:N_TEST]
    B, T = len(x), 32
    tmp = models[1]
    res = {}
    for name in ("digits_vgg", "digits_resnet"):
        snn, folded, _ = models[0][name]
        path = tmp / f"{name}_sum.nir"
        onnx2snn.export_nir(snn, path, pool="sum")
        net = from_nir(nir.read(str(path)), batch_size=B)
        xin = x.unsqueeze(1).expand(B, T, *x.shape[1:]).reshape(B * T, *x.shape[1:])  # sinabs: batch-major
        with torch.no_grad():
            out = net(xin)
            out = (out[0] if isinstance(out, tuple) else out).reshape(B, T, -1).mean(1)
            ours = folded(x, timesteps=T)
        res[name] = (float((out.argmax(1) == y).float().mean()), float((ours.argmax(1) == y).float().mean()))
    assert abs(res["digits_vgg"][0] - res["digits_vgg"][1]) <= 0.05, res
    assert res["digits_resnet"][0] < res["digits_resnet"][1] - 0.3, res


class _CatNet(torch.nn.Module):
    """Two branches concatenated and read by a convolution, a residual add, average pooling."""

    def __init__(self):
        super().__init__()
        r = torch.nn.ReLU
        self.a = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), r())
        self.b = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), r())
        self.mix = torch.nn.Sequential(torch.nn.Conv2d(10, 8, 3, padding=1), r())
        self.skip = torch.nn.Conv2d(6, 8, 1)
        self.post = r()
        self.pool = torch.nn.AvgPool2d(2)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        y = self.post(self.mix(torch.cat([a, b], 1)) + self.skip(a))
        return self.fc(torch.flatten(self.pool(y), 1))


def test_concat_into_conv_split_per_block_and_calibrated_bias(tmp_path, digits):
    """A Concat read by a convolution is written as one convolution per block; a neuron
    bias and per-channel initial potential from onnx2snn.calibrate travel too (float64:
    the same spikes as ours)."""
    torch.manual_seed(0)
    model = _CatNet().eval()
    x = digits[2][:24]
    src = onnx2snn.export_onnx(model, x[:1], str(tmp_path / "cat.onnx"))
    snn = onnx2snn.convert(src, digits[0][:256], signed_relu=False, levels=1, progress=False)
    onnx2snn.correct(snn, digits[0][:256], timesteps=8, progress=False)
    assert any(m.use_bias for m in snn.neurons().values())
    snn = snn.double()
    folded = onnx2snn.fold_thresholds(snn)
    g = onnx2snn.export_nir(folded, tmp_path / "cat.nir", dtype="float64")
    blocks = [k for k in g.nodes if "_block" in k]
    assert len(blocks) == 2 and {g.nodes[k].weight.shape[1] for k in blocks} == {6, 4}
    assert any(np.asarray(n.metadata["v_init"]).std() > 0 for n in g.nodes.values() if isinstance(n, nir.IF))
    net = onnx2snn.import_nir(tmp_path / "cat.nir", dtype=torch.float64)
    ours, h1 = _record(folded.neurons())
    theirs, h2 = _record(net.neurons())
    with torch.no_grad():
        a, b = folded(x.double(), timesteps=16), net(x.double(), timesteps=16)
    for h in h1 + h2:
        h.remove()
    names = {n.target: n.name for n in folded.rewritten.graph.nodes if n.op == "call_module"}
    assert all(torch.equal(s, theirs[names[k]]) for k, s in ours.items())
    assert float((a - b).abs().max()) <= 1e-9 * float(a.abs().max())

"""onnx2snn.verify on real data (digits ResNet, tiny-YOLO on digit scenes): every number
in the report recomputed independently here, plus the errors users meet and the CLI."""

import json
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onnx2snn
from onnx2snn import zoo
from onnx2snn.cli import main
from onnx2snn.export import export_zoo_model
from onnx2snn.verification import ENERGY_AC_PJ, ENERGY_MAC_PJ, FP32, INT8, BatchMeta

TS = [1, 2, 4, 8, 16]
N_TEST, BATCH = 160, 64


def chunks(x, n=BATCH):
    return [x[i:i + n] for i in range(0, len(x), n)]


@pytest.fixture(scope="module")
def cls(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify_cls")
    path = str(export_zoo_model("digits_resnet", d / "digits_resnet.onnx"))
    xtr, _ = zoo.load_digits(16, "train")
    xte, yte = zoo.load_digits(16, "test")
    snn = onnx2snn.convert(path, xtr[:384], timesteps=16, levels=1, progress=False)  # binary spikes: events = nonzeros
    x, y = torch.as_tensor(xte[:N_TEST]), torch.as_tensor(yte[:N_TEST])
    report = onnx2snn.verify(snn, reference=path, data=(x, y), timesteps=TS, batch_size=BATCH, progress=False,
                             return_outputs=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"], disabled_optimizers=["Pad_Fusion"])
    ref = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        sweep = [torch.cat(parts) for parts in zip(*[snn.run_timesteps(c, checkpoints=TS) for c in chunks(x)])]
    return SimpleNamespace(path=path, snn=snn, x=x, y=y, report=report, ref=ref, sweep=dict(zip(TS, sweep)), dir=d)


def top1(z, y):
    return int((z.argmax(1) == y).sum()) / len(y)


def test_reference_is_onnxruntime_on_the_source_file(cls):
    r = cls.report
    assert r.metrics["reference"]["top1"] == top1(cls.ref, cls.y)
    assert r.metrics["reference"]["top5"] == int((cls.ref.topk(5, 1).indices == cls.y[:, None]).any(1).sum()) / N_TEST
    assert torch.allclose(r.outputs["reference"][0], cls.ref, atol=1e-6)
    assert r.reference["source"] == cls.path and "Pad_Fusion" in r.reference["disabled_optimizers"]
    assert r.reference["ann_twin_rel_l2"] < 1e-5  # the twin equals the file
    assert r.n_samples == N_TEST and r.metrics["reference"]["top1"] >= 0.95


def test_snn_metrics_equal_independent_computation(cls):
    r = cls.report
    for t in TS:
        z = cls.sweep[t]
        m = r.metrics["snn"][t]
        assert m["top1"] == top1(z, cls.y)
        assert m["agreement"] == int((z.argmax(1) == cls.ref.argmax(1)).sum()) / N_TEST
        assert m["rel_l2"] == pytest.approx(float((z - cls.ref).norm() / cls.ref.norm()), rel=1e-5)
    assert r.metrics["snn"][16]["top1"] > r.metrics["snn"][1]["top1"]
    assert r.metrics["snn"][16]["rel_l2"] < r.metrics["snn"][1]["rel_l2"]


def test_one_run_sweep_equals_separate_runs(cls):
    with torch.no_grad():
        for t in TS:
            sep = torch.cat([cls.snn(c, timesteps=t) for c in chunks(cls.x)])
            assert torch.equal(sep, cls.report.outputs[t][0]), f"T={t}"
            assert top1(sep, cls.y) == cls.report.metrics["snn"][t]["top1"]


def test_layer_error_falls_with_T_and_rates_match_hooks(cls):
    L = cls.report.layers
    names = [n["name"] for n in L["neurons"]]
    assert names == list(cls.snn.neurons())
    for n in L["neurons"]:
        errs = [n["rel_error"][t] for t in TS]
        assert errs[-1] < 0.5 * errs[0], n["name"]
        assert all(b < a * 1.05 for a, b in zip(errs, errs[1:])), n["name"]
        assert all(0 < n["firing_rate"][t] <= 1 for t in TS)
    # firing rate of one neuron layer, counted here with its own hook
    neuron = cls.snn.neurons()["layers_1_relu1"]
    count = []
    h = neuron.register_forward_hook(lambda m, i, o: count.append(int((o != 0).sum())))
    with torch.no_grad():
        for c in chunks(cls.x):
            cls.snn(c, timesteps=8)
    h.remove()
    n = next(r for r in L["neurons"] if r["name"] == "layers_1_relu1")
    assert n["firing_rate"][8] == pytest.approx(sum(count) / (N_TEST * n["neurons"] * 8), rel=1e-9)


def _fanout(conv: nn.Conv2d, shape):
    """Synapses per input element, counted with a transposed convolution of ones."""
    out = F.conv2d(torch.zeros(1, *shape), conv.weight, stride=conv.stride, padding=conv.padding).shape
    ones_w = torch.ones_like(conv.weight)
    return F.conv_transpose2d(torch.ones(out), ones_w, stride=conv.stride, padding=conv.padding,
                              output_padding=[(s + 2 * p - k) % st for s, p, k, st in
                                              zip(shape[1:], conv.padding, conv.kernel_size, conv.stride)])[0]


def test_synops_and_energy(cls):
    L = cls.report.layers
    ops, rows = L["ops"], {w["name"]: w for w in L["weighted"]}
    assert rows["stem_0"]["input"] == "analog" and rows["fc"]["input"] == "readout"
    assert rows["stem_0"]["macs"] == 16 * 46 * 46  # 3x3 taps on 16x16 with padding 1: 46 per axis, 16 filters
    assert rows["fc"]["macs"] == 64 * 10
    assert ops["ann_macs"] == sum(w["macs"] for w in L["weighted"])
    # SynOps of layers_0_conv2, which reads the spikes of layers_0_relu1 directly
    conv = cls.snn.rewritten.get_submodule("layers_0_conv2")
    fan = _fanout(conv, (16, 16, 16))
    assert float(fan.sum()) == rows["layers_0_conv2"]["macs"]
    syn = []
    h = cls.snn.neurons()["layers_0_relu1"].register_forward_hook(
        lambda m, i, o: syn.append(float(((o != 0).float() * fan).sum())))
    with torch.no_grad():
        for c in chunks(cls.x):
            cls.snn(c, timesteps=4)
    h.remove()
    assert rows["layers_0_conv2"]["synops"][4] == pytest.approx(sum(syn) / N_TEST, rel=1e-9)
    outs = {}  # output elements per sample of every weight layer with a bias
    hs = [cls.snn.ann.get_submodule(w["name"]).register_forward_hook(
        lambda m, i, o, k=w["name"]: outs.update({k: o[0].numel() if m.bias is not None else 0}))
        for w in L["weighted"]]
    with torch.no_grad():
        cls.snn.ann(cls.x[:1])
    for h in hs:
        h.remove()
    bias_core = sum(v for k, v in outs.items() if rows[k]["input"] == "spiking")
    bias_once = sum(v for k, v in outs.items() if rows[k]["input"] != "spiking")
    for t in TS:
        tot = ops["snn"][t]
        spiking = [w for w in L["weighted"] if "synops" in w]
        assert tot["synops"] == pytest.approx(sum(w["synops"][t] for w in spiking)) and tot["synops"] > 0
        assert all(w["synops"][t] <= w["macs"] * t * (1 + 1e-9) for w in spiking if w["input"] == "spiking")
        assert tot["macs"] == rows["stem_0"]["macs"]  # the analog input layer: computed once (static prefix)
        c = tot["counts"]
        assert c["neuron"] == t * sum(n["neurons"] for n in L["neurons"])  # every neuron, every step
        # accumulates: the events x fan-out, plus a bias add per output element (per step in the core,
        # once for the readout); the analog stem layer: MACs and its bias once
        assert c["ac"] == pytest.approx(tot["synops"] + t * bias_core + bias_once, rel=1e-12)
        assert tot["energy_pj"] == pytest.approx(sum(FP32[k] * v for k, v in c.items()))
        assert tot["energy_int8_pj"] == pytest.approx(sum(INT8[k] * v for k, v in c.items()))
        assert tot["energy_ratio_vs_ann"] == pytest.approx(tot["energy_pj"] / ops["ann_energy_pj"])
        assert tot["energy_ratio_vs_int8_ann"] == pytest.approx(tot["energy_int8_pj"] / ops["ann_energy_int8_pj"])
        assert c["exp"] == c["div"] == c["sqrt"] == c["mul"] == 0  # a ReLU ResNet has no float work but its adds
    a = ops["ann_counts"]
    assert a["mac"] == ops["ann_macs"] and a["ac"] == bias_core + bias_once and a["neuron"] == 0
    assert a["cmp"] == sum(n["neurons"] for n in L["neurons"])  # one compare per ReLU element
    assert ops["ann_energy_pj"] == pytest.approx(sum(FP32[k] * v for k, v in a.items()))
    assert FP32["ac"] == ENERGY_AC_PJ == 0.9 and FP32["mac"] == ENERGY_MAC_PJ == pytest.approx(4.6)
    assert INT8["ac"] == 0.1 and INT8["mac"] == pytest.approx(0.3) and INT8["neuron"] == pytest.approx(0.3)
    calls = []  # what the MACs-once count rests on: the engine runs the analog layer once per input
    h = cls.snn.prefix.get_submodule("stem_0").register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    with torch.no_grad():
        cls.snn(cls.x[:4], timesteps=8)
    h.remove()
    assert calls == [4]
    assert ops["costs"]["fp32_pj"] == FP32 and ops["costs"]["int8_pj"] == INT8


def test_report_table_json_plot_summary(cls, tmp_path):
    r = cls.report
    ref = r.metrics["reference"]["top1"]
    def ok(t, tol):  # within tol of the reference's top-1, and agreeing with it on all but tol of the samples
        return r.metrics["snn"][t]["top1"] >= ref - tol and r.metrics["snn"][t]["agreement"] >= 1 - tol

    first = next((t for t in TS if ok(t, 0.01)), None)
    assert r.summary["metric"] == "top1" and r.summary["criteria"] == ["top1", "agreement"]
    assert r.summary["smallest_t"] == first == r.smallest_t()
    assert r.smallest_t(metric="top1") == next(t for t in TS if r.metrics["snn"][t]["top1"] >= ref - 0.01)
    assert r.smallest_t(tol=1.0) == 1
    loose = next(t for t in TS if ok(t, 0.3))
    assert r.smallest_t(tol=0.3) == loose
    r2 = onnx2snn.VerifyReport(**{**r.__dict__, "tolerance": 1.0})
    assert r2.summary["smallest_t"] == 1 and r.summary["smallest_t"] == first
    data = json.loads(open(r.to_json(tmp_path / "r" / "report.json")).read())
    assert data["metrics"]["snn"]["16"]["top1"] == r.metrics["snn"][16]["top1"]
    assert data["layers"]["ops"]["constants"]["accumulate_pj"] == 0.9 and data["config"]["timesteps"] == TS
    assert data["summary"]["smallest_t"] == first and data["reference"]["source"] == cls.path
    png = r.plot(tmp_path / "r" / "report.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    table = r.table()
    assert "reference (onnxruntime)" in table and all(f"SNN T={t} " in table for t in TS)
    assert "layers_2_relu2" in table and "0.9 pJ" in table


def test_data_forms_and_no_labels(cls, tmp_path):
    x, y = cls.x[:100], cls.y[:100]
    kw = dict(timesteps=[2, 8], batch_size=50, progress=False, layers=False)
    base = onnx2snn.verify(cls.snn, cls.path, data=(x, y), **kw).metrics
    np.savez(tmp_path / "test.npz", x=cls.x.numpy(), y=cls.y.numpy())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    for data in (str(tmp_path / "test.npz"), loader, torch.utils.data.TensorDataset(x, y)):
        assert onnx2snn.verify(cls.snn, None, data=data, limit=100, **kw).metrics == base
    unlabelled = onnx2snn.verify(cls.snn, cls.path, data=x, **kw)
    assert set(unlabelled.metrics["snn"][8]) == {"agreement", "rel_l2"} and unlabelled.metrics["reference"] == {}
    assert unlabelled.summary["metric"] == "agreement"
    assert unlabelled.metrics["snn"][8]["agreement"] == base["snn"][8]["agreement"]


def test_errors_name_the_problem(cls, tmp_path):
    snn, x, y = cls.snn, cls.x[:8], cls.y[:8]
    kw = dict(timesteps=[1, 2], progress=False)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx file")
    with pytest.raises(onnx2snn.InvalidModelError, match="not a readable ONNX"):
        onnx2snn.verify(snn, str(bad), data=(x, y), **kw)
    other = onnx2snn.export_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.zeros(1, 3, 8, 8),
                                 tmp_path / "other.onnx")
    with pytest.raises(onnx2snn.ShapeError, match="not the model this SNN was converted from"):
        onnx2snn.verify(snn, other, data=(x, y), **kw)
    same_in = onnx2snn.export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(256, 7)), torch.zeros(1, 1, 16, 16),
                                   tmp_path / "same_in.onnx")
    with pytest.raises(onnx2snn.ShapeError, match=r"outputs of shapes \[\(8, 7\)\].*not the same model"):
        onnx2snn.verify(snn, same_in, data=(x, y), **kw)
    with pytest.raises(onnx2snn.ShapeError, match=r"shape \(1, 8, 8\).*converted for input \(1, 16, 16\)"):
        onnx2snn.verify(snn, None, data=torch.zeros(4, 1, 8, 8), **kw)
    with pytest.raises(onnx2snn.DataError, match="empty"):
        onnx2snn.verify(snn, None, data=x[:0], **kw)
    nan = x.clone()
    nan[3, 0, 2, 2] = float("nan")
    with pytest.raises(onnx2snn.DataError, match="NaN"):
        onnx2snn.verify(snn, None, data=(nan, y), **kw)
    with pytest.raises(onnx2snn.DataError, match="needs data"):
        onnx2snn.verify(snn, None, **kw)
    with pytest.raises(onnx2snn.Onnx2SnnError, match="task='segmentation' is not valid"):
        onnx2snn.verify(snn, None, data=x, task="segmentation", **kw)
    with pytest.raises(onnx2snn.Onnx2SnnError, match=r"timesteps=\[0, 4\] is not valid"):
        onnx2snn.verify(snn, None, data=x, timesteps=[0, 4], progress=False)
    with pytest.raises(onnx2snn.Onnx2SnnError, match="needs postprocess"):
        onnx2snn.verify(snn, None, data=x, task="detection", **kw)


def test_cli_end_to_end(cls, tmp_path, capsys):
    snn_path = cls.snn.save(tmp_path / "digits.snn.pt")
    np.savez(tmp_path / "test.npz", x=cls.x.numpy(), y=cls.y.numpy())
    out = tmp_path / "report"
    rc = main(["verify", snn_path, "--reference", cls.path, "--data", str(tmp_path / "test.npz"),
               "--task", "classification", "--timesteps", "1,4,16", "--limit", "64", "--batch-size", "32",
               "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "reference (onnxruntime)" in printed and "SNN T=16" in printed
    data = json.loads((out / "report.json").read_text())
    assert data["n_samples"] == 64 and set(data["metrics"]["snn"]) == {"1", "4", "16"}
    assert (out / "report.md").read_text().strip() in printed and (out / "report.png").stat().st_size > 0
    # the same through the API: the saved file gives the same numbers
    again = onnx2snn.verify(onnx2snn.load(snn_path), cls.path, data=(cls.x[:64], cls.y[:64]), timesteps=[1, 4, 16],
                            batch_size=32, progress=False, layers=False)
    assert data["metrics"]["snn"]["16"]["top1"] == again.metrics["snn"][16]["top1"]
    rc = main(["verify", snn_path, "--data", str(tmp_path / "missing.npz"), "--out", str(out), "--quiet"])
    assert rc == 2 and "no such file" in capsys.readouterr().err


# -- detection -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def det(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify_det")
    path = str(export_zoo_model("tiny_yolo", d / "tiny_yolo.onnx"))
    calib, _ = zoo.scenes_to_tensors(zoo.digit_scenes("train", n=96))
    snn = onnx2snn.convert(path, calib, timesteps=8, progress=False)
    scenes = zoo.digit_scenes("val", n=32)
    js = zoo.write_coco(scenes, d / "coco")
    return SimpleNamespace(path=path, snn=snn, scenes=scenes, json=js, images=d / "coco" / "images")


def test_detection_map_equals_direct_evaluation(det):
    r = onnx2snn.verify(det.snn, det.path, data=str(det.images), annotations=str(det.json), task="detection",
                        postprocess="tiny-yolo", timesteps=[2, 8], batch_size=32, progress=False)
    read = zoo.read_coco(det.json)
    x = torch.from_numpy(np.stack([s.image for s in read]))[:, None]
    ids = [s.image_id for s in read]
    # onnxruntime as the spec says: Pad_Fusion off (tiny-YOLO has Pad -> MaxPool, which it fuses
    # wrongly in some versions, e.g. 1.30)
    sess = ort.InferenceSession(det.path, providers=["CPUExecutionProvider"], disabled_optimizers=["Pad_Fusion"])
    ref = tuple(torch.from_numpy(o) for o in sess.run(None, {"input": x.numpy()}))
    expect = zoo.evaluate_coco(zoo.to_coco_detections(zoo.tiny_yolo_decode(ref), ids), str(det.json))
    assert r.metrics["reference"]["mAP50"] == pytest.approx(expect["mAP50"], abs=1e-12)
    assert r.metrics["reference"]["mAP50_95"] == pytest.approx(expect["mAP50_95"], abs=1e-12)
    assert expect["mAP50"] > 0.9
    with torch.no_grad():
        out8 = det.snn(x, timesteps=8)
    snn8 = zoo.evaluate_coco(zoo.to_coco_detections(zoo.tiny_yolo_decode(out8), ids), str(det.json))
    assert r.metrics["snn"][8]["mAP50"] == pytest.approx(snn8["mAP50"], abs=1e-12)
    assert r.metrics["snn"][8]["mAP50_95"] == pytest.approx(snn8["mAP50_95"], abs=1e-12)
    # the readout convs are charged for their per-step input
    rows = {w["name"]: w for w in r.layers["weighted"]}
    assert {k for k, w in rows.items() if w["input"] == "readout"} == {"head_coarse_1", "head_fine_1"}
    assert all(rows[k]["synops"][8] > 0 for k in ("head_coarse_1", "head_fine_1"))
    assert r.summary["metric"] == "mAP50_95" and "mAP@0.5:0.95" in r.table()


def test_detection_postprocess_hook_perfect_and_shifted(det):
    gt = json.loads(det.json.read_text())
    by_image = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    seen = []

    def boxes(shift):
        def post(outputs, meta: BatchMeta):
            assert isinstance(outputs, tuple) and outputs[0].shape[0] == len(meta.image_ids)
            assert meta.input_size == (64, 64) and meta.sizes[0] == (64, 64)
            seen.extend(meta.image_ids)
            return [{"image_id": i, "category_id": a["category_id"], "score": 1.0,
                     "bbox": [a["bbox"][0] + shift * a["bbox"][2]] + a["bbox"][1:]}
                    for i in meta.image_ids for a in by_image.get(i, [])]
        return post

    kw = dict(task="detection", timesteps=[1, 2], batch_size=16, progress=False, layers=False)
    perfect = onnx2snn.verify(det.snn, None, data=det.scenes, postprocess=boxes(0.0), **kw)
    assert sorted(set(seen)) == [s.image_id for s in det.scenes]
    for m in [perfect.metrics["reference"]] + list(perfect.metrics["snn"].values()):
        assert m["mAP50"] == pytest.approx(1.0) and m["mAP50_95"] == pytest.approx(1.0)
    # shifted by 20 % of their width: IoU 0.8 / 1.2 = 2/3, a hit at IoU 0.5 ... 0.65 only
    shifted = onnx2snn.verify(det.snn, None, data=det.scenes, postprocess=boxes(0.2), **kw)
    for m in [shifted.metrics["reference"]] + list(shifted.metrics["snn"].values()):
        assert m["mAP50"] == pytest.approx(1.0) and m["mAP50_95"] == pytest.approx(0.4)
    with pytest.raises(onnx2snn.DataError, match="needs annotations"):
        onnx2snn.verify(det.snn, None, data=str(det.images), postprocess="tiny-yolo", **kw)
    with pytest.raises(onnx2snn.Onnx2SnnError, match="unknown postprocess"):
        onnx2snn.verify(det.snn, None, data=det.scenes, postprocess="yolov99", **kw)

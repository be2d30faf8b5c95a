"""Activation kinds, neuron mapping, the spiking / post-processing split, and `inspect`."""

import json

import onnx2snn
from onnx2snn.cli import main
from onnx2snn.graph.analysis import analyze


def test_tiny_yolo_activations_are_leaky_and_all_spiking(exported):
    a = analyze(onnx2snn.import_onnx(exported("tiny_yolov3")))
    acts = a.activations()
    assert len(acts) == 10 and {x.kind for x in acts} == {"LeakyReLU(0.1)"}
    assert all("IBT" in x.neuron and x.part == "core" for x in acts)
    assert not a.non_convertible
    assert {n.op for n in a.part("readout")} == {"Conv2d"}  # the two head convs


def test_yolov8_split_and_silu_time_averaged(exported):
    a = analyze(onnx2snn.import_onnx(exported("yolov8_like")))
    post_ops = {n.op for n in a.part("post")}
    assert {"Sigmoid", "Softmax"} <= post_ops
    assert not a.non_convertible  # SiLU: time-averaged operators, no blocker
    silu = [n for n in a.nodes if n.kind == "SiLU"]
    assert len(silu) == 35 and all(n.role == "averaged" and n.part == "core" for n in silu)
    assert {n.op for n in a.part("readout")} >= {"Conv2d", "cat"}


def test_resnet_readout_is_pool_flatten_fc(exported):
    a = analyze(onnx2snn.import_onnx(exported("resnet18")))
    assert [n.op for n in a.part("readout")] == ["AdaptiveAvgPool2d", "Flatten", "Linear"]
    assert len(a.activations()) == 17


def test_inspect_cli_tables_and_json(exported, capsys):
    path = exported("op_zoo")
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "signed IBT neuron" not in out or "PReLU" in out
    assert "time-averaged Tanh" in out and "How each node runs in the SNN" in out
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["onnx_op_counts"]["ConvTranspose"] == 1
    assert not info["non_convertible"]
    forms = {n["op"]: n["form"] for n in info["nodes"]}
    assert {forms[k] for k in ("Tanh", "HardSwish")} == {"time-averaged"}
    assert info["forms"]["neuron"] >= 1 and info["forms"]["spike-driven"] >= 1


def test_inspect_cli_reports_bad_file(tmp_path, capsys):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    assert main(["inspect", str(bad)]) == 2
    assert "error" in capsys.readouterr().err


def _mobilenet_v3_path(onnx_dir):
    import torch
    from test_importer import _tv_small

    path = str(onnx_dir / "mnv3_blockers.onnx")
    onnx2snn.export_onnx(_tv_small("mobilenet_v3"), torch.randn(1, 3, 32, 32), path)
    return path


def test_every_blocker_is_named_at_once_before_calibration(onnx_dir, capsys, monkeypatch):
    """Ops with no time-averaged form (a comparison, a cast of its booleans) inside the spiking
    part: all named in one inspect table and in one convert error, before any calibration."""
    import pytest
    import torch
    from torch import nn

    from onnx2snn import api

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(64, 3)

        def forward(self, x):
            h = torch.relu(self.c1(x))
            h = h * (h > 0.5).float()
            return self.fc(torch.relu(self.c2(h)).flatten(1))

    path = onnx2snn.export_onnx(Masked().eval(), torch.rand(1, 1, 4, 4), str(onnx_dir / "masked.onnx"))
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    kinds = {b["kind"]: b for b in info["blockers"]}
    assert "gt" in kinds and "integers" in kinds["gt"]["reason"] and len(kinds) >= 2
    monkeypatch.setattr(api, "calibrate_thresholds", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("calibration started before the blockers were reported")))
    with pytest.raises(onnx2snn.Onnx2SnnError) as e:
        onnx2snn.convert(path, torch.rand(4, 1, 4, 4), timesteps=4)
    assert set(kinds) <= set(e.value.ops) and "gt" in str(e.value)


def test_mobilenet_v3_gates_are_time_averaged(onnx_dir, capsys):
    """MobileNetV3: HardSwish, HardSigmoid and the squeeze-excitation products run as
    time-averaged operators; inspect shows each node's form."""
    path = _mobilenet_v3_path(onnx_dir)
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert not info["blockers"]
    forms = {}
    for n in info["nodes"]:
        forms.setdefault(n["op"], set()).add(n["form"])
    assert forms["HardSwish"] <= {"time-averaged", "static"} and forms["mul"] == {"time-averaged"}
    assert forms["HardSigmoid"] == {"time-averaged"} and "neuron" in forms["re-encode"]


def test_transformer_converts_with_time_averaged_ops(onnx_dir):
    """ViT: GELU (written with Erf by the exporter), softmax attention, LayerNorm, products of
    two computed tensors: no blocker; the SNN's analog mode equals the twin at batch 3 and its
    spiking output approaches it as T grows."""
    import torch
    from test_importer import _tv_small

    path = str(onnx_dir / "vit_blockers.onnx")
    onnx2snn.export_onnx(_tv_small("vit"), torch.randn(1, 3, 32, 32), path)
    twin = onnx2snn.import_onnx(path)
    a = analyze(twin)
    assert not a.non_convertible
    roles = {}
    for n in a.nodes:
        roles.setdefault(n.kind or n.op, set()).add(n.role)
    assert all("averaged" in roles[k] for k in ("LayerNorm", "matmul", "Softmax", "GELU")), roles
    torch.manual_seed(0)
    x = torch.randn(24, 3, 32, 32)
    snn = onnx2snn.convert(path, x, timesteps=8, progress=False)
    with torch.no_grad():
        ref = twin(x[:3])
        snn.set_analog(True)
        assert (snn(x[:3]) - ref).abs().max() <= 1e-4
        snn.set_analog(False)
        outs = snn.run_timesteps(x[:3], checkpoints=[2, 8, 32])
    err = [float((o - ref).norm() / ref.norm()) for o in outs]
    assert err[2] < err[1] < err[0] and err[2] < 0.35, err

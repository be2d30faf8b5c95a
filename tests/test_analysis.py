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


def test_yolov8_split_and_non_convertible(exported):
    a = analyze(onnx2snn.import_onnx(exported("yolov8_like")))
    post_ops = {n.op for n in a.part("post")}
    assert {"Sigmoid", "Softmax"} <= post_ops
    assert list(a.non_convertible) == ["SiLU"] and len(a.non_convertible["SiLU"]) == 35
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
    assert "Cannot be converted to spiking" in out and "Tanh" in out
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["onnx_op_counts"]["ConvTranspose"] == 1
    assert set(info["non_convertible"]) >= {"Tanh", "Sigmoid", "HardSwish"}


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
    """MobileNetV3: the non-spiking activations AND the squeeze-excitation products, in one
    inspect table and in one convert error raised before any calibration data is read."""
    import pytest

    path = _mobilenet_v3_path(onnx_dir)
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    kinds = {b["kind"]: b for b in info["blockers"]}
    assert {"HardSwish", "HardSigmoid", "mul"} <= set(kinds)
    assert "squeeze-excitation" in kinds["mul"]["reason"] and "--replace" in kinds["HardSwish"]["way_out"]
    assert main(["inspect", path]) == 0
    table = capsys.readouterr().out
    assert "HardSwish" in table and "squeeze-excitation" in table

    import torch
    from onnx2snn import api

    def no_calibration(*a, **k):
        raise AssertionError("calibration started before the blockers were reported")

    monkeypatch.setattr(api, "calibrate_thresholds", no_calibration)
    data = torch.rand(4, 3, 32, 32)
    with pytest.raises(onnx2snn.NonSpikingActivationError) as e:
        onnx2snn.convert(path, data, timesteps=4)
    assert set(e.value.nodes) == {"HardSwish", "HardSigmoid"} and set(e.value.ops) == {"mul"}
    assert "squeeze-excitation" in str(e.value)
    # after replacing the activations, the products remain: named before calibration too
    with pytest.raises(onnx2snn.NonSpikingActivationError) as e:
        onnx2snn.convert(path, data, timesteps=4, replace_activations={"HardSwish": "ReLU", "HardSigmoid": "ReLU"})
    assert e.value.nodes == {} and set(e.value.ops) == {"mul"}


def test_transformer_blockers(onnx_dir):
    """ViT: GELU (written with Erf by the exporter), softmax attention, LayerNorm, products of
    two computed tensors: all listed."""
    import torch
    from test_importer import _tv_small

    path = str(onnx_dir / "vit_blockers.onnx")
    onnx2snn.export_onnx(_tv_small("vit"), torch.randn(1, 3, 32, 32), path)
    acts, ops, reasons = analyze(onnx2snn.import_onnx(path)).blockers()
    assert {"GELU", "Softmax"} <= set(acts)
    assert {"matmul", "LayerNorm"} <= set(ops)
    assert "no spiking form" in reasons["LayerNorm"]

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

"""Zoo models: builders give the right shapes, committed weights reach their stated
accuracy / mAP, and every model exports to ONNX with onnxruntime matching PyTorch."""
import json

import numpy as np
import pytest
import torch

import onnx2snn
import onnx2snn.zoo as zoo

SMALL_RESNET_INPUT = (3, 64, 64)  # torchvision ResNets are size-agnostic; keep tests fast
TRAINED = ["digits_resnet", "digits_vgg", "tiny_yolo", "yolo_relu", "yolov8_silu", "yolov8_relu", "digits_vit",
           "digits_mobilenetv3", "yolo11_silu", "digits_convnext"]


def _input_shape(name):
    p = zoo.get_preset(name)
    return SMALL_RESNET_INPUT if p.name.startswith("resnet") else p.input_shape


def test_registry_lists_presets():
    models = zoo.list_models()
    assert set(TRAINED + ["resnet18", "resnet34", "resnet50"]) <= set(models)
    for name, s in models.items():
        assert json.loads(json.dumps(s)) == s
        assert s["task"] in ("classification", "detection") and len(s["input_shape"]) == 3
        assert {"timesteps", "normalization", "threshold"} <= set(s["conversion"])
        pre = zoo.Preprocess.from_dict(s["preprocess"])
        assert pre.channels == s["input_shape"][0] and list(pre.size) == s["input_shape"][1:]
        if s["task"] == "detection":
            assert s["decoder"] in zoo.DECODERS and s["loss"] in zoo.LOSSES
    with pytest.raises(onnx2snn.ConfigError, match="name='nope' is not valid: expected one of 'digits_resnet'"):
        zoo.get_preset("nope")


@pytest.mark.parametrize("name", list(zoo.PRESETS))
def test_builder_output_shapes(name):
    p = zoo.get_preset(name)
    model = zoo.build_model(name, pretrained=False)
    with torch.no_grad():
        out = model(torch.rand(2, *_input_shape(name)))
    if p.task == "classification":
        assert out.shape == (2, p.num_classes)
    elif p.decoder == "decode_ultralytics":  # one [B, 4 + C, A] output, like an Ultralytics export
        assert out.shape == (2, 4 + p.num_classes, sum((64 // s) ** 2 for s in zoo.models.yolov8.STRIDES))
        assert torch.all((out[:, 4:] >= 0) & (out[:, 4:] <= 1)) and torch.all(out[:, 2:4] >= 0)
    else:
        assert isinstance(out, tuple) and all(o.dim() == 4 and o.shape[0] == 2 for o in out)
        strides = zoo.models.tiny_yolo.STRIDES if name == "tiny_yolo" else zoo.models.yolo_relu.STRIDES
        ch = 3 * (5 + p.num_classes) if name == "tiny_yolo" else 4 + p.num_classes
        assert [tuple(o.shape[1:]) for o in out] == [(ch, 64 // s, 64 // s) for s in strides]


def test_torchvision_weights_from_local_file_only(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX2SNN_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError):
        zoo.build_model("resnet18", pretrained=True)
    ref = zoo.build_model("resnet18", pretrained=False)
    torch.save(ref.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    for model in (zoo.build_model("resnet18"), zoo.build_model("resnet18", weights=tmp_path / "resnet18-f37072fd.pth")):
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


@pytest.mark.parametrize("name", TRAINED)
def test_committed_weights_are_small_float32_with_metrics(name):
    p = zoo.get_preset(name)
    path = zoo.WEIGHTS_DIR / p.weights
    assert path.stat().st_size < 5 * 2 ** 20
    state = torch.load(path, weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["name"] == name and info["metrics"] and info["training"]["seed"] == 0


@pytest.mark.parametrize("name,bound", [("digits_resnet", 0.97), ("digits_vgg", 0.97), ("digits_vit", 0.97),
                                        ("digits_mobilenetv3", 0.97), ("digits_convnext", 0.97)])
def test_classifier_accuracy(name, bound):
    x, y = zoo.load_digits(zoo.get_preset(name).input_shape[-1], "test")
    with torch.no_grad():
        acc = (zoo.build_model(name)(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc >= bound, f"{name} test accuracy {acc:.4f} < {bound}"


@pytest.mark.parametrize("name,bound", [("tiny_yolo", 0.85), ("yolo_relu", 0.85), ("yolov8_silu", 0.9),
                                        ("yolov8_relu", 0.9), ("yolo11_silu", 0.9)])
def test_detector_map_on_100_val_scenes(name, bound):
    p = zoo.get_preset(name)
    m = zoo.evaluate_detector(zoo.build_model(name), zoo.get_decoder(p.decoder), zoo.digit_scenes("val", n=100))
    assert m["mAP50"] >= bound, f"{name} mAP@0.5 {m['mAP50']:.3f} < {bound}"


@pytest.mark.parametrize("name", list(zoo.PRESETS))
def test_onnx_export_matches_onnxruntime(name, tmp_path):
    import onnxruntime as ort

    trained = zoo.get_preset(name).weights and (zoo.WEIGHTS_DIR / zoo.get_preset(name).weights).is_file()
    torch.manual_seed(0)
    model = zoo.build_model(name, pretrained=bool(trained) and not name.startswith("resnet"))
    x = torch.rand(2, *_input_shape(name))
    with torch.no_grad():
        ref = model(x)
    ref = ref if isinstance(ref, tuple) else (ref,)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"input": x.numpy()})
    assert len(outs) == len(ref)
    for o, r in zip(outs, ref):
        np.testing.assert_allclose(o, r.numpy(), rtol=1e-4, atol=1e-4)

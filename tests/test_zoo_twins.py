"""Every trained zoo model exports to ONNX and imports to a twin equal to onnxruntime."""

import pytest

import onnx2snn
from test_importer import TOL, compare


@pytest.mark.parametrize("name", ["digits_resnet", "digits_vgg", "tiny_yolo", "yolo_relu", "yolov8_silu", "yolov8_relu",
                                  "digits_vit", "digits_mobilenetv3", "yolo11_silu", "digits_convnext"])
def test_zoo_model_twin_equals_onnxruntime(tmp_path, name):
    path = onnx2snn.export_zoo_model(name, tmp_path / f"{name}.onnx")
    twin = onnx2snn.import_onnx(path)
    assert compare(twin, path, batch=3) <= TOL

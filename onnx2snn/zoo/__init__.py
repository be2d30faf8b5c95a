"""onnx2snn model zoo: small trained ANNs to convert, the data they were trained on
(sklearn digits, digit scenes, and their COCO / YOLO writers), and their models' decoders
and losses (registered by name with the library on import).

Loaders for users' own data live in :mod:`onnx2snn.data`; ``Preprocess``, ``YoloDataset``,
``ImageFolder``, ``NpzArrays``, ``CocoImages``, ``open_dataset``, ``load_batch`` and
``read_data_yaml`` are re-exported here, where they were first imported from; so are
the generic detection tools of :mod:`onnx2snn.verification.detection` (``decode_ultralytics``,
``nms_detections``, ``to_coco_detections``, ``evaluate_coco``, ``evaluate_ultralytics``).
"""
from ..data.loaders import CocoImages, ImageFolder, NpzArrays, Preprocess, load_batch, open_dataset
from ..data.yolo_format import YoloDataset, read_data_yaml
from .data.digits import load_digits
from .data.yolo_format import write_yolo
from .data.scenes import Scene, coco_dict, digit_scenes, make_scenes, read_coco, scenes_to_tensors, write_coco
from ..calibration import losses as _losses
from ..calibration.losses import register_loss
from ..verification.decoders import register_decoder
from ..verification.detection import (decode_ultralytics, evaluate_coco, evaluate_ultralytics, nms_detections,
                                      to_coco_detections)
from .models.detection import evaluate_detector
from .models.tiny_yolo import tiny_yolo_decode, tiny_yolo_loss
from .models.yolo_relu import yolo_relu_decode, yolo_relu_loss
from .models.yolov8 import yolov8_export_loss, yolov8_loss
from .registry import PRESETS, WEIGHTS_DIR, Preset, build_model, get_preset, list_models, register

DECODERS = {"tiny_yolo_decode": tiny_yolo_decode, "yolo_relu_decode": yolo_relu_decode,
            "decode_ultralytics": decode_ultralytics}

# The library looks decoders and losses up by name in its own registries; the zoo adds its own.
register_decoder("tiny_yolo_decode", tiny_yolo_decode, aliases=("tiny-yolo", "tiny_yolo"),
                 label="onnx2snn.zoo.tiny_yolo_decode")
register_decoder("yolo_relu_decode", yolo_relu_decode, aliases=("yolo_relu", "yolo-relu"),
                 label="onnx2snn.zoo.yolo_relu_decode")
for _name, _loss in {"tiny_yolo_loss": tiny_yolo_loss, "yolo_relu_loss": yolo_relu_loss,
                     "yolov8_export_loss": yolov8_export_loss}.items():
    register_loss(_name, _loss)
LOSSES = _losses.LOSSES  # the registry itself: finetune(loss=name) accepts what is in it


def get_decoder(name: str):
    """Decoder function by its preset name."""
    return DECODERS[name]


__all__ = [
    "load_digits", "digit_scenes", "make_scenes", "scenes_to_tensors", "Scene", "coco_dict", "write_coco", "read_coco",
    "Preprocess", "YoloDataset", "read_data_yaml", "write_yolo", "ImageFolder", "NpzArrays", "CocoImages", "open_dataset", "load_batch",
    "decode_ultralytics", "tiny_yolo_decode", "yolo_relu_decode", "nms_detections", "to_coco_detections",
    "evaluate_coco", "evaluate_ultralytics", "evaluate_detector", "tiny_yolo_loss", "yolo_relu_loss",
    "yolov8_loss", "yolov8_export_loss", "DECODERS", "LOSSES", "get_decoder",
    "Preset", "PRESETS", "WEIGHTS_DIR", "register", "get_preset", "list_models", "build_model",
]

"""The zoo's model presets: what each model expects, how to decode it, how to convert it.

A preset is everything a user (or the CLI) needs besides the weights: input shape,
preprocessing, task, number of classes, decoder name, recommended conversion settings
and the committed weights file. Builders are registered with :func:`register`.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import checks
from ..calibration.losses import CROSS_ENTROPY, register_loss_alias
from ..data.loaders import IMAGENET_MEAN, IMAGENET_STD, Preprocess

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class Preset:
    """Metadata of one zoo model; ``builder(**kwargs)`` makes the untrained nn.Module."""

    name: str
    builder: Callable[..., nn.Module]
    task: str  # "classification" or "detection"
    input_shape: tuple[int, int, int]  # C, H, W
    preprocess: Preprocess
    num_classes: int
    decoder: str | None = None  # name of the post-processing function in onnx2snn.zoo
    loss: str | None = None
    conversion: dict = field(default_factory=dict)
    weights: str | None = None  # file in onnx2snn/zoo/weights (or a torchvision checkpoint name)
    kwargs: dict = field(default_factory=dict)
    description: str = ""

    def summary(self) -> dict:
        """JSON-friendly description (no callables)."""
        return {
            "name": self.name, "task": self.task, "input_shape": list(self.input_shape),
            "preprocess": self.preprocess.to_dict(), "num_classes": self.num_classes, "decoder": self.decoder,
            "loss": self.loss, "conversion": dict(self.conversion), "weights": self.weights,
            "description": self.description,
        }


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add a preset; its name becomes a ``finetune(loss=...)`` name for its loss
    (cross-entropy for a classifier)."""
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} already registered")
    PRESETS[preset.name] = preset
    if preset.loss:
        register_loss_alias(preset.name, preset.loss)
    elif preset.task == "classification":
        register_loss_alias(preset.name, CROSS_ENTROPY)
    return preset


def get_preset(name: str) -> Preset:
    return copy.deepcopy(PRESETS[checks.choice("name", name, list(PRESETS))])


def list_models() -> dict[str, dict]:
    """Names -> preset summaries, in registration order."""
    return {name: p.summary() for name, p in PRESETS.items()}


def build_model(name: str, pretrained: bool = True, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build zoo model ``name`` in eval mode.

    pretrained: load the committed weights (onnx2snn/zoo/weights/<name>.pt); for the
    torchvision ResNets, a local ImageNet checkpoint (see ``torchvision_resnet``).
    weights: an explicit state_dict path, which wins over ``pretrained``.
    """
    p = PRESETS[name] if name in PRESETS else get_preset(name)
    if p.builder.__name__ == "torchvision_resnet":
        model = p.builder(**p.kwargs, weights=weights, pretrained=pretrained)
        return model.eval()
    model = p.builder(**p.kwargs)
    if weights is None and pretrained:
        if p.weights is None:
            raise FileNotFoundError(f"{name} has no committed weights")
        weights = WEIGHTS_DIR / p.weights
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def _register_all() -> None:
    from .models.classifiers import DigitsResNet, DigitsVGG, TORCHVISION_WEIGHT_FILES, torchvision_resnet
    from .models.convnext import DigitsConvNeXt
    from .models.mobilenet import DigitsMobileNetV3
    from .models.tiny_yolo import TinyYOLO
    from .models.vit import DigitsViT
    from .models.yolo11 import YOLO11
    from .models.yolo_relu import YOLOReLU
    from .models.yolov8 import YOLOv8

    digits_pre = Preprocess(size=(16, 16), mean=(0.0,), std=(1.0,), channels=1)
    scenes_pre = Preprocess(size=(64, 64), mean=(0.0,), std=(1.0,), channels=1)
    imagenet_pre = Preprocess(size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, channels=3, crop_fraction=0.875)
    cls_conv = {"timesteps": 32, "normalization": "channel", "threshold": "mse", "levels": 2}
    det_conv = {"timesteps": 64, "normalization": "channel", "threshold": "mse", "levels": 2}
    register(Preset("digits_resnet", DigitsResNet, "classification", (1, 16, 16), digits_pre, 10,
                    decoder="softmax", conversion=cls_conv, weights="digits_resnet.pt",
                    kwargs={"widths": (16, 32, 64), "blocks": (1, 1, 1)},
                    description="CIFAR-style ResNet (BasicBlocks, BN, residual adds, GAP + Linear) on 16x16 digits"))
    register(Preset("digits_vgg", DigitsVGG, "classification", (1, 16, 16), digits_pre, 10,
                    decoder="softmax", conversion=cls_conv, weights="digits_vgg.pt",
                    kwargs={"widths": (16, 32, 64), "input_size": 16},
                    description="VGG-style net (Conv-BN-ReLU, MaxPool2d) on 16x16 digits"))
    register(Preset("digits_vit", DigitsViT, "classification", (1, 16, 16), digits_pre, 10,
                    decoder="softmax", conversion=cls_conv, weights="digits_vit.pt",
                    kwargs={"dim": 64, "depth": 4, "heads": 4, "patch": 4, "input_size": 16},
                    description="small ViT (4x4 patch conv, cls token + position embedding, pre-LayerNorm blocks of "
                                "MatMul / Softmax attention and GELU MLP) on 16x16 digits"))
    register(Preset("digits_mobilenetv3", DigitsMobileNetV3, "classification", (1, 16, 16), digits_pre, 10,
                    decoder="softmax", conversion=cls_conv, weights="digits_mobilenetv3.pt",
                    description="MobileNetV3-Small style (HardSwish, inverted residuals, depthwise convs, "
                                "ReLU / HardSigmoid squeeze-excitation gates) on 16x16 digits"))
    register(Preset("digits_convnext", DigitsConvNeXt, "classification", (1, 16, 16), digits_pre, 10,
                    decoder="softmax", conversion=cls_conv, weights="digits_convnext.pt",
                    kwargs={"dims": (32, 64), "depths": (2, 2), "patch": 2, "input_size": 16},
                    description="small ConvNeXt (2x2 patchify stem, depthwise 7x7 conv -> channels-last LayerNorm -> "
                                "Linear 4x -> GELU -> Linear -> layer scale -> residual, LayerNorm + 2x2 conv "
                                "downsampling, GAP, LayerNorm, head) on 16x16 digits"))
    for arch in ("resnet18", "resnet34", "resnet50"):
        register(Preset(arch, torchvision_resnet, "classification", (3, 224, 224), imagenet_pre, 1000,
                        decoder="softmax", conversion=dict(cls_conv, timesteps=64), weights=TORCHVISION_WEIGHT_FILES[arch],
                        kwargs={"arch": arch},
                        description=f"torchvision {arch}; ImageNet weights from a local file only"))
    register(Preset("tiny_yolo", TinyYOLO, "detection", (1, 64, 64), scenes_pre, 10,
                    decoder="tiny_yolo_decode", loss="tiny_yolo_loss",
                    conversion=dict(det_conv, neuron="ibt"), weights="tiny_yolo.pt", kwargs={"width": 16},
                    description="YOLOv3-tiny style (LeakyReLU 0.1, stride-1 maxpool, upsample + concat, 2 anchor heads) on 64x64 digit scenes"))
    register(Preset("yolo_relu", YOLOReLU, "detection", (1, 64, 64), scenes_pre, 10,
                    decoder="yolo_relu_decode", loss="yolo_relu_loss",
                    conversion=det_conv, weights="yolo_relu.pt", kwargs={"width": 16},
                    description="YOLOv8 style with ReLU (C2f, SPPF, FPN neck, anchor-free decoupled head) on 64x64 digit scenes"))
    for act in ("silu", "relu"):
        register(Preset(f"yolov8_{act}", YOLOv8, "detection", (1, 64, 64), scenes_pre, 10,
                        decoder="decode_ultralytics", loss="yolov8_export_loss", conversion=det_conv,
                        weights=f"yolov8_{act}.pt", kwargs={"width": 16, "act": act},
                        description=f"YOLOv8 structure with {'SiLU' if act == 'silu' else 'ReLU'} (C2f, SPPF, PAN "
                                    "neck, decoupled DFL head) exported like Ultralytics: one [B, 4+C, A] output; "
                                    "64x64 digit scenes"))
    register(Preset("yolo11_silu", YOLO11, "detection", (1, 64, 64), scenes_pre, 10,
                    decoder="decode_ultralytics", loss="yolov8_export_loss", conversion=det_conv,
                    weights="yolo11_silu.pt", kwargs={"width": 16, "act": "silu"},
                    description="YOLO11 structure with SiLU (C3k2, SPPF, C2PSA attention, PAN neck, decoupled DFL "
                                "head) exported like Ultralytics: one [B, 4+C, A] output; 64x64 digit scenes"))


_register_all()

"""Classifiers: a small CIFAR-style ResNet and a VGG-style net for digits, plus
torchvision ResNet-18/34/50 loaded from a local ImageNet checkpoint (never downloaded).

All use only conversion-friendly ops: Conv, BatchNorm, ReLU, residual Add, MaxPool,
global average pool, Linear.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 Conv-BN layers with a residual add (1x1 Conv-BN projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + self.shortcut(x))


class DigitsResNet(nn.Module):
    """CIFAR-style ResNet: stem conv, three stages of BasicBlocks (strides 1, 2, 2), GAP, Linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths=(16, 32, 64), blocks=(1, 1, 1)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class DigitsVGG(nn.Module):
    """VGG-style net: [Conv-BN-ReLU x2, MaxPool2d(2)] x3, then Flatten, Linear-ReLU, Linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths=(16, 32, 64), input_size: int = 16, hidden: int = 64):
        super().__init__()
        layers, cin = [], in_channels
        for w in widths:
            for _ in range(2):
                layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(widths)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


TORCHVISION_WEIGHT_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
}


def find_local_imagenet_weights(arch: str) -> Path | None:
    """Look for torchvision's standard checkpoint file in $ONNX2SNN_WEIGHTS and torch's hub cache."""
    fname = TORCHVISION_WEIGHT_FILES[arch]
    dirs = [os.environ.get("ONNX2SNN_WEIGHTS"), os.path.join(torch.hub.get_dir(), "checkpoints")]
    for d in dirs:
        if d and (Path(d) / fname).is_file():
            return Path(d) / fname
    return None


def torchvision_resnet(arch: str, weights: str | os.PathLike | None = None, pretrained: bool = False, num_classes: int = 1000) -> nn.Module:
    """torchvision ResNet ``arch`` (resnet18/34/50); ImageNet weights only from a local file.

    ``weights``: path to a state_dict (.pth). With ``pretrained=True`` and no path, the
    standard torchvision file name is searched locally; it is never downloaded.
    """
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if weights is None and pretrained:
        weights = find_local_imagenet_weights(arch)
        if weights is None:
            raise FileNotFoundError(
                f"no local ImageNet weights for {arch}: pass weights=<path to {TORCHVISION_WEIGHT_FILES[arch]}> "
                "or set ONNX2SNN_WEIGHTS to its folder (nothing is downloaded)")
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    return model

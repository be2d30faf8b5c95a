"""A MobileNetV3-style classifier for the 16x16 digits (our own code, after MobileNetV3's layout).

HardSwish stem, inverted residual blocks (1x1 expand, depthwise k x k, squeeze-excitation
gate, 1x1 project, residual add when the shape stays), a 1x1 HardSwish conv, global
average pool and a Linear-HardSwish-Linear head. The SE gate is GAP -> 1x1 conv -> ReLU
-> 1x1 conv -> HardSigmoid, multiplied onto the features (a Mul in the ONNX graph).
"""
from __future__ import annotations

import torch
from torch import nn

ACTS = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def conv_bn(cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, act: str | None = "hswish") -> nn.Sequential:
    """Conv2d (no bias) -> BatchNorm2d -> activation (``ACTS`` key, or None for linear)."""
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, ACTS[act]()) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel gate: x * hardsigmoid(fc2(relu(fc1(mean over H, W of x))))."""

    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.relu = nn.Conv2d(c, squeeze, 1), nn.ReLU()
        self.fc2, self.gate = nn.Conv2d(squeeze, c, 1), nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when expand == cin), depthwise k x k (stride s), optional SE, 1x1 linear project."""

    def __init__(self, cin: int, expand: int, cout: int, k: int, s: int, se: bool, act: str):
        super().__init__()
        layers = [] if expand == cin else [conv_bn(cin, expand, 1, act=act)]
        layers.append(conv_bn(expand, expand, k, s, groups=expand, act=act))
        if se:
            layers.append(SqueezeExcite(expand, max(8, expand // 4)))
        layers.append(conv_bn(expand, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# (kernel, expand, out, SE, activation, stride): MobileNetV3-Small's pattern at digit scale
SMALL_16 = ((3, 16, 16, True, "relu", 1), (3, 48, 24, False, "relu", 2), (3, 64, 24, False, "relu", 1),
            (5, 96, 32, True, "hswish", 2), (5, 128, 32, True, "hswish", 1), (5, 128, 48, True, "hswish", 1))


class DigitsMobileNetV3(nn.Module):
    """Stem conv (HardSwish), inverted residuals ``config``, 1x1 conv, GAP, Linear-HardSwish-Linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, stem: int = 16, config=SMALL_16,
                 last: int = 128, hidden: int = 128):
        super().__init__()
        layers, cin = [conv_bn(in_channels, stem, 3, 1)], stem
        for k, e, c, se, act, s in config:
            layers.append(InvertedResidual(cin, e, c, k, s, se, act))
            cin = c
        layers.append(conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(last, hidden), nn.Hardswish(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))

"""PyTorch models whose exported ONNX graphs the importer must reproduce exactly.

Random weights and random BatchNorm statistics (seeded); nothing is downloaded. The
YOLOv8-style model mirrors the graph Ultralytics exports: SiLU written as x*sigmoid(x),
C2f blocks with Split and Concat, SPPF max-pools, nearest Resize, and the decode head
with DFL softmax, anchors and strides, ending in [B, 4 + classes, anchors]. Its blocks
(and TinyYoloV3's Conv-BN-LeakyReLU) are the zoo's (onnx2snn.zoo.models.yolo_blocks):
the importer test is about the graph those blocks export, and the zoo's trained
models in test_zoo_twins.py are built from the same code.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from onnx2snn.zoo.models.yolo_blocks import C2f, SPPF, Conv, Detect


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random statistics and affine terms, so BN is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def conv_bn(c1, c2, k=3, s=1):
    return Conv(c1, c2, k, s, act="leaky", named=False)


class TinyYoloV3(nn.Module):
    """YOLOv3-tiny layout at small width: LeakyReLU(0.1), MaxPool (one stride-1 after a
    ZeroPad2d), nearest Upsample, Concat, two heads."""

    def __init__(self, num_classes=10, anchors=3, w=8):
        super().__init__()
        out = anchors * (5 + num_classes)
        self.b1 = nn.Sequential(conv_bn(3, w), nn.MaxPool2d(2, 2), conv_bn(w, 2 * w), nn.MaxPool2d(2, 2),
                                conv_bn(2 * w, 4 * w), nn.MaxPool2d(2, 2), conv_bn(4 * w, 8 * w))
        self.b2 = nn.Sequential(nn.MaxPool2d(2, 2), conv_bn(8 * w, 16 * w), nn.ZeroPad2d((0, 1, 0, 1)),
                                nn.MaxPool2d(2, 1), conv_bn(16 * w, 32 * w, 1), conv_bn(32 * w, 8 * w, 1))
        self.head1 = nn.Sequential(conv_bn(8 * w, 16 * w), nn.Conv2d(16 * w, out, 1))
        self.lat = conv_bn(8 * w, 4 * w, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head2 = nn.Sequential(conv_bn(12 * w, 8 * w), nn.Conv2d(8 * w, out, 1))

    def forward(self, x):
        f1 = self.b1(x)
        f2 = self.b2(f1)
        y1 = self.head1(f2)
        y2 = self.head2(torch.cat([self.up(self.lat(f2)), f1], 1))
        return y1, y2


class YoloV8Like(nn.Module):
    """A small YOLOv8n-shaped detector: backbone with C2f and SPPF, PAN neck, DFL head."""

    def __init__(self, nc=10, w=16):
        super().__init__()
        self.stem = nn.Sequential(Conv(3, w, 3, 2), Conv(w, 2 * w, 3, 2), C2f(2 * w, 2 * w, 1, True))
        self.p3 = nn.Sequential(Conv(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 1, True))
        self.p4 = nn.Sequential(Conv(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w, 1, True), SPPF(8 * w, 8 * w))
        self.up = nn.Upsample(None, 2, "nearest")
        self.n3 = C2f(12 * w, 4 * w, shortcut=False)
        self.down = Conv(4 * w, 4 * w, 3, 2)
        self.n4 = C2f(12 * w, 8 * w, shortcut=False)
        self.detect = Detect(nc, (4 * w, 8 * w), (8, 16))

    def forward(self, x):
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        n3 = self.n3(torch.cat([self.up(p4), p3], 1))
        n4 = self.n4(torch.cat([self.down(n3), p4], 1))
        return self.detect([n3, n4])


class OpZoo(nn.Module):
    """One model that touches the remaining ops of the coverage list."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=1)
        self.dconv = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.tconv = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1)
        self.prelu = nn.PReLU(8)
        self.fc = nn.Linear(8 * 4, 10)

    def forward(self, x):
        y = self.prelu(self.conv(x))
        y = torch.nn.functional.relu6(self.dconv(y)) + torch.sigmoid(y) * 0.5 - torch.tanh(y) / 3
        y = torch.nn.functional.hardsigmoid(y) + torch.nn.functional.hardswish(self.tconv(y))[:, :, ::2, ::2]
        y = torch.nn.functional.pad(y, (1, 2, 0, 1))
        y = torch.nn.functional.avg_pool2d(y, 3, 2, padding=1)
        y = torch.nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        y = torch.nn.functional.avg_pool2d(y, (5, 6))
        a, b = y.split([3, 5], dim=1)
        y = torch.cat([b, a.clamp(-1, 1)], 1).permute(0, 2, 3, 1).reshape(y.shape[0], -1)
        y = self.fc(y.unsqueeze(1)).squeeze(1)
        return torch.softmax(y, -1), torch.nn.functional.leaky_relu(y, 0.2)


def _small_head_vgg11_bn() -> nn.Module:
    """torchvision's VGG-11-BN features with a 10-class head that fits in a test."""
    m = torchvision.models.vgg11_bn()
    m.avgpool = nn.AdaptiveAvgPool2d(1)
    m.classifier = nn.Sequential(nn.Linear(512, 256), nn.ReLU(True), nn.Dropout(), nn.Linear(256, 10))
    return m


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A seeded model and its input shape, by name."""
    torch.manual_seed(seed)
    tv = torchvision.models
    table = {
        "resnet18": (lambda: tv.resnet18(), (1, 3, 64, 64)),
        "resnet50": (lambda: tv.resnet50(), (1, 3, 64, 64)),
        "vgg11_bn": (_small_head_vgg11_bn, (1, 3, 64, 64)),
        "mobilenet_v2": (lambda: tv.mobilenet_v2(), (1, 3, 64, 64)),
        "tiny_yolov3": (lambda: TinyYoloV3(), (1, 3, 64, 64)),
        "yolov8_like": (lambda: YoloV8Like(), (1, 3, 64, 64)),
        "op_zoo": (lambda: OpZoo(), (1, 3, 16, 16)),
    }
    make, shape = table[name]
    return randomize_bn(make(), seed), shape


def fit_digits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 3e-3,
               seed: int = 0) -> nn.Module:
    """Train a small classifier on the digits in the test (Adam, batch 64, seeded); eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()

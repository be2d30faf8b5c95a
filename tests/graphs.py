"""PyTorch models whose exported ONNX graphs the importer must reproduce exactly.

Random weights and random BatchNorm statistics (seeded); nothing is downloaded. The
YOLOv8-style model mirrors the graph Ultralytics exports: SiLU written as x*sigmoid(x),
C2f blocks with Split and Concat, SPPF max-pools, nearest Resize, and the decode head
with DFL softmax, anchors and strides, ending in [B, 4 + classes, anchors].
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn


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


def conv_bn(c1, c2, k=3, s=1, act=None):
    return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2),
                         act if act is not None else nn.LeakyReLU(0.1))


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


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1, self.cv2, self.add = Conv(c, c, 3), Conv(c, c, 3), shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_, 1), Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    def __init__(self, nc, ch, strides, reg_max=16):
        super().__init__()
        self.nc, self.reg_max, self.no = nc, reg_max, nc + 4 * reg_max
        self.strides = strides
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(reg_max)

    def forward(self, xs):
        shape = xs[0].shape
        xs = [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(xs)]
        anchors, strides = [], []
        for x, s in zip(xs, self.strides):
            _, _, h, w = x.shape
            sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float) + 0.5,
                                    torch.arange(w, dtype=torch.float) + 0.5, indexing="ij")
            anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(s)))
        anchors = torch.cat(anchors).transpose(0, 1).unsqueeze(0)
        strides = torch.cat(strides).transpose(0, 1)
        x_cat = torch.cat([x.view(shape[0], self.no, -1) for x in xs], 2)
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = anchors - lt, anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class YoloV8Like(nn.Module):
    """A small YOLOv8n-shaped detector: backbone with C2f and SPPF, PAN neck, DFL head."""

    def __init__(self, nc=10, w=16):
        super().__init__()
        self.stem = nn.Sequential(Conv(3, w, 3, 2), Conv(w, 2 * w, 3, 2), C2f(2 * w, 2 * w))
        self.p3 = nn.Sequential(Conv(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w))
        self.p4 = nn.Sequential(Conv(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w), SPPF(8 * w, 8 * w))
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

"""A YOLOv8-structured detector whose ONNX export looks like an Ultralytics export.

Our own code, written after the published YOLOv8 layout (Ultralytics is AGPL-3.0 and
no dependency): Conv-BN-act blocks (SiLU, or ReLU for the spiking-ready variant), C2f
with Split / Concat, SPPF (three chained 5x5 max-pools), nearest upsampling in a PAN
neck, and a decoupled head (box branch -> 4 x ``reg_max`` DFL logits, class branch ->
C logits) per level. ``forward`` ends like an Ultralytics export: DFL softmax
expectation, ``dist2bbox`` around anchor points, times the stride, class sigmoid, one
output ``[B, 4 + C, A]`` with (cx, cy, w, h) in input pixels and scores in [0, 1]. So
its ONNX graph has the same post-processing (Softmax, Sigmoid, anchor arithmetic)
after the spiking part as a real YOLOv8n file. Scaled for 64x64 digit scenes: levels
at strides 4, 8 and 16.

:func:`yolov8_loss` trains it from the raw maps (``forward(x, raw=True)``): task-aligned
assignment, CIoU + DFL box loss and BCE class loss with IoU-quality targets (the
YOLOv8 recipe, weights 7.5 / 1.5 / 0.5).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .detection import ciou_loss
from .yolo_relu import _assign

STRIDES = (4, 8, 16)
REG_MAX = 16
ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation, 'same' padding."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, act: str = "silu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True, act: str = "silu"):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3, act=act), Conv(c, c, 3, act=act)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """1x1 conv, Split in two halves, n bottlenecks chained on the second, Concat all, 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = False, act: str = "silu"):
        super().__init__()
        self.c = cout // 2
        self.cv1 = Conv(cin, 2 * self.c, 1, act=act)
        self.cv2 = Conv((2 + n) * self.c, cout, 1, act=act)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut, act) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 5, act: str = "silu"):
        super().__init__()
        c = cin // 2
        self.cv1, self.cv2 = Conv(cin, c, 1, act=act), Conv(4 * c, cout, 1, act=act)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss decode: softmax over ``reg_max`` bins, expectation by a fixed 1x1 conv."""

    def __init__(self, reg_max: int = REG_MAX):
        super().__init__()
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)
        self.reg_max = reg_max

    def forward(self, x):  # [B, 4 * reg_max, A] -> [B, 4, A]
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(shapes, strides, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points (cell centres, in grid units) [A, 2] and their strides [A, 1] for feature sizes (h, w)."""
    points, strs = [], []
    for (h, w), s in zip(shapes, strides):
        sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float, device=device) + 0.5,
                                torch.arange(w, dtype=torch.float, device=device) + 0.5, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        strs.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(points), torch.cat(strs)


class Detect(nn.Module):
    """Decoupled head per level + the export decode (DFL, dist2bbox, sigmoid) -> [B, 4 + C, A]."""

    def __init__(self, num_classes: int, channels, strides=STRIDES, reg_max: int = REG_MAX, act: str = "silu"):
        super().__init__()
        self.nc, self.reg_max, self.no = num_classes, reg_max, num_classes + 4 * reg_max
        self.strides = tuple(strides)
        c2, c3 = max(16, channels[0] // 4, 4 * reg_max), max(channels[0], min(num_classes, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(c, c2, 3, act=act), Conv(c2, c2, 3, act=act),
                                               nn.Conv2d(c2, 4 * reg_max, 1)) for c in channels)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(c, c3, 3, act=act), Conv(c3, c3, 3, act=act),
                                               nn.Conv2d(c3, num_classes, 1)) for c in channels)
        self.dfl = DFL(reg_max)

    def init_bias(self, image_size: int = 64) -> None:
        """YOLOv8's prior: box logits 1, class logits for ~5 objects per image spread over the level's cells."""
        for a, b, s in zip(self.cv2, self.cv3, self.strides):
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[:] = math.log(5 / self.nc / (image_size / s) ** 2)

    def raw(self, feats) -> list[torch.Tensor]:
        return [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(feats)]

    def decode(self, maps) -> torch.Tensor:
        b = maps[0].shape[0]
        anchors, strides = make_anchors([m.shape[-2:] for m in maps], self.strides, maps[0].device)
        x = torch.cat([m.view(b, self.no, -1) for m in maps], 2)
        box, cls = x.split((4 * self.reg_max, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        anchors = anchors.transpose(0, 1).unsqueeze(0)
        x1y1, x2y2 = anchors - lt, anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides.transpose(0, 1)
        return torch.cat((dbox, cls.sigmoid()), 1)


class YOLOv8(nn.Module):
    """Backbone (C2f stages, SPPF), PAN neck (nearest upsampling, strided convs), Detect at strides 4, 8, 16."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, act: str = "silu",
                 reg_max: int = REG_MAX):
        super().__init__()
        w = width
        c3, c4, c5 = 2 * w, 4 * w, 6 * w
        self.num_classes = num_classes
        self.stem = nn.Sequential(Conv(in_channels, w, 3, 2, act), Conv(w, c3, 3, 2, act),
                                  C2f(c3, c3, 1, True, act))                                    # /4
        self.stage4 = nn.Sequential(Conv(c3, c4, 3, 2, act), C2f(c4, c4, 1, True, act))          # /8
        self.stage5 = nn.Sequential(Conv(c4, c5, 3, 2, act), C2f(c5, c5, 1, True, act), SPPF(c5, c5, act=act))  # /16
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top4 = C2f(c5 + c4, c4, act=act)
        self.top3 = C2f(c4 + c3, c3, act=act)
        self.down3 = Conv(c3, c3, 3, 2, act)
        self.bottom4 = C2f(c3 + c4, c4, act=act)
        self.down4 = Conv(c4, c4, 3, 2, act)
        self.bottom5 = C2f(c4 + c5, c5, act=act)
        self.detect = Detect(num_classes, (c3, c4, c5), STRIDES, reg_max, act)
        self.detect.init_bias()

    def forward(self, x: torch.Tensor, raw: bool = False):
        p3 = self.stem(x)
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        t4 = self.top4(torch.cat([self.up(p5), p4], 1))
        o3 = self.top3(torch.cat([self.up(t4), p3], 1))
        o4 = self.bottom4(torch.cat([self.down3(o3), t4], 1))
        o5 = self.bottom5(torch.cat([self.down4(o4), p5], 1))
        maps = self.detect.raw([o3, o4, o5])
        return maps if raw else self.detect.decode(maps)


def _dfl_expect(box_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """[B, A, 4 * reg_max] -> expected distances [B, A, 4] (in strides)."""
    p = box_logits.view(*box_logits.shape[:-1], 4, reg_max).softmax(-1)
    return p @ torch.arange(reg_max, dtype=p.dtype, device=p.device)


def _dfl_loss(box_logits: torch.Tensor, target: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Distribution focal loss: cross-entropy to the two bins around each target distance [N, 4]."""
    t = target.clamp(0, reg_max - 1 - 0.01)
    left = t.long()
    wl = left + 1 - t
    logits = box_logits.view(-1, reg_max)
    loss = F.cross_entropy(logits, left.view(-1), reduction="none") * wl.view(-1) \
        + F.cross_entropy(logits, (left + 1).view(-1), reduction="none") * (1 - wl).view(-1)
    return loss.view(-1, 4).mean(-1)


def yolov8_loss(maps, targets: list[dict[str, torch.Tensor]], strides=STRIDES, reg_max: int = REG_MAX,
                topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
                weights=(7.5, 1.5, 0.5)) -> tuple[torch.Tensor, dict[str, float]]:
    """YOLOv8 loss on raw maps (``model(x, raw=True)``): (box CIoU, DFL, class BCE) weighted.

    ``targets``: per image {"boxes" [K, 4] xyxy pixels, "labels" [K]}. Returns (loss, parts).
    """
    b = maps[0].shape[0]
    nc = maps[0].shape[1] - 4 * reg_max
    x = torch.cat([m.view(b, m.shape[1], -1) for m in maps], 2).transpose(1, 2)  # [B, A, no]
    box_logits, cls_logits = x.split((4 * reg_max, nc), 2)
    anchors, strs = make_anchors([m.shape[-2:] for m in maps], strides, x.device)
    dist = _dfl_expect(box_logits, reg_max)  # in strides
    pts = anchors * strs
    pred = torch.cat([pts - dist[..., :2] * strs, pts + dist[..., 2:] * strs], -1)  # xyxy pixels
    scores = cls_logits.detach().sigmoid()
    tcls = torch.zeros_like(cls_logits)
    box_terms, dfl_terms = [], []
    for i, t in enumerate(targets):
        gtb, gtl = t["boxes"].float().to(x.device), t["labels"].long().to(x.device)
        fg, gi, q = _assign(pred[i].detach(), scores[i], pts, gtb, gtl, topk, alpha, beta)
        if fg.any():
            w = q[fg].clamp(min=0.01)
            tcls[i, fg, gtl[gi[fg]]] = w
            loss, _ = ciou_loss(pred[i, fg], gtb[gi[fg]])
            box_terms.append(loss * w)
            g = gtb[gi[fg]]
            p, s = pts[fg], strs[fg]
            target = torch.cat([p - g[:, :2], g[:, 2:] - p], -1) / s
            dfl_terms.append(_dfl_loss(box_logits[i, fg], target, reg_max) * w)
    norm = tcls.sum().clamp(min=1.0)
    lcls = F.binary_cross_entropy_with_logits(cls_logits, tcls, reduction="sum") / norm
    zero = box_logits.sum() * 0
    lbox = torch.cat(box_terms).sum() / norm if box_terms else zero
    ldfl = torch.cat(dfl_terms).sum() / norm if dfl_terms else zero
    total = weights[0] * lbox + weights[1] * ldfl + weights[2] * lcls
    return total, {"box": float(lbox.detach()), "dfl": float(ldfl.detach()), "cls": float(lcls.detach())}


def yolov8_export_loss(output: torch.Tensor, targets: list[dict[str, torch.Tensor]], strides=STRIDES,
                       image_size: int = 64, topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
                       weights=(7.5, 0.5)) -> tuple[torch.Tensor, dict[str, float]]:
    """A label loss on the export output ``[B, 4 + C, A]`` (what an ONNX file gives when the
    raw maps are not reachable): task-aligned assignment, CIoU on the decoded boxes and
    BCE on the sigmoided scores with IoU-quality targets. No DFL term (the bins are
    already reduced to distances). Anchor points follow from ``strides`` and the square
    ``image_size``."""
    if isinstance(output, (list, tuple)):
        output = output[0]
    pred = output.transpose(1, 2)  # [B, A, 4 + C]
    shapes = [(image_size // s, image_size // s) for s in strides]
    anchors, strs = make_anchors(shapes, strides, output.device)
    pts = anchors * strs
    if pred.shape[1] != len(pts):
        raise ValueError(f"output has {pred.shape[1]} anchors, strides {strides} at {image_size} px give {len(pts)}")
    cx, cy, w, h = pred[..., :4].unbind(-1)
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    p = pred[..., 4:].clamp(1e-7, 1 - 1e-7)
    tcls = torch.zeros_like(p)
    box_terms = []
    for i, t in enumerate(targets):
        gtb, gtl = t["boxes"].float().to(output.device), t["labels"].long().to(output.device)
        fg, gi, q = _assign(boxes[i].detach(), p[i].detach(), pts, gtb, gtl, topk, alpha, beta)
        if fg.any():
            wq = q[fg].clamp(min=0.01)
            tcls[i, fg, gtl[gi[fg]]] = wq
            loss, _ = ciou_loss(boxes[i, fg], gtb[gi[fg]])
            box_terms.append(loss * wq)
    norm = tcls.sum().clamp(min=1.0)
    lcls = F.binary_cross_entropy(p, tcls, reduction="sum") / norm
    lbox = torch.cat(box_terms).sum() / norm if box_terms else boxes.sum() * 0
    total = weights[0] * lbox + weights[1] * lcls
    return total, {"box": float(lbox.detach()), "cls": float(lcls.detach())}


__all__ = ["YOLOv8", "yolov8_loss", "yolov8_export_loss", "STRIDES", "REG_MAX", "make_anchors"]

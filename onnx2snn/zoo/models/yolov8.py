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

import torch
import torch.nn.functional as F
from torch import nn

from .detection import ciou_loss
from .yolo_blocks import C2f, REG_MAX, SPPF, Conv, Detect, make_anchors
from .yolo_relu import _assign

STRIDES = (4, 8, 16)


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

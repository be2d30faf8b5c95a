"""A YOLOv8-style detector with ReLU activations, its loss and its decoder.

Layers: Conv-BN-ReLU, C2f blocks (split, bottlenecks with residual adds, Concat),
an SPPF block (three chained MaxPool2d(5, 1, 2) + Concat), nearest Upsample + Concat
top-down neck, and an anchor-free decoupled head (separate box and class branches)
at strides 4, 8 and 16 (scaled for 64x64 inputs). ReLU makes it convert to plain IF
neurons.

``forward`` returns the raw head maps only, one [B, 4 + C, H, W] tensor per level
(box branch first). :func:`yolo_relu_decode` applies softplus distances / sigmoid
scores and NMS; :func:`yolo_relu_loss` is a task-aligned (TAL-style) assignment with
CIoU box loss and IoU-quality BCE class loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import yolo_blocks
from .detection import ciou_loss, nms_detections
from .yolo_blocks import Conv

STRIDES = (4, 8, 16)


def ConvBNReLU(cin: int, cout: int, k: int = 3, s: int = 1) -> Conv:
    """Conv-BN-ReLU with nn.Sequential keys (0, 1, 2), as the committed weights have them."""
    return Conv(cin, cout, k, s, "relu", named=False)


def C2f(cin: int, cout: int, n: int = 1, shortcut: bool = True) -> yolo_blocks.C2f:
    """YOLOv8 C2f with ReLU; inner blocks: residual bottlenecks, or (no shortcut) one 3x3 conv each."""
    def block(c):
        return yolo_blocks.Bottleneck(c, True, "relu", named=False) if shortcut else ConvBNReLU(c, c)
    c2f = yolo_blocks.C2f(cin, cout, n, shortcut, "relu", block, named=False)
    c2f._modules["cv2"] = c2f._modules.pop("cv2")  # the committed key order: cv1, m, cv2
    return c2f


def SPPF(cin: int, cout: int) -> yolo_blocks.SPPF:
    """SPPF (three chained MaxPool2d(5, 1, 2), Concat, 1x1 conv) with ReLU."""
    return yolo_blocks.SPPF(cin, cout, 5, "relu", named=False)


class DecoupledHead(nn.Module):
    """Per level: box branch (-> 4 distances) and class branch (-> C logits), concatenated."""

    def __init__(self, cin: int, num_classes: int, hidden: int):
        super().__init__()
        self.box = nn.Sequential(ConvBNReLU(cin, hidden), ConvBNReLU(hidden, hidden), nn.Conv2d(hidden, 4, 1))
        self.cls = nn.Sequential(ConvBNReLU(cin, hidden), ConvBNReLU(hidden, hidden), nn.Conv2d(hidden, num_classes, 1))
        nn.init.constant_(self.cls[-1].bias, -5.0)  # low prior score: stable start for sparse targets

    def forward(self, x):
        return torch.cat([self.box(x), self.cls(x)], 1)


class YOLOReLU(nn.Module):
    """Backbone (C2f stages + SPPF), top-down neck, decoupled heads at strides 4, 8, 16."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, head_hidden: int = 32):
        super().__init__()
        w = width
        self.num_classes = num_classes
        self.stem = ConvBNReLU(in_channels, w, 3, 2)                                    # /2
        self.stage3 = nn.Sequential(ConvBNReLU(w, 2 * w, 3, 2), C2f(2 * w, 2 * w))        # /4
        self.stage4 = nn.Sequential(ConvBNReLU(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w))    # /8
        self.stage5 = nn.Sequential(ConvBNReLU(4 * w, 6 * w, 3, 2), C2f(6 * w, 6 * w), SPPF(6 * w, 6 * w))  # /16
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.neck4 = C2f(10 * w, 4 * w, shortcut=False)
        self.neck3 = C2f(6 * w, 2 * w, shortcut=False)
        self.heads = nn.ModuleList(DecoupledHead(c, num_classes, head_hidden) for c in (2 * w, 4 * w, 6 * w))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.stage3(self.stem(x))
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        n4 = self.neck4(torch.cat([self.up(p5), p4], 1))
        n3 = self.neck3(torch.cat([self.up(n4), p3], 1))
        return tuple(h(f) for h, f in zip(self.heads, (n3, n4, p5)))


def _flatten(outputs, strides=STRIDES):
    """Raw maps -> points [N, 2], point strides [N], raw box [B, N, 4], raw class logits [B, N, C]."""
    pts, strs, raws = [], [], []
    for out, s in zip(outputs, strides):
        out = torch.as_tensor(out).float()
        b, c, h, w = out.shape
        gy, gx = torch.meshgrid(torch.arange(h, device=out.device), torch.arange(w, device=out.device), indexing="ij")
        pts.append(torch.stack([gx, gy], -1).view(-1, 2).float().add(0.5).mul(s))
        strs.append(torch.full((h * w,), float(s), device=out.device))
        raws.append(out.view(b, c, -1).transpose(1, 2))
    raw = torch.cat(raws, 1)
    return torch.cat(pts), torch.cat(strs), raw[..., :4], raw[..., 4:]


def _distances_to_boxes(raw_box: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    d = F.softplus(raw_box) * strides[:, None]
    return torch.cat([points - d[..., :2], points + d[..., 2:]], -1)


def yolo_relu_decode(outputs, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 100,
                     strides=STRIDES) -> list[dict[str, torch.Tensor]]:
    """Raw head maps -> per image {"boxes" xyxy, "scores" (sigmoid), "labels"} after NMS."""
    points, strs, raw_box, raw_cls = _flatten(outputs, strides)
    boxes = _distances_to_boxes(raw_box, points, strs)
    return [nms_detections(b, s, conf_thres, iou_thres, max_det) for b, s in zip(boxes, raw_cls.sigmoid())]


@torch.no_grad()
def _assign(pred_boxes, pred_scores, points, gt_boxes, gt_labels, topk: int, alpha: float, beta: float):
    """Task-aligned assignment for one image: returns fg mask [N], gt index [N], quality target [N]."""
    n = len(points)
    if len(gt_labels) == 0:
        return torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.long), torch.zeros(n)
    from torchvision.ops import box_iou

    inside = ((points[None] > gt_boxes[:, None, :2]) & (points[None] < gt_boxes[:, None, 2:])).all(-1)  # [M, N]
    iou = box_iou(gt_boxes, pred_boxes).clamp(0)
    align = pred_scores[:, gt_labels].T.pow(alpha) * iou.pow(beta) * inside
    top = align.topk(min(topk, n), dim=1).indices
    pos = torch.zeros_like(inside).scatter_(1, top, True) & inside
    # centre cell always positive, so tiny boxes never go unassigned
    centre = ((gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2)
    nearest = (points[None] - centre[:, None]).abs().sum(-1).argmin(1)
    pos[torch.arange(len(gt_labels)), nearest] = True
    iou_pos = iou * pos
    gt_idx = iou_pos.argmax(0)
    fg = pos.any(0)
    pos = torch.zeros_like(pos).scatter_(0, gt_idx[None], True) & pos  # one gt per point
    align = align * pos
    norm = (align / align.amax(1, keepdim=True).clamp(min=1e-9)) * (iou * pos).amax(1, keepdim=True)
    quality = norm.amax(0)
    return fg, gt_idx, quality


def yolo_relu_loss(outputs, targets: list[dict[str, torch.Tensor]], strides=STRIDES, topk: int = 10,
                   alpha: float = 0.5, beta: float = 6.0, weights=(7.5, 0.5)) -> tuple[torch.Tensor, dict[str, float]]:
    """CIoU box loss + BCE class loss with task-aligned targets (YOLOv8 without DFL).

    ``targets``: per image {"boxes" [K, 4] xyxy pixels, "labels" [K]}.
    Returns (total loss, {"box", "cls"} floats).
    """
    points, strs, raw_box, raw_cls = _flatten(outputs, strides)
    pred_boxes = _distances_to_boxes(raw_box, points, strs)
    scores = raw_cls.detach().sigmoid()
    tcls = torch.zeros_like(raw_cls)
    box_terms = []
    for i, t in enumerate(targets):
        gtb, gtl = t["boxes"].float().to(points.device), t["labels"].long().to(points.device)
        fg, gi, q = _assign(pred_boxes[i].detach(), scores[i], points, gtb, gtl, topk, alpha, beta)
        if fg.any():
            tcls[i, fg, gtl[gi[fg]]] = q[fg].clamp(min=0.01)
            loss, _ = ciou_loss(pred_boxes[i, fg], gtb[gi[fg]])
            box_terms.append(loss * q[fg].clamp(min=0.01))
    norm = tcls.sum().clamp(min=1.0)
    lcls = F.binary_cross_entropy_with_logits(raw_cls, tcls, reduction="sum") / norm
    lbox = torch.cat(box_terms).sum() / norm if box_terms else raw_box.sum() * 0
    total = weights[0] * lbox + weights[1] * lcls
    return total, {"box": float(lbox.detach()), "cls": float(lcls.detach())}

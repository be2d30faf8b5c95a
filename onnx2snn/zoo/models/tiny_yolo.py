"""A YOLOv3-tiny style detector for small grayscale scenes, its loss and its decoder.

Layers are the ones a converter must handle in YOLOv3-tiny: Conv-BN-LeakyReLU(0.1),
MaxPool2d(2, 2), a stride-1 MaxPool2d(2, 1) after ZeroPad2d((0, 1, 0, 1)), nearest
Upsample x2, Concat, and two anchor-based 1x1 head convs. The network is scaled for
64x64 inputs: heads at strides 8 and 4 instead of 32 and 16.

``forward`` returns the raw head maps only ([B, A*(5+C), H, W] per level); sigmoid,
box decoding and NMS live in :func:`tiny_yolo_decode`, outside the SNN.
Box parametrisation (YOLOv5 style, bounded): xy = (2*sig(t) - 0.5 + cell) * stride,
wh = anchor * (2*sig(t))^2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .detection import ciou_loss, nms_detections

ANCHORS = ((((16, 22), (15, 26), (20, 27))), ((8, 12), (11, 16), (13, 20)))  # per head, (w, h) pixels
STRIDES = (8, 4)


def conv_bn_leaky(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


class TinyYOLO(nn.Module):
    """YOLOv3-tiny layout (scaled down); returns (coarse stride-8 map, fine stride-4 map)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, num_anchors: int = 3):
        super().__init__()
        w = width
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.backbone_a = nn.Sequential(  # -> stride 4, 4w channels (the route to the fine head)
            conv_bn_leaky(in_channels, w), nn.MaxPool2d(2, 2),
            conv_bn_leaky(w, 2 * w), nn.MaxPool2d(2, 2),
            conv_bn_leaky(2 * w, 4 * w))
        self.backbone_b = nn.Sequential(  # -> stride 8, the stride-1 pool keeps the size
            nn.MaxPool2d(2, 2), conv_bn_leaky(4 * w, 8 * w),
            nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1),
            conv_bn_leaky(8 * w, 8 * w), conv_bn_leaky(8 * w, 4 * w, 1))
        out = num_anchors * (5 + num_classes)
        self.head_coarse = nn.Sequential(conv_bn_leaky(4 * w, 8 * w), nn.Conv2d(8 * w, out, 1))
        self.lateral = conv_bn_leaky(4 * w, 2 * w, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.head_fine = nn.Sequential(conv_bn_leaky(6 * w, 4 * w), nn.Conv2d(4 * w, out, 1))
        for head in (self.head_coarse[-1], self.head_fine[-1]):  # low objectness prior: stable start
            nn.init.zeros_(head.bias)
            head.bias.data.view(num_anchors, -1)[:, 4] = -4.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        route = self.backbone_a(x)
        deep = self.backbone_b(route)
        coarse = self.head_coarse(deep)
        fine = self.head_fine(torch.cat([self.upsample(self.lateral(deep)), route], dim=1))
        return coarse, fine


def _grid(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    gy, gx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return gx.float(), gy.float()


def _split(out: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """[B, A*(5+C), H, W] -> [B, A, H, W, 5+C]."""
    b, _, h, w = out.shape
    return out.view(b, num_anchors, -1, h, w).permute(0, 1, 3, 4, 2)


def _boxes(p: torch.Tensor, anchor_wh: torch.Tensor, stride: float, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Raw [..., >=4] -> xyxy pixels [..., 4]; anchor_wh [..., 2], cell gx, gy broadcast against p[..., 0]."""
    s = p[..., :4].sigmoid()
    cx = (s[..., 0] * 2 - 0.5 + gx) * stride
    cy = (s[..., 1] * 2 - 0.5 + gy) * stride
    bw = (s[..., 2] * 2) ** 2 * anchor_wh[..., 0]
    bh = (s[..., 3] * 2) ** 2 * anchor_wh[..., 1]
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)


def tiny_yolo_decode(outputs, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 100,
                     anchors=ANCHORS, strides=STRIDES) -> list[dict[str, torch.Tensor]]:
    """Raw head maps -> per image {"boxes" xyxy, "scores" = obj * class prob, "labels"} after NMS."""
    all_boxes, all_scores = [], []
    for out, anc, stride in zip(outputs, anchors, strides):
        out = torch.as_tensor(out).float()
        anc = torch.tensor(anc, dtype=torch.float32, device=out.device)
        p = _split(out, len(anc))
        gx, gy = _grid(p.shape[2], p.shape[3], out.device)
        boxes = _boxes(p, anc[:, None, None, :], stride, gx, gy)
        scores = p[..., 4:5].sigmoid() * p[..., 5:].sigmoid()
        all_boxes.append(boxes.flatten(1, 3))
        all_scores.append(scores.flatten(1, 3))
    boxes, scores = torch.cat(all_boxes, 1), torch.cat(all_scores, 1)
    return [nms_detections(b, s, conf_thres, iou_thres, max_det) for b, s in zip(boxes, scores)]


def tiny_yolo_loss(outputs, targets: list[dict[str, torch.Tensor]], anchors=ANCHORS, strides=STRIDES,
                   anchor_t: float = 3.0, weights=(1.0, 10.0, 5.0)) -> tuple[torch.Tensor, dict[str, float]]:
    """YOLOv5-style loss: CIoU box + BCE objectness (IoU target) + BCE class.

    Each ground-truth box is matched to every anchor whose w/h ratio is below
    ``anchor_t``, in its own cell and the two nearest neighbouring cells.
    ``targets``: per image {"boxes" [K, 4] xyxy pixels, "labels" [K]}.
    ``weights``: (box, obj, cls); obj and cls are means over cells and over positives x classes,
    hence their larger weights. Returns (total loss, {"box", "obj", "cls"} floats).
    """
    device = outputs[0].device
    gt = [torch.cat([torch.full((len(t["labels"]), 1), float(i)), t["labels"].float()[:, None], t["boxes"].float()], 1)
          for i, t in enumerate(targets)]
    gt = torch.cat(gt).to(device) if gt else torch.zeros(0, 6, device=device)  # [img, cls, x1, y1, x2, y2]
    lbox, lobj, lcls = (torch.zeros((), device=device) for _ in range(3))
    for out, anc, stride in zip(outputs, anchors, strides):
        anc = torch.tensor(anc, dtype=torch.float32, device=device)
        p = _split(out, len(anc))
        h, w = p.shape[2], p.shape[3]
        tobj = torch.zeros(p.shape[:4], device=device)
        if len(gt):
            gxy = (gt[:, 2:4] + gt[:, 4:6]) / 2 / stride
            gwh = gt[:, 4:6] - gt[:, 2:4]
            ratio = gwh[None] / anc[:, None]  # [A, G, 2]
            match = torch.max(ratio, 1 / ratio).max(2).values < anchor_t
            a_idx, g_idx = match.nonzero(as_tuple=True)
            cells, a_all, g_all = [], [], []
            for dx, dy in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
                xy = gxy[g_idx]
                frac = xy % 1
                if dx or dy:  # neighbour only on the side the centre is closer to
                    sel = (frac[:, 0] < 0.5) if dx == -1 else (frac[:, 0] > 0.5) if dx == 1 else \
                          (frac[:, 1] < 0.5) if dy == -1 else (frac[:, 1] > 0.5)
                else:
                    sel = torch.ones(len(xy), dtype=torch.bool, device=device)
                c = (xy[sel] + torch.tensor([dx, dy], device=device)).floor().long()
                inside = (c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h)
                cells.append(c[inside]); a_all.append(a_idx[sel][inside]); g_all.append(g_idx[sel][inside])
            cells, a_all, g_all = torch.cat(cells), torch.cat(a_all), torch.cat(g_all)
            if len(g_all):
                b_all = gt[g_all, 0].long()
                ps = p[b_all, a_all, cells[:, 1], cells[:, 0]]
                pbox = _boxes(ps, anc[a_all], stride, cells[:, 0].float(), cells[:, 1].float())
                loss_box, iou = ciou_loss(pbox, gt[g_all, 2:6])
                lbox = lbox + loss_box.mean()
                tobj[b_all, a_all, cells[:, 1], cells[:, 0]] = iou.detach().clamp(0).to(tobj.dtype)
                tcls = F.one_hot(gt[g_all, 1].long(), p.shape[-1] - 5).float()
                lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], tcls)
        lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj)
    n = len(outputs)
    total = (weights[0] * lbox + weights[1] * lobj + weights[2] * lcls) / n
    return total, {"box": float(lbox.detach() / n), "obj": float(lobj.detach() / n), "cls": float(lcls.detach() / n)}

"""The zoo's detection helpers: mAP of a zoo detector on digit scenes, and the CIoU loss its
detectors train with. The generic post-processing (NMS, Ultralytics-style decoding, COCO
results, mAP) lives in :mod:`onnx2snn.verification.detection` and is re-exported here.
"""
from __future__ import annotations

import numpy as np
import torch

from ...verification.detection import (IOU_THRESHOLDS, ap_ultralytics, decode_ultralytics,  # noqa: F401
                                       evaluate_coco, evaluate_ultralytics, match_ultralytics, nms_detections,
                                       to_coco_detections)


def evaluate_detector(model: torch.nn.Module, decode, scenes, batch_size: int = 64, **decode_kwargs) -> dict[str, float]:
    """Run ``model`` + ``decode`` on digit scenes and return their COCO mAPs."""
    from ..data.scenes import coco_dict, scenes_to_tensors

    model.eval()
    results = []
    with torch.no_grad():
        for i in range(0, len(scenes), batch_size):
            chunk = scenes[i:i + batch_size]
            x, _ = scenes_to_tensors(chunk)
            dets = decode(model(x), **decode_kwargs)
            results += to_coco_detections(dets, [s.image_id for s in chunk])
    return evaluate_coco(results, coco_dict(scenes))


def ciou_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 - CIoU, IoU) for matched xyxy boxes [N, 4]; IoU is returned for objectness/quality targets."""
    eps = 1e-7
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    pw, ph = (px2 - px1).clamp(min=eps), (py2 - py1).clamp(min=eps)
    tw, th = (tx2 - tx1).clamp(min=eps), (ty2 - ty1).clamp(min=eps)
    inter = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(min=0) * (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(min=0)
    union = pw * ph + tw * th - inter + eps
    iou = inter / union
    cw = torch.max(px2, tx2) - torch.min(px1, tx1)
    ch = torch.max(py2, ty2) - torch.min(py1, ty1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((px1 + px2 - tx1 - tx2) ** 2 + (py1 + py2 - ty1 - ty2) ** 2) / 4
    v = (4 / np.pi ** 2) * (torch.atan(tw / th) - torch.atan(pw / ph)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    ciou = iou - (rho2 / c2 + v * alpha)
    return 1.0 - ciou, iou

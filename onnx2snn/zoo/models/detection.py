"""Shared detection post-processing and evaluation: NMS, COCO-format results, mAP.

Detector modules return raw head maps only; everything here runs after the network
(and after the SNN), on float tensors.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from torchvision.ops import batched_nms


def nms_detections(boxes: torch.Tensor, scores: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.6,
                   max_det: int = 100) -> dict[str, torch.Tensor]:
    """One image: boxes [N, 4] xyxy, class scores [N, C] in [0, 1] -> {"boxes", "scores", "labels"} after class-wise NMS."""
    conf, labels = scores.max(dim=1)
    keep = conf > conf_thres
    boxes, conf, labels = boxes[keep].float(), conf[keep].float(), labels[keep]
    keep = batched_nms(boxes, conf, labels, iou_thres)[:max_det]
    return {"boxes": boxes[keep], "scores": conf[keep], "labels": labels[keep]}


def decode_ultralytics(output: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45,
                       max_det: int = 300) -> list[dict[str, torch.Tensor]]:
    """Decode an Ultralytics YOLOv8/YOLO11 export: [B, 4 + C, A] with (cx, cy, w, h) pixels and sigmoided scores."""
    if isinstance(output, (list, tuple)):
        output = output[0]
    output = torch.as_tensor(output)
    results = []
    for pred in output.float().transpose(1, 2):  # [A, 4 + C]
        cx, cy, w, h = pred[:, :4].unbind(1)
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
        results.append(nms_detections(boxes, pred[:, 4:], conf_thres, iou_thres, max_det))
    return results


def to_coco_detections(detections: list[dict[str, torch.Tensor]], image_ids, category_ids=None) -> list[dict]:
    """Per-image {"boxes" xyxy, "scores", "labels"} -> COCO results (image_id, category_id, bbox xywh, score).

    ``category_ids`` maps label index -> COCO category id (identity when None).
    """
    out = []
    for det, image_id in zip(detections, image_ids):
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            cat = int(label) if category_ids is None else int(category_ids[int(label)])
            out.append({"image_id": int(image_id), "category_id": cat,
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": float(score)})
    return out


def evaluate_coco(results: list[dict], ground_truth) -> dict[str, float]:
    """mAP@0.5 and mAP@0.5:0.95 (pycocotools) of COCO results against a COCO dict, COCO object or json path."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(ground_truth, COCO):
            gt = ground_truth
        else:
            gt = COCO(ground_truth) if isinstance(ground_truth, str) else COCO()
            if not isinstance(ground_truth, str):
                gt.dataset = dict(ground_truth)
                gt.dataset.setdefault("info", {})
                gt.createIndex()
        if not results:
            return {"mAP50": 0.0, "mAP50_95": 0.0}
        dt = gt.loadRes([dict(r) for r in results])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mAP50": float(ev.stats[1]), "mAP50_95": float(ev.stats[0])}


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

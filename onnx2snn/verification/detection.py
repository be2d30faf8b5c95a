"""Detection post-processing and scoring that runs after any detector (ANN or SNN), on
float tensors: class-wise NMS, decoding of an Ultralytics-style ``[B, 4 + C, A]`` output,
COCO-format results, and mAP twice: pycocotools' and Ultralytics' own protocol.

The zoo's detectors decode with these; ``onnx2snn.zoo`` re-exports every name.
"""
from __future__ import annotations

import contextlib
import io
import json
from typing import Any

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


def decode_ultralytics(output: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.7, max_det: int = 300,
                       multi_label: bool = True, max_nms: int = 30000, agnostic: bool = False
                       ) -> list[dict[str, torch.Tensor]]:
    """Decode an Ultralytics YOLOv8 / YOLO11 export, ``[B, 4 + C, A]`` with (cx, cy, w, h) in
    input pixels and sigmoided class scores, as Ultralytics' validation does.

    Defaults are its validation settings: every (anchor, class) pair whose score exceeds
    ``conf_thres`` = 0.001 is a candidate (``multi_label``; False keeps each anchor's best
    class only, as its prediction mode does), at most ``max_nms`` candidates by score go
    to class-aware NMS at IoU ``iou_thres`` = 0.7 (``agnostic``: one NMS over all classes),
    and the ``max_det`` = 300 best survivors are kept, sorted by score.
    Returns per image {"boxes" xyxy input pixels, "scores", "labels"}.
    """
    if isinstance(output, (list, tuple)):
        output = output[0]
    output = torch.as_tensor(output)
    results = []
    for pred in output.float().transpose(1, 2):  # [A, 4 + C]
        cx, cy, w, h = pred[:, :4].unbind(1)
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
        scores = pred[:, 4:]
        if multi_label:
            anchor, label = torch.nonzero(scores > conf_thres, as_tuple=True)
            conf = scores[anchor, label]
        else:
            conf, label = scores.max(1)
            anchor = torch.nonzero(conf > conf_thres, as_tuple=True)[0]
            conf, label = conf[anchor], label[anchor]
        if len(conf) > max_nms:
            top = conf.argsort(descending=True)[:max_nms]
            anchor, label, conf = anchor[top], label[top], conf[top]
        b = boxes[anchor]
        keep = batched_nms(b, conf, torch.zeros_like(label) if agnostic else label, iou_thres)[:max_det]
        results.append({"boxes": b[keep], "scores": conf[keep], "labels": label[keep]})
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


def evaluate_coco(results: list[dict], ground_truth, per_class: bool = False) -> dict[str, Any]:
    """mAP@0.5 and mAP@0.5:0.95 (pycocotools) of COCO results against a COCO dict, COCO object or json path.
    ``per_class``: also ``"per_class"``: {category id: {"AP50", "AP50_95", "objects"}} (AP None for a
    category without ground-truth objects), from the same evaluation."""
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
            out: dict[str, Any] = {"mAP50": 0.0, "mAP50_95": 0.0}
            if per_class:
                out["per_class"] = {int(c): {"AP50": 0.0 if n else None, "AP50_95": 0.0 if n else None, "objects": n}
                                    for c, n in _objects(gt).items()}
            return out
        dt = gt.loadRes([dict(r) for r in results])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {"mAP50": float(ev.stats[1]), "mAP50_95": float(ev.stats[0])}
    if per_class:
        counts = _objects(gt)
        prec = ev.eval["precision"]  # [IoU thresholds, recall points, categories, areas, max dets]
        table = {}
        for k, c in enumerate(ev.params.catIds):
            p95, p50 = prec[:, :, k, 0, -1], prec[0, :, k, 0, -1]
            table[int(c)] = {"AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else None,
                             "AP50_95": float(p95[p95 > -1].mean()) if (p95 > -1).any() else None,
                             "objects": counts.get(int(c), 0)}
        out["per_class"] = table
    return out


def _objects(gt) -> dict[int, int]:
    """Ground-truth objects (not crowd) per category id of a pycocotools COCO object."""
    counts = {int(c): 0 for c in gt.getCatIds()}
    for a in gt.dataset.get("annotations", []):
        if not a.get("iscrowd", 0):
            counts[int(a["category_id"])] = counts.get(int(a["category_id"]), 0) + 1
    return counts


IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a [M, 4] against b [N, 4] -> [M, N]."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-7)


def match_ultralytics(gt_boxes: np.ndarray, gt_labels: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                      thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """True positives [N, len(thresholds)] of one image's detections (sorted by score,
    highest first) as Ultralytics' validation matches them: at each IoU threshold, every
    same-class (ground truth, detection) pair with IoU >= threshold is a candidate; each
    detection keeps its highest-IoU candidate, then each ground truth keeps the first
    (highest-scoring) detection left pointing at it."""
    correct = np.zeros((len(boxes), len(thresholds)), bool)
    if not len(boxes) or not len(gt_boxes):
        return correct
    iou = _iou_matrix(gt_boxes, boxes) * (gt_labels[:, None] == labels[None, :])
    for k, thr in enumerate(thresholds):
        g, d = np.nonzero(iou >= thr)
        if not len(g):
            continue
        order = np.argsort(-iou[g, d], kind="stable")
        g, d = g[order], d[order]
        _, first = np.unique(d, return_index=True)  # best IoU per detection; now ordered by detection
        g, d = g[first], d[first]
        _, first = np.unique(g, return_index=True)  # first (highest-scoring) detection per ground truth
        correct[d[first], k] = True
    return correct


def ap_ultralytics(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, sampled at 101 recall points and integrated with
    the trapezoidal rule (Ultralytics' ``interp`` AP); the curve runs from (0, 1) to (1, 0)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return float(trapezoid(np.interp(x, mrec, mpre), x))


def evaluate_ultralytics(results: list[dict], ground_truth) -> dict[str, float]:
    """mAP@0.5 and mAP@0.5:0.95 of COCO results as Ultralytics' validation computes them
    (its own metric, not pycocotools): detections matched per image by
    :func:`match_ultralytics`, AP per class by :func:`ap_ultralytics` over every
    detection of the data set sorted by score, averaged over the classes that have
    ground truth (a class with ground truth and no detection counts 0)."""
    if not isinstance(ground_truth, dict):
        from pycocotools.coco import COCO

        if isinstance(ground_truth, COCO):
            ground_truth = ground_truth.dataset
        else:
            with open(ground_truth) as f:
                ground_truth = json.load(f)
    gts: dict[int, list] = {}
    for a in ground_truth.get("annotations", []):
        if not a.get("iscrowd", 0):
            gts.setdefault(int(a["image_id"]), []).append(a)
    dets: dict[int, list] = {}
    for r in results:
        dets.setdefault(int(r["image_id"]), []).append(r)
    tp, conf, pred_cls, target_cls = [], [], [], []
    for img in ground_truth.get("images", []):
        iid = int(img["id"])
        g = gts.get(iid, [])
        gb = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                       for a in g], np.float64).reshape(-1, 4)
        gl = np.array([a["category_id"] for a in g], np.int64)
        d = sorted(dets.get(iid, []), key=lambda r: -r["score"])
        db = np.array([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
                       for r in d], np.float64).reshape(-1, 4)
        dl = np.array([r["category_id"] for r in d], np.int64)
        tp.append(match_ultralytics(gb, gl, db, dl))
        conf.append(np.array([r["score"] for r in d], np.float64))
        pred_cls.append(dl)
        target_cls.append(gl)
    if not tp:
        return {"mAP50": 0.0, "mAP50_95": 0.0}
    tp, conf, pred_cls, target_cls = (np.concatenate(v) for v in (tp, conf, pred_cls, target_cls))
    order = np.argsort(-conf, kind="stable")
    tp, pred_cls = tp[order], pred_cls[order]
    classes, counts = np.unique(target_cls, return_counts=True)
    if not len(classes):
        return {"mAP50": 0.0, "mAP50_95": 0.0}
    ap = np.zeros((len(classes), tp.shape[1]))
    for ci, (c, n_gt) in enumerate(zip(classes, counts)):
        sel = pred_cls == c
        if not sel.any():
            continue
        tpc = tp[sel].cumsum(0)
        fpc = (1 - tp[sel]).cumsum(0)
        recall = tpc / (n_gt + 1e-16)
        precision = tpc / (tpc + fpc)
        for k in range(tp.shape[1]):
            ap[ci, k] = ap_ultralytics(recall[:, k], precision[:, k])
    return {"mAP50": float(ap[:, 0].mean()), "mAP50_95": float(ap.mean())}


__all__ = ["nms_detections", "decode_ultralytics", "to_coco_detections", "evaluate_coco", "evaluate_ultralytics",
           "match_ultralytics", "ap_ultralytics", "IOU_THRESHOLDS"]

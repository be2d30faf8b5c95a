"""Decoders and losses: raw maps that encode the ground truth decode to mAP 1.0."""
import math

import numpy as np
import pytest
import torch

from onnx2snn.zoo import (coco_dict, decode_ultralytics, evaluate_coco, make_scenes, tiny_yolo_decode, tiny_yolo_loss,
                          to_coco_detections, yolo_relu_decode, yolo_relu_loss, build_model, scenes_to_tensors)
from onnx2snn.zoo.models import tiny_yolo, yolo_relu

BIG = 20.0


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(40, "val", seed=11)


def _map(dets, scenes):
    return evaluate_coco(to_coco_detections(dets, [s.image_id for s in scenes]), coco_dict(scenes))


def test_ground_truth_as_detections_is_perfect(scenes):
    dets = [{"boxes": torch.from_numpy(s.boxes), "scores": torch.ones(len(s.labels)), "labels": torch.from_numpy(s.labels)}
            for s in scenes]
    m = _map(dets, scenes)
    assert m["mAP50"] == pytest.approx(1.0) and m["mAP50_95"] == pytest.approx(1.0)
    coco = to_coco_detections(dets[:1], [scenes[0].image_id])
    b = scenes[0].boxes[0]
    assert coco[0]["bbox"] == pytest.approx([b[0], b[1], b[2] - b[0], b[3] - b[1]])
    assert coco[0]["category_id"] == scenes[0].labels[0]


def test_decode_ultralytics_perfect(scenes):
    nc, na = 10, 64
    out = torch.zeros(len(scenes), 4 + nc, na)
    out[:, :4] = torch.tensor([5.0, 5.0, 4.0, 4.0])[:, None]  # background anchors, score 0
    for i, s in enumerate(scenes):
        b = torch.from_numpy(s.boxes)
        out[i, 0, :len(b)] = (b[:, 0] + b[:, 2]) / 2
        out[i, 1, :len(b)] = (b[:, 1] + b[:, 3]) / 2
        out[i, 2, :len(b)] = b[:, 2] - b[:, 0]
        out[i, 3, :len(b)] = b[:, 3] - b[:, 1]
        out[i, 4 + torch.from_numpy(s.labels), torch.arange(len(b))] = 0.9
    dets = decode_ultralytics(out, conf_thres=0.25, iou_thres=0.7)
    assert all(len(d["boxes"]) == len(s.labels) for d, s in zip(dets, scenes))
    assert _map(dets, scenes)["mAP50_95"] == pytest.approx(1.0)


def _encode_tiny_yolo(scenes):
    """Inverse of the tiny_yolo box parametrisation: one (level, anchor, cell) slot per box."""
    outs = [torch.full((len(scenes), 3 * 15, 64 // s, 64 // s), -BIG) for s in tiny_yolo.STRIDES]
    for i, s in enumerate(scenes):
        used = set()
        for box, label in zip(s.boxes, s.labels):
            cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
            for lvl, (anchors, stride) in enumerate(zip(tiny_yolo.ANCHORS, tiny_yolo.STRIDES)):
                gx, gy = int(cx // stride), int(cy // stride)
                free = [a for a in range(3) if (lvl, a, gx, gy) not in used and max(w / anchors[a][0], h / anchors[a][1]) < 3.9]
                if free:
                    a = free[0]
                    break
            else:
                raise AssertionError("no free slot")
            used.add((lvl, a, gx, gy))
            aw, ah = tiny_yolo.ANCHORS[lvl][a]
            vals = [_logit((cx / stride - gx + 0.5) / 2), _logit((cy / stride - gy + 0.5) / 2),
                    _logit(math.sqrt(w / aw) / 2), _logit(math.sqrt(h / ah) / 2), BIG]
            c = a * 15
            outs[lvl][i, c:c + 5, gy, gx] = torch.tensor(vals)
            outs[lvl][i, c + 5 + int(label), gy, gx] = BIG
    return outs


def _encode_yolo_relu(scenes):
    """Inverse of the yolo_relu parametrisation: softplus^-1 of distances at a free point inside each box."""
    outs = [torch.zeros(len(scenes), 14, 64 // s, 64 // s) for s in yolo_relu.STRIDES]
    for o in outs:
        o[:, 4:] = -BIG
    for i, s in enumerate(scenes):
        used = set()
        for box, label in zip(s.boxes, s.labels):
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            cands = []
            for lvl, stride in enumerate(yolo_relu.STRIDES):
                n = 64 // stride
                for gy in range(n):
                    for gx in range(n):
                        px, py = (gx + 0.5) * stride, (gy + 0.5) * stride
                        if box[0] < px < box[2] and box[1] < py < box[3] and (lvl, gx, gy) not in used:
                            cands.append((abs(px - centre[0]) + abs(py - centre[1]), lvl, gx, gy, px, py))
            assert cands, "box without a free point inside"
            _, lvl, gx, gy, px, py = min(cands)
            used.add((lvl, gx, gy))
            stride = yolo_relu.STRIDES[lvl]
            d = np.array([px - box[0], py - box[1], box[2] - px, box[3] - py], np.float64) / stride
            outs[lvl][i, :4, gy, gx] = torch.from_numpy(np.log(np.expm1(d))).float()
            outs[lvl][i, 4 + int(label), gy, gx] = BIG
    return outs


@pytest.mark.parametrize("encode,decode", [(_encode_tiny_yolo, tiny_yolo_decode), (_encode_yolo_relu, yolo_relu_decode)])
def test_detector_decoders_perfect(scenes, encode, decode):
    dets = decode(encode(scenes), conf_thres=0.5)
    assert sum(len(d["boxes"]) for d in dets) == sum(len(s.labels) for s in scenes)
    m = _map(dets, scenes)
    assert m["mAP50"] == pytest.approx(1.0) and m["mAP50_95"] == pytest.approx(1.0)


@pytest.mark.parametrize("name,loss_fn", [("tiny_yolo", tiny_yolo_loss), ("yolo_relu", yolo_relu_loss)])
def test_losses_finite_and_differentiable(name, loss_fn):
    torch.manual_seed(0)
    model = build_model(name, pretrained=False).train()
    scenes = make_scenes(4, "train", seed=3)
    scenes[1].boxes, scenes[1].labels = scenes[1].boxes[:0], scenes[1].labels[:0]  # an image without objects
    x, targets = scenes_to_tensors(scenes)
    loss, parts = loss_fn(model(x), targets)
    assert torch.isfinite(loss) and loss.item() > 0 and all(math.isfinite(v) for v in parts.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("encode,loss_fn", [(_encode_tiny_yolo, tiny_yolo_loss), (_encode_yolo_relu, yolo_relu_loss)])
def test_losses_prefer_perfect_predictions(scenes, encode, loss_fn):
    _, targets = scenes_to_tensors(scenes[:8])
    perfect = encode(scenes[:8])
    noisy = [p + torch.randn_like(p) * 2 for p in perfect]
    assert loss_fn(perfect, targets)[0] < loss_fn(noisy, targets)[0]

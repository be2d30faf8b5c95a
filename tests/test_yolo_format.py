"""Ultralytics YOLO datasets, letterbox geometry, and Ultralytics' validation protocol
(multi-label decoding, its matching and AP), against hand-computed cases."""
import numpy as np
import pytest
import torch

from onnx2snn import DataError, zoo
from onnx2snn.verification.data import BatchMeta
from onnx2snn.zoo.data.yolo_format import YoloDataset, is_yolo_source, label_path, letterbox_geometry, write_yolo
from onnx2snn.zoo.models.detection import ap_ultralytics, evaluate_ultralytics, match_ultralytics


@pytest.fixture(scope="module")
def yolo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    write_yolo({"train": zoo.make_scenes(12, "train"), "val": zoo.make_scenes(8, "val")}, root)
    return root


PRE = zoo.Preprocess(size=(64, 64), channels=1, letterbox=True)


def test_read_back_what_was_written(yolo_dir):
    scenes = zoo.make_scenes(8, "val")
    for source in (yolo_dir / "data.yaml", yolo_dir, yolo_dir / "images" / "val"):
        assert is_yolo_source(source)
        ds = YoloDataset(source, "val", PRE)
        assert len(ds) == 8 and ds.has_labels
        x, t = ds[3]
        assert torch.equal(x[0], torch.from_numpy(scenes[3].image))  # 64x64 into 64x64: letterbox is identity
        assert torch.allclose(t["boxes"], torch.from_numpy(scenes[3].boxes), atol=1e-3)  # 6 decimals in the files
        assert torch.equal(t["labels"], torch.from_numpy(scenes[3].labels))
    gt = YoloDataset(yolo_dir / "data.yaml", "val", PRE).coco()
    ref = zoo.coco_dict(scenes)
    assert len(gt["annotations"]) == len(ref["annotations"])
    for a, b in zip(gt["annotations"], ref["annotations"]):
        assert a["category_id"] == b["category_id"] and np.allclose(a["bbox"], b["bbox"], atol=1e-3)
    assert [c["name"] for c in gt["categories"]] == [str(i) for i in range(10)]
    assert len(YoloDataset(yolo_dir / "data.yaml", "train", PRE)) == 12
    assert label_path(yolo_dir / "images" / "val" / "a.png") == yolo_dir / "labels" / "val" / "a.txt"


def test_image_folder_without_labels(tmp_path, yolo_dir):
    import shutil

    shutil.copytree(yolo_dir / "images" / "val", tmp_path / "pics")
    ds = YoloDataset(tmp_path / "pics", preprocess=PRE)
    assert not ds.has_labels and len(ds) == 8
    with pytest.raises(DataError, match="without labels have no ground truth"):
        ds.coco()


def _broken(tmp_path, yolo_dir, name):
    import shutil

    root = tmp_path / name
    shutil.copytree(yolo_dir, root)
    return root


@pytest.mark.parametrize("case, text, match", [
    ("class", "3 0.5 0.5 0.2 0.2\n12 0.5 0.5 0.1 0.1\n", r"val_000001.txt:2: class 12 is beyond names"),
    ("outside", "3 0.5 0.5 0.2 0.2\n3 1.2 0.5 0.1 0.1\n", r"val_000001.txt:2: coordinates .* outside \[0, 1\]"),
    ("edge", "3 0.95 0.5 0.2 0.2\n", r"val_000001.txt:1: box .* reaches outside the image"),
    ("fields", "3 0.5 0.5 0.2\n", r"val_000001.txt:1: 4 values"),
    ("words", "three 0.5 0.5 0.2 0.2\n", r"val_000001.txt:1: not numbers"),
])
def test_bad_labels_name_file_and_line(tmp_path, yolo_dir, case, text, match):
    root = _broken(tmp_path, yolo_dir, case)
    (root / "labels" / "val" / "val_000001.txt").write_text(text)
    with pytest.raises(DataError, match=match):
        YoloDataset(root / "data.yaml", "val", PRE).coco()


def test_missing_label_file_and_unreadable_image(tmp_path, yolo_dir):
    root = _broken(tmp_path, yolo_dir, "missing")
    (root / "labels" / "val" / "val_000002.txt").unlink()
    with pytest.raises(DataError, match=r"val_000002.txt: missing label file .* missing_labels='empty'"):
        YoloDataset(root / "data.yaml", "val", PRE).coco()
    gt = YoloDataset(root / "data.yaml", "val", PRE, missing_labels="empty").coco()
    assert not [a for a in gt["annotations"] if a["image_id"] == 2]
    (root / "images" / "val" / "val_000003.png").write_bytes(b"not a png")
    ds = YoloDataset(root / "data.yaml", "val", PRE, missing_labels="empty")
    with pytest.raises(DataError, match=r"val_000003.png: unreadable image"):
        ds[2]
    with pytest.raises(DataError, match=r"val_000003.png: unreadable image"):
        ds.coco()
    (root / "bad.yaml").write_text("train: images/train\n")
    with pytest.raises(DataError, match="needs 'names'"):
        YoloDataset(root / "bad.yaml", "train", PRE)
    (root / "bad2.yaml").write_text("names: [a, b]\nval: images/val\n")
    with pytest.raises(DataError, match="has no 'train' images"):
        YoloDataset(root / "bad2.yaml", "train", PRE)


def test_letterbox_geometry_by_hand():
    # 30 x 50 (h x w) into 64 x 64: r = 1.28, resized to ceil(38.4) = 39 x 64, dh = 12.5 -> top round(12.4) = 12
    assert letterbox_geometry(30, 50, (64, 64)) == ((39, 64), 64 / 50, 39 / 30, 0, 12)
    # 96 x 128 into 64 x 64: r = 0.5, 48 x 64, top round(7.9) = 8
    assert letterbox_geometry(96, 128, (64, 64)) == ((48, 64), 0.5, 0.5, 0, 8)
    # 640 x 427 (portrait) into 640 x 640: nothing to resize, left round(106.4) = 106
    assert letterbox_geometry(640, 427, (640, 640))[0::3] == ((640, 427), 106)
    pre = zoo.Preprocess(size=(64, 64), channels=1, letterbox=True)
    x = pre.normalize(torch.ones(1, 96, 128))
    pad = torch.tensor(114 / 255)
    assert torch.allclose(x[0, :8], pad) and torch.all(x[0, 8:56] == 1) and torch.allclose(x[0, 56:], pad)
    meta = BatchMeta([1], [(96, 128)], (64, 64), [pre.geometry(96, 128)])
    boxes = torch.tensor([[10.0, 18.0, 30.0, 40.0], [-5.0, 4.0, 70.0, 60.0]])
    back = meta.to_original(boxes, 0)  # (box - (0, 8)) / 0.5, clipped to 128 x 96
    assert torch.equal(back, torch.tensor([[20.0, 20.0, 60.0, 64.0], [0.0, 0.0, 128.0, 96.0]]))


# -- Ultralytics' validation protocol ------------------------------------------------------
def test_decode_multi_label_keeps_every_class_above_threshold():
    out = torch.zeros(1, 4 + 3, 2)
    out[0, :4, 0] = torch.tensor([20.0, 20.0, 10.0, 10.0])
    out[0, :4, 1] = torch.tensor([21.0, 20.0, 10.0, 10.0])   # IoU 0.82 with anchor 0
    out[0, 4:, 0] = torch.tensor([0.9, 0.3, 0.0005])         # two classes above 0.001
    out[0, 4:, 1] = torch.tensor([0.8, 0.0, 0.0])
    d = zoo.decode_ultralytics(out)[0]
    # class 0: anchor 1 is suppressed by anchor 0 (IoU > 0.7); class 1 survives on its own
    assert d["labels"].tolist() == [0, 1] and d["scores"].tolist() == pytest.approx([0.9, 0.3])
    assert d["boxes"][1].tolist() == [15.0, 15.0, 25.0, 25.0]
    single = zoo.decode_ultralytics(out, multi_label=False)[0]  # prediction mode: best class per anchor
    assert single["labels"].tolist() == [0]
    assert len(zoo.decode_ultralytics(out, max_det=1)[0]["labels"]) == 1
    assert zoo.decode_ultralytics(out, iou_thres=0.9)[0]["labels"].tolist() == [0, 0, 1]


def test_ap_ultralytics_by_hand():
    # one perfect detection: the envelope is 1 up to recall 1 and drops to 0 at the sampled point 1.0,
    # so the trapezoid over 101 points gives 0.99 + 0.01 * (1 + 0) / 2 = 0.995 (pycocotools: 1.0)
    assert ap_ultralytics(np.array([1.0]), np.array([1.0])) == pytest.approx(0.995)
    # recall 0.5 at precision 1, then nothing: 1 on [0, 0.5), the line 1 -> 0 ... the envelope
    # (0, 1), (0.5, 1), (1, 0): area 0.5 + 0.25 = 0.75 (exact for a piecewise linear curve)
    assert ap_ultralytics(np.array([0.5]), np.array([1.0])) == pytest.approx(0.75, abs=1e-9)


def test_matching_by_iou_then_score():
    gt = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float)
    labels = np.zeros(2, int)
    dets = np.array([[0, 0, 10, 10],    # d0: IoU 1 with g0, 1/3 with g1
                     [2, 0, 12, 10]],   # d1: IoU 2/3 with g0, 7/13 with g1
                    float)
    tp = match_ultralytics(gt, labels, dets, np.zeros(2, int))
    # at IoU 0.5 both detections point at their best ground truth, g0, which keeps the first:
    # d1 counts as a false positive (COCO's greedy matching would give it g1)
    assert tp[:, 0].tolist() == [True, False]
    assert tp[0].all() and not tp[1].any()
    other_class = match_ultralytics(gt, labels, dets, np.array([0, 1]))
    assert other_class[:, 0].tolist() == [True, False]


def test_evaluate_ultralytics_against_pycocotools_by_hand():
    gt = {"images": [{"id": 1, "width": 64, "height": 64}, {"id": 2, "width": 64, "height": 64}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
                          {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20, 20, 10, 10], "area": 100,
                           "iscrowd": 0}],
          "categories": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]}
    res = [{"image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "score": 0.9},
           {"image_id": 2, "category_id": 1, "bbox": [20, 20, 10, 10], "score": 0.8},
           {"image_id": 2, "category_id": 0, "bbox": [40, 40, 5, 5], "score": 0.95}]  # a false positive, class 0
    ul = evaluate_ultralytics(res, gt)
    # class 0: FP at 0.95 then TP: recall (0, 1), precision (0, 0.5): envelope 0.5 up to recall 1 -> 0.5 * 0.99 +
    # 0.01 * (0.5 + 0) / 2 = 0.4975; class 1: 0.995; mean 0.74625 at every IoU threshold
    assert ul["mAP50"] == pytest.approx(0.74625) and ul["mAP50_95"] == pytest.approx(0.74625)
    coco = zoo.evaluate_coco(res, gt)  # pycocotools: class 0 precision 0.5 at every recall point -> 0.5; class 1: 1
    assert coco["mAP50"] == pytest.approx(0.75)


def test_verify_on_letterboxed_yolo_data_maps_boxes_back(tmp_path):
    """Scenes whose digits lie in rows 8..56 are cut to 48 x 64, enlarged 2x (nearest) to
    96 x 128 files: letterboxing them back to 64 x 64 (area downscale, pad 8 rows each side)
    gives exactly the cut scene, so verify's reference mAP on the files must equal the mAP
    of onnxruntime on the cut scenes with the boxes mapped by hand ((box - pad) / 0.5,
    clipped) against labels in file pixels."""
    import onnx2snn
    from onnx2snn.onnx_io import run_onnxruntime

    scenes = [s for s in zoo.make_scenes(60, "val") if len(s.boxes) and s.boxes[:, 1].min() >= 8
              and s.boxes[:, 3].max() <= 56][:12]
    assert len(scenes) >= 8
    big, inputs = [], []
    for s in scenes:
        cut = s.image.copy()
        cut[:8] = 0
        cut[56:] = 0
        inputs.append(cut)
        up = np.repeat(np.repeat(s.image[8:56], 2, 0), 2, 1)  # 96 x 128
        big.append(zoo.Scene(image=up, boxes=(s.boxes - np.array([0, 8, 0, 8], np.float32)) * 2, labels=s.labels,
                             image_id=s.image_id, file_name=s.file_name))
    data = write_yolo({"val": big}, tmp_path / "ds")
    path = onnx2snn.export_zoo_model("yolov8_relu", tmp_path / "m.onnx")
    x = torch.from_numpy(np.stack(inputs))[:, None]
    snn = onnx2snn.convert(path, x[:4], timesteps=1, progress=False)
    pre = zoo.Preprocess(size=(64, 64), channels=1, letterbox=True, pad_value=0.0)
    rep = onnx2snn.verify(snn, path, data=data, task="detection", postprocess="yolov8", timesteps=[1], preprocess=pre,
                          layers=False, progress=False)
    out = torch.from_numpy(run_onnxruntime(path, x.numpy())[0])
    results = []
    for k, d in enumerate(zoo.decode_ultralytics(out)):
        b = (d["boxes"] - torch.tensor([0.0, 8, 0, 8])) / 0.5
        b = torch.stack([b[:, 0].clamp(0, 128), b[:, 1].clamp(0, 96), b[:, 2].clamp(0, 128), b[:, 3].clamp(0, 96)], 1)
        results += zoo.to_coco_detections([dict(d, boxes=b)], [k + 1])
    gt = YoloDataset(data, "val", pre).coco()
    expect = zoo.evaluate_coco(results, gt)
    ref = rep.metrics["reference"]
    assert ref["mAP50"] > 0.8
    assert ref["mAP50"] == pytest.approx(expect["mAP50"], abs=1e-9)
    assert ref["mAP50_95"] == pytest.approx(expect["mAP50_95"], abs=1e-9)
    assert ref["mAP50_ultralytics"] == pytest.approx(evaluate_ultralytics(results, gt)["mAP50"], abs=1e-9)

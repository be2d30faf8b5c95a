"""Zoo data: digits and digit scenes are deterministic and exact; loaders read back what writers wrote."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from onnx2snn.zoo import (CocoImages, ImageFolder, NpzArrays, Preprocess, coco_dict, load_batch, load_digits,
                          make_scenes, open_dataset, read_coco, write_coco)
from onnx2snn.zoo.data.digits import split_indices


def test_digits_shapes_range_and_split():
    x, y = load_digits(16, "train")
    xt, yt = load_digits(32, "test")
    assert x.shape == (1437, 1, 16, 16) and x.dtype == np.float32 and y.dtype == np.int64
    assert xt.shape == (360, 1, 32, 32)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert not set(split_indices("train")) & set(split_indices("test"))
    assert np.array_equal(np.bincount(yt), np.bincount(load_digits(16, "test")[1]))  # same split at every size
    assert np.bincount(yt).min() >= 35  # stratified: every class in test


def test_digits_deterministic():
    a, b = load_digits(16, "train", seed=0), load_digits(16, "train", seed=0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(load_digits(16, "test", seed=1)[1], a[1][:360])


def test_scenes_deterministic():
    a, b = make_scenes(12, "train", seed=5), make_scenes(12, "train", seed=5)
    for s, t in zip(a, b):
        assert np.array_equal(s.image, t.image) and np.array_equal(s.boxes, t.boxes) and np.array_equal(s.labels, t.labels)
    c = make_scenes(12, "train", seed=6)
    assert not all(np.array_equal(s.image, t.image) for s, t in zip(a, c))
    v = make_scenes(12, "val", seed=5)
    assert not np.array_equal(a[0].image, v[0].image)


@pytest.mark.parametrize("size", [64, 96])
def test_scene_boxes_are_exact(size):
    scenes = make_scenes(60, "val", seed=1, size=size, return_masks=True)
    counts = [len(s.labels) for s in scenes]
    assert min(counts) >= 1 and max(counts) <= 6 and max(counts) >= 4
    for s in scenes:
        assert s.image.shape == (size, size) and s.image.dtype == np.float32
        assert np.array_equal(np.round(s.image * 255) / 255, s.image.astype(np.float64).astype(np.float32))
        assert s.masks.shape == (len(s.labels), size, size)
        assert ((s.labels >= 0) & (s.labels <= 9)).all()
        assert (s.boxes[:, :2] >= 0).all() and (s.boxes[:, 2:] <= size).all()
        assert (s.boxes[:, 2:] > s.boxes[:, :2]).all()
        for box, mask in zip(s.boxes.astype(int), s.masks):
            rows, cols = np.nonzero(mask)
            # every ink pixel inside the box, and the box is tight
            assert cols.min() == box[0] and rows.min() == box[1] and cols.max() + 1 == box[2] and rows.max() + 1 == box[3]
            assert (s.image[mask] >= 0.2).mean() > 0.9  # the ink is visible in the image (max blending)


def test_coco_roundtrip(tmp_path):
    scenes = make_scenes(8, "val", seed=2)
    path = write_coco(scenes, tmp_path / "coco")
    assert path == tmp_path / "coco" / "instances.json"
    gt = json.loads(path.read_text())
    assert {c["id"] for c in gt["categories"]} == set(range(10))
    for a in gt["annotations"]:
        assert a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3]
    back = read_coco(path)
    assert len(back) == len(scenes)
    for s, t in zip(scenes, back):
        assert np.array_equal(s.image, t.image)
        assert np.array_equal(s.boxes, t.boxes) and np.array_equal(s.labels, t.labels)
        assert s.image_id == t.image_id
    assert coco_dict(back)["annotations"] == gt["annotations"]
    # the generic loader gives the same pixels and boxes
    ds = CocoImages(path, None, Preprocess(size=(64, 64)))
    x, target = ds[3]
    assert torch.equal(x[0], torch.from_numpy(scenes[3].image))
    assert torch.equal(target["boxes"], torch.from_numpy(scenes[3].boxes))
    assert torch.equal(target["labels"], torch.from_numpy(scenes[3].labels))
    # resizing the input rescales the boxes
    x2, t2 = CocoImages(path, None, Preprocess(size=(32, 32)))[3]
    assert x2.shape == (1, 32, 32) and torch.allclose(t2["boxes"], target["boxes"] / 2)


def test_npz_loader(tmp_path):
    x, y = load_digits(16, "test")
    np.savez(tmp_path / "d.npz", x=x[:20], y=y[:20])
    ds = NpzArrays(tmp_path / "d.npz")
    assert len(ds) == 20
    assert all(torch.equal(ds[i][0], torch.from_numpy(x[i])) and ds[i][1] == y[i] for i in range(20))
    pre = Preprocess(size=(16, 16), mean=(0.5,), std=(0.25,))
    assert torch.allclose(NpzArrays(tmp_path / "d.npz", pre)[4][0], (torch.from_numpy(x[4]) - 0.5) / 0.25)
    # NHWC uint8 without labels
    u8 = (np.random.default_rng(0).random((5, 8, 8, 3)) * 255).astype(np.uint8)
    np.savez(tmp_path / "u.npz", x=u8)
    xb = load_batch(tmp_path / "u.npz", Preprocess(size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1), channels=3))
    assert xb.shape == (5, 3, 8, 8) and xb.dtype == torch.float32
    assert torch.allclose(xb, torch.from_numpy(u8.transpose(0, 3, 1, 2) / 255.0).float())
    assert NpzArrays(tmp_path / "u.npz")[0][1] == -1


def test_image_folder_loaders(tmp_path):
    x, y = load_digits(16, "test")
    u8 = np.round(x[:12, 0] * 255).astype(np.uint8)
    for i, img in enumerate(u8):
        (tmp_path / "cls" / str(y[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(tmp_path / "cls" / str(y[i]) / f"{i:03d}.png")
        (tmp_path / "flat").mkdir(exist_ok=True)
        Image.fromarray(img, mode="L").save(tmp_path / "flat" / f"{i:03d}.png")
    pre = Preprocess(size=(16, 16))
    ds = ImageFolder(tmp_path / "cls", pre)
    assert len(ds) == 12 and ds.classes == sorted({str(v) for v in y[:12]})
    for path, label in ds.samples:
        i = int(path.stem)
        xi, li = ds[ds.samples.index((path, label))]
        assert ds.classes[li] == str(y[i])
        assert torch.equal(xi[0], torch.from_numpy(u8[i] / np.float32(255.0)))
    flat = open_dataset(tmp_path / "flat", pre)
    assert isinstance(flat, ImageFolder) and len(flat) == 12 and flat[0][1] == -1
    assert torch.equal(flat[5][0][0], torch.from_numpy(u8[5] / np.float32(255.0)))
    # RGB preset on grayscale files; resize to 32
    rgb = load_batch(tmp_path / "flat", Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, channels=3), limit=4)
    assert rgb.shape == (4, 3, 32, 32)


def test_preprocess_dict_roundtrip():
    p = Preprocess(size=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels=3)
    d = p.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Preprocess.from_dict(d) == p


def test_preprocess_centre_crop(tmp_path):
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[100:200, 150:250] = 255  # white square in the middle
    Image.fromarray(rgb).save(tmp_path / "a.png")
    p = Preprocess(size=(224, 224), mean=(0, 0, 0), std=(1, 1, 1), channels=3, crop_fraction=0.875)
    x = p.image_to_tensor(tmp_path / "a.png")
    assert x.shape == (3, 224, 224)
    # shorter side 300 -> 256 (scale 0.8533), then a 224 centre crop: the square spans about 85 px, centred
    assert x[:, 112, 112].min() == 1.0 and x[:, 5, 5].max() == 0.0
    cols = torch.nonzero(x[0, 112] > 0.5).flatten()
    assert abs(int(cols.min()) + int(cols.max()) - 223) <= 2 and 80 <= len(cols) <= 90

"""Files that describe themselves: the ONNX metadata Ultralytics writes (task, names, imgsz,
stride, end2end), YOLO data.yaml and COCO json set the task, the decoder, the input size and
the class names, with nothing named; what the user passes wins; conflicts are errors.

The exports are written here with onnx's API (the keys and value forms Ultralytics writes);
Ultralytics itself is never imported."""

import warnings

import numpy as np
import onnx
import pytest
import torch

import onnx2snn
from onnx2snn import zoo
from onnx2snn.errors import ConfigError, DataError, DynamicShapeError, InvalidModelError
from onnx2snn.graph.metadata import ModelMetadata, read_metadata, set_metadata
from onnx2snn.task import detection_data, fill_input_shape, yolov8_classes

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def ultralytics_props(**over) -> dict:
    props = {"description": "Ultralytics YOLOv8n model trained on data.yaml", "author": "Ultralytics",
             "date": "2026-01-01T00:00:00", "version": "8.3.0", "license": "AGPL-3.0 License",
             "docs": "https://docs.ultralytics.com", "stride": "16", "task": "detect", "batch": "1",
             "imgsz": "[64, 64]", "names": repr(dict(enumerate(NAMES))), "end2end": "False", "channels": "1",
             "args": "{'batch': 1, 'half': False, 'dynamic': False}"}
    props.update(over)
    return props


def _write(proto: onnx.ModelProto, path, props=None, dynamic: bool = False) -> str:
    """Save a copy of ``proto`` with ``props`` as its metadata_props (replacing all) and, with
    ``dynamic``, batch, height and width left symbolic, as ``yolo export dynamic=True`` writes them."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    del m.metadata_props[:]
    if props:
        set_metadata(m, props)
    if dynamic:
        dims = m.graph.input[0].type.tensor_type.shape.dim
        for k, name in ((0, "batch"), (2, "height"), (3, "width")):
            dims[k].Clear()
            dims[k].dim_param = name
        for o in m.graph.output:
            for k, d in enumerate(o.type.tensor_type.shape.dim):
                if k != 1:
                    d.Clear()
                    d.dim_param = f"out_{k}"
    onnx.save(m, str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The zoo's trained yolov8_silu as `best.onnx` (Ultralytics' metadata keys), variants, and a
    YOLO-format dataset (64 train, 48 val scenes) with data.yaml."""
    d = tmp_path_factory.mktemp("meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = onnx.load(onnx2snn.export_zoo_model("yolov8_silu", d / "zoo.onnx"))
    data = zoo.write_yolo({"train": zoo.make_scenes(64, "train"), "val": zoo.make_scenes(48, "val")}, d / "ds")
    return {"dir": d, "proto": plain, "data": str(data),
            "best": _write(plain, d / "best.onnx", ultralytics_props()),
            "bare": _write(plain, d / "bare.onnx"),
            "dynamic": _write(plain, d / "dynamic.onnx", ultralytics_props(), dynamic=True),
            "dynamic_bare": _write(plain, d / "dynamic_bare.onnx", dynamic=True)}


@pytest.fixture(scope="module")
def snn(files):
    """Converted with nothing named: calibration on the data.yaml's train images."""
    return onnx2snn.convert(files["best"], files["data"], timesteps=8, progress=False)


# -- the metadata ---------------------------------------------------------------------------
def test_metadata_is_read_as_ultralytics_writes_it(files):
    m = read_metadata(files["best"])
    assert (m.task, m.names, m.imgsz, m.stride, m.end2end, m.channels) == ("detect", NAMES, (64, 64), 16, False, 1)
    assert read_metadata(files["proto"]).names == [str(i) for i in range(10)]  # the zoo's export writes them too
    assert not read_metadata(files["bare"])
    twin = onnx2snn.import_onnx(files["best"])
    assert read_metadata(twin).names == NAMES and twin.onnx_info.output_shapes == {"output": (1, 14, 336)}
    assert ModelMetadata({"imgsz": "640"}).imgsz == (640, 640)
    assert ModelMetadata({"names": "['a', 'b']"}).names == ["a", "b"]
    assert ModelMetadata({"end2end": "True"}).end2end


@pytest.mark.parametrize("key, value", [("names", "__import__('os').getcwd()"), ("names", "{0: 'a', 2: 'c'}"),
                                        ("imgsz", "[640, 'x']"), ("stride", "-1")])
def test_bad_metadata_is_an_error_naming_the_key(key, value):
    """Literals only (never eval): code, gaps in the class indices and bad sizes are refused."""
    m = ModelMetadata({key: value}, "best.onnx")
    with pytest.raises(InvalidModelError, match=rf"best.onnx: metadata_props\['{key}'\]"):
        getattr(m, key)


def test_a_yolov8_head_is_recognised_by_its_output():
    assert yolov8_classes([(1, 84, 8400)], (640, 640)) == 80
    assert yolov8_classes([(1, 84, 8400)], (416, 416)) is None            # anchors of another size
    assert yolov8_classes([(1, 84, 8400)], (320, 320)) == 80              # strides 4, 8, 16
    assert yolov8_classes([(1, 6, 2100)], (320, 320)) == 2
    assert yolov8_classes([(1, 116, 8400), (1, 32, 160, 160)], (640, 640)) is None  # a segmentation head
    assert yolov8_classes([(1, 10)], (32, 32)) is None


def test_detection_data_is_recognised(files, tmp_path):
    assert "YOLO" in detection_data(files["data"])
    coco = zoo.write_coco(zoo.digit_scenes("val", n=4), tmp_path / "coco")
    assert "COCO" in detection_data(str(coco))
    assert detection_data(torch.zeros(2, 1, 8, 8)) is None


# -- verify -----------------------------------------------------------------------------------
def test_verify_with_nothing_named_scores_map_on_the_val_split_with_names(files, snn, tmp_path):
    """best.onnx + data.yaml: detection with the yolov8 decoder (the metadata says task=detect),
    the 48 val scenes (not the 64 train ones), the metadata's class names in the AP table."""
    r = onnx2snn.verify(snn, files["best"], data=files["data"], timesteps=[4, 8], progress=False, layers=False)
    assert r.task == "detection" and r.n_samples == 48
    assert r.metrics["reference"]["mAP50"] > 0.9 and r.metrics["snn"][8]["mAP50"] > 0.9
    inferred = r.config["inferred"]
    assert "task='detect'" in inferred["task"] and "'yolov8'" in inferred["postprocess"]
    assert "10 class names" in inferred["names"]
    assert "decode_ultralytics" in r.config["postprocess"]
    assert list(r.classes["names"].values()) == NAMES
    assert sum(r.classes["objects"].values()) > 100
    aps = [a["AP50"] for a in r.classes["reference"].values()]
    assert np.mean(aps) == pytest.approx(r.metrics["reference"]["mAP50"], abs=1e-6)  # the mean of the classes
    md = r.table()
    assert "### AP per class" in md and "| seven" in md and "Inferred: task detection" in md
    assert r.to_dict()["classes"]["names"]["7"] == "seven"
    assert "per_class" not in r.metrics["snn"][8]


def test_verify_infers_from_the_data_the_postprocess_or_the_output(files, snn):
    """No metadata: the data.yaml (detection data; names from the yaml), a postprocess alone, or
    the YOLOv8-style output make it detection; the same mAP each way."""
    bare = onnx2snn.convert(files["bare"], files["data"], timesteps=4, progress=False)
    kw = dict(timesteps=[4], progress=False, layers=False, limit=16)
    by_data = onnx2snn.verify(bare, files["bare"], data=files["data"], **kw)
    assert by_data.task == "detection" and "YOLO-format data" in by_data.config["inferred"]["task"]
    assert "'yolov8' (output [B, 14, anchors])" in by_data.config["inferred"]["postprocess"]
    assert "(the data)" in by_data.config["inferred"]["names"]
    by_post = onnx2snn.verify(bare, files["bare"], data=files["data"], postprocess="yolov8", **kw)
    assert by_post.task == "detection" and "postprocess='yolov8' given" in by_post.config["inferred"]["task"]
    explicit = onnx2snn.verify(bare, files["bare"], data=files["data"], task="detection", postprocess="yolov8", **kw)
    assert set(explicit.config["inferred"]) == {"names"}  # task and decoder as given
    for r in (by_data, by_post):
        assert r.metrics["snn"][4]["mAP50"] == pytest.approx(explicit.metrics["snn"][4]["mAP50"], abs=1e-9)
        assert r.metrics["snn"][4]["mAP50"] > 0.85


def test_conflicts_are_errors_naming_both_sides(files, snn, tmp_path):
    kw = dict(timesteps=[1], progress=False, layers=False, limit=4)
    with pytest.raises(ConfigError, match=r"task='classification' with postprocess='yolov8'"):
        onnx2snn.verify(snn, files["best"], data=files["data"], task="classification", postprocess="yolov8", **kw)
    with pytest.raises(ConfigError, match=r"task='classification' on YOLO-format data .*detection data"):
        onnx2snn.verify(snn, files["best"], data=files["data"], task="classification", **kw)
    classify = _write(files["proto"], tmp_path / "cls.onnx", ultralytics_props(task="classify"))
    with pytest.raises(ConfigError, match=r"task='classify' \(a classifier\), but the data is YOLO-format data"):
        onnx2snn.verify(snn, classify, data=files["data"], **kw)
    wrong = _write(files["proto"], tmp_path / "wrong.onnx", ultralytics_props(names="{0: 'a', 1: 'b'}"))
    with pytest.raises(DataError, match=r"detects 10 classes .* names 2"):
        onnx2snn.verify(snn, wrong, data=files["data"], **kw)


def test_a_detector_on_unlabeled_tensors_says_what_to_pass(files, snn):
    """Inferred detection needs ground truth: the error says why it is a detector and the ways
    out; task='classification' (the user's word wins) compares the raw outputs."""
    x = torch.from_numpy(np.stack([s.image for s in zoo.make_scenes(4, "val")]))[:, None]
    with pytest.raises(DataError, match=r"detector \(task='detect' in .*best.onnx's metadata\).*no ground truth"):
        onnx2snn.verify(snn, files["best"], data=x, timesteps=[1], progress=False, layers=False)
    r = onnx2snn.verify(snn, files["best"], data=x, task="classification", timesteps=[8], progress=False,
                        layers=False)
    assert r.task == "classification" and r.metrics["snn"][8]["rel_l2"] < 0.2


def test_heads_without_a_decoder_are_named(files, snn, tmp_path):
    e2e = _write(files["proto"], tmp_path / "e2e.onnx", ultralytics_props(end2end="True", head="YOLO26Detect"))
    with pytest.raises(ConfigError, match=r"end2end=True, head 'YOLO26Detect'.*not supported yet"):
        onnx2snn.verify(snn, e2e, data=files["data"], timesteps=[1], progress=False, layers=False, limit=4)
    seg = _write(files["proto"], tmp_path / "seg.onnx", ultralytics_props(task="segment"))
    with pytest.raises(ConfigError, match=r"task='segment'.*no decoder yet"):
        onnx2snn.verify(snn, seg, data=files["data"], timesteps=[1], progress=False, layers=False, limit=4)
    # what the user passes wins: their own decoder for it
    r = onnx2snn.verify(snn, e2e, data=files["data"], timesteps=[1], progress=False, layers=False, limit=8,
                        postprocess="yolov8")
    assert r.task == "detection" and r.metrics["reference"]["mAP50"] > 0.8


def test_the_inference_is_stored_and_printed_once(files, snn, capsys):
    assert snn.config["inferred"]["task"] == "detection" and snn.config["inferred"]["postprocess"] == "yolov8"
    path = snn.save(files["dir"] / "best.snn.pt")
    back = onnx2snn.load(path)
    assert back.config["inferred"]["names"] == NAMES and read_metadata(back).task == "detect"
    onnx2snn.verify(back, data=files["data"], timesteps=[1], progress=True, layers=False, limit=4)
    err = capsys.readouterr().err
    assert err.count("onnx2snn verify: task detection (task='detect'") == 1


# -- sizes ------------------------------------------------------------------------------------
def test_dynamic_height_and_width_are_filled_from_imgsz_or_the_data(files):
    """`dynamic=True` exports: imgsz fills height / width (images of the data.yaml are
    letterboxed to it); without imgsz the calibration tensors' size does. Both are said."""
    a = onnx2snn.convert(files["dynamic"], files["data"], timesteps=4, progress=False)
    assert a.ann.onnx_info.input_shapes["input"] == (1, 1, 64, 64)
    assert a.config["inferred"]["input_shape"] == [1, 1, 64, 64]
    assert "imgsz [64, 64]" in a.config["inferred"]["input_shape_from"]
    x = torch.from_numpy(np.stack([s.image for s in zoo.make_scenes(8, "train")]))[:, None]
    b = onnx2snn.convert(files["dynamic_bare"], x, timesteps=4, progress=False)
    assert b.config["inferred"]["input_shape_from"] == "the calibration data's samples"
    with pytest.raises(DynamicShapeError, match="input_shape"):  # nothing says the size: as before
        onnx2snn.convert(files["dynamic_bare"], files["data"], timesteps=4, progress=False)
    assert fill_input_shape(files["dynamic"], (1, 1, 32, 32)) == ((1, 1, 32, 32), None)  # the user wins
    r = onnx2snn.verify(a, files["dynamic"], data=files["data"], timesteps=[4], progress=False, layers=False, limit=16)
    assert r.task == "detection" and r.metrics["snn"][4]["mAP50"] > 0.85


def test_finetune_reads_the_size_and_records_what_it_inferred(files):
    ft = onnx2snn.finetune(files["dynamic"], files["data"], timesteps=4, epochs=0, calibration_limit=16,
                           batch_size=16, replace_activations={"SiLU": "ReLU"}, progress=False)
    assert ft.onnx_info.input_shapes["input"] == (1, 1, 64, 64)
    said = ft.finetune_info["inferred"]
    assert "imgsz [64, 64]" in said["input shape"] and "task='detect'" in said["task"]


# -- the settings search --------------------------------------------------------------------
def test_the_search_scores_a_detector_by_map_with_nothing_named(files):
    """convert(best.onnx, calib, target=...) knows it holds a detector: quality is mAP@0.5
    against the ANN's detections (not 1 - relative output error)."""
    x = torch.from_numpy(np.stack([s.image for s in zoo.make_scenes(72, "train")]))[:, None]
    # no postprocess named (max_runs only keeps the test short: the full search takes ~100 s here)
    s = onnx2snn.convert(files["best"], x, timesteps=4, target=0.9, tune_options={"max_runs": 2}, progress=False)
    rep = s.tune_report
    assert rep.kind == "mAP50" and "ANN's detections" in rep.quality
    assert s.config["tune"]["chosen"]["quality"] >= 0.9
    assert s.config["inferred"]["postprocess"] == "yolov8"


# -- the command line -------------------------------------------------------------------------
def test_cli_verify_without_task_or_postprocess(files, snn, tmp_path):
    from onnx2snn.cli import main

    path = snn.save(tmp_path / "best.snn.pt")
    out = tmp_path / "rep"
    assert main(["verify", path, "--data", files["data"], "-T", "4", "--limit", "16", "--no-layers", "--quiet",
                 "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Verification (detection)" in md and "| nine" in md


def test_cli_inspect_shows_the_metadata_of_a_dynamic_export(files, capsys):
    from onnx2snn.cli import main

    assert main(["inspect", files["dynamic"]]) == 0
    out = capsys.readouterr().out
    assert "metadata: task detect, imgsz (64, 64), stride 16, end2end False, names 10" in out
    assert "input size from imgsz [64, 64]" in out

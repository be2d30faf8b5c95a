"""The settings search (convert(..., target=...)): the chosen point keeps the target on held-out
data and on unseen test digits, the report and saved config carry it, bad input is refused."""

import json

import numpy as np
import pytest
import torch

import onnx2snn
from onnx2snn import zoo
from onnx2snn.errors import ConfigError, DataError
from onnx2snn.graph.averaged import REENCODE_LEVELS
from onnx2snn.tuning import TuneReport


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("tune") / "digits_resnet.onnx"
    onnx2snn.export_zoo_model("digits_resnet", path)
    x, _ = zoo.load_digits(16, "train")
    xte, _ = zoo.load_digits(16, "test")
    twin = onnx2snn.import_onnx(path)
    return path, twin, torch.as_tensor(x[:400]), torch.as_tensor(xte)


@pytest.fixture(scope="module")
def tuned(digits):
    path, twin, x, _ = digits
    return onnx2snn.convert(twin, x, target=0.99, progress=False)


def _agreement(snn, twin, x, T):
    with torch.no_grad():
        return float((snn(x, timesteps=T).argmax(1) == twin(x).argmax(1)).float().mean())


def test_chosen_point_meets_target_held_out_and_on_test(digits, tuned):
    _, twin, _, xte = digits
    r = tuned.tune_report
    assert isinstance(r, TuneReport) and r.kind == "agreement"
    p = r.points[r.chosen]
    assert r.validation_samples == 100 and r.statistics_samples == 300
    # the default margin: one binomial standard error of 99 % on 100 held-out samples
    assert r.units == 100 and r.margin == pytest.approx((0.99 * 0.01 / 100) ** 0.5)
    assert p["quality"] >= r.required == pytest.approx(0.99 + r.margin) and p["meets"]
    assert all(q["meets"] == (q["quality"] >= r.required - 1e-12) for q in r.points)
    T = tuned.config["timesteps"]
    assert T == p["T"] and tuned.timesteps == T
    # never dearer than the default setting at its smallest T that keeps the target
    d = r.default_point()
    assert d is not None and p["energy_ratio"] <= d["energy_ratio"] + 1e-12
    assert 0 < p["energy_ratio"] < 1
    # the promise holds on 360 digits the search never saw (a little slack for the held-out size)
    assert _agreement(tuned, twin, xte, T) >= 0.97
    # the frontier: by growing energy, growing quality, the chosen point on or above it
    f = [r.points[i] for i in r.frontier]
    assert [q["energy_ratio"] for q in f] == sorted(q["energy_ratio"] for q in f)
    assert [q["quality"] for q in f] == sorted(q["quality"] for q in f)
    # a few verify runs, not hundreds: one run per candidate, within the budget
    assert 2 <= len(r.candidates) <= 20


def test_report_files_and_saved_settings(digits, tuned, tmp_path):
    _, twin, _, xte = digits
    files = tuned.tune_report.write(tmp_path / "rep")
    data = json.loads(open(files["json"]).read())
    assert data["chosen"] == tuned.tune_report.chosen and data["frontier"] and data["points"]
    assert "Pareto frontier" in open(files["md"]).read()
    assert open(files["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    tuned.save(tmp_path / "t.snn.pt")
    back = onnx2snn.load(tmp_path / "t.snn.pt")
    chosen = back.config["tune"]["chosen"]
    assert chosen["timesteps"] == back.config["timesteps"] and chosen["levels"] == back.config["levels"]
    assert back.config["tune"]["target"] == 0.99
    T = back.config["timesteps"]
    with torch.no_grad():
        assert torch.allclose(back(xte[:50], timesteps=T), tuned(xte[:50], timesteps=T), atol=1e-5)
    rep = onnx2snn.verify(back, data=xte[:64], timesteps=[T], progress=False)
    assert "Settings chosen by a search for 99 %" in rep.table()


def test_objective_timesteps_never_slower(digits, tuned):
    _, twin, x, _ = digits
    snn = onnx2snn.convert(twin, x, target=0.99, objective="timesteps", progress=False)
    r = snn.tune_report
    assert r.points[r.chosen]["meets"]
    assert snn.config["timesteps"] == min(p["T"] for p in r.points if p["meets"])
    assert snn.config["timesteps"] <= tuned.config["timesteps"]


def test_margin_zero_trusts_held_out_numbers(digits, tuned):
    """Without the margin a point needs only the target on the held-out part: never dearer."""
    _, twin, x, _ = digits
    bare = onnx2snn.convert(twin, x, target=0.99, progress=False, search={"margin": 0})
    r, auto = bare.tune_report, tuned.tune_report
    assert r.margin == 0 and r.required == 0.99 and "margin" not in r.reason
    assert all(q["meets"] == (q["quality"] >= 0.99 - 1e-12) for q in r.points)
    assert r.points[r.chosen]["energy_ratio"] <= auto.points[auto.chosen]["energy_ratio"] + 1e-12
    assert "with a margin of 0.99 points on 100 held-out samples" in auto.reason


@pytest.mark.parametrize("kw, err, words", [
    (dict(target=0.0), ConfigError, "target"),
    (dict(target=1.5), ConfigError, "<= 1"),
    (dict(target="high"), ConfigError, "target"),
    (dict(target=0.99, objective="speed"), ConfigError, "objective"),
    (dict(objective="timesteps"), ConfigError, "pass target="),
    (dict(target=0.99, search={"holdout_fraction": 0.2}), ConfigError, "unknown setting holdout_fraction="),
    (dict(target=0.99, search={"early_stop": 2}), ConfigError, "early_stop"),
    (dict(target=0.99, search={"reencode_levels": (0,)}), ConfigError, "reencode_levels"),
    (dict(target=0.99, search={"margin": -0.01}), ConfigError, r"margin.*'auto'"),
    (dict(target=0.99, search={"margin": "wide"}), ConfigError, r"margin.*'auto'"),
])
def test_bad_arguments(digits, kw, err, words):
    _, twin, x, _ = digits
    with pytest.raises(err, match=words):
        onnx2snn.convert(twin, x, progress=False, **kw)


def test_labeled_validation_data_gives_real_top1(digits):
    """Labeled digits instead of a held-out part: quality is the SNN's top-1 over the ANN's on
    them, and every calibration sample goes to the statistics."""
    path, twin, x, xte = digits
    _, yte = zoo.load_digits(16, "test")
    yte = torch.as_tensor(yte)
    snn = onnx2snn.convert(twin, x[:300], target=0.99, progress=False,
                           search={"validation": (xte[:200], yte[:200])})
    r = snn.tune_report
    assert r.labeled and r.kind == "top1" and r.validation_samples == 200 and r.statistics_samples == 300
    assert r.units == 200 and r.margin == pytest.approx((0.99 * 0.01 / 200) ** 0.5)
    p = r.points[r.chosen]
    T = p["T"]
    with torch.no_grad():
        top1 = lambda m, **kw: float((m(xte[:200], **kw).argmax(1) == yte[:200]).float().mean())  # noqa: E731
        assert p["quality"] == pytest.approx(top1(snn, timesteps=T) / top1(twin), abs=1e-9)
    assert p["quality"] >= r.required and snn.config["tune"]["validation"] == "labeled validation"
    with pytest.raises(DataError, match=r"search\['validation'\] has no labels"):
        onnx2snn.convert(twin, x[:300], target=0.99, progress=False, search={"validation": xte[:64]})
    wrong = (yte[:64] + 1) % 10  # shifted labels: the ANN gets none of them right
    with torch.no_grad():
        assert int((twin(xte[:64]).argmax(1) == wrong).sum()) == 0
    with pytest.raises(DataError, match=r"the ANN itself scores 0 top1"):
        onnx2snn.convert(twin, x[:300], target=0.99, progress=False, search={"validation": (xte[:64], wrong)})
    with pytest.raises(onnx2snn.ShapeError, match=r"search\['validation'\]"):
        onnx2snn.convert(twin, x[:300], target=0.99, progress=False,
                         search={"validation": (xte[:64, :, :8, :8], yte[:64])})


def test_too_little_data_says_how_many(digits):
    _, twin, x, _ = digits
    with pytest.raises(DataError, match=r"50 samples.*at least 64"):
        onnx2snn.convert(twin, x[:50], target=0.99, progress=False)


def test_unreachable_target_names_best_point(digits):
    _, twin, x, _ = digits
    with pytest.raises(ConfigError, match=r"no setting keeps target=1 .* up to T=1: the best is 0\.\d+ at T=1, ") as e:
        onnx2snn.convert(twin, x, timesteps=1, target=1.0, levels=1, progress=False,
                         search={"percentiles": (50.0,), "mse_tolerances": (0.0,)})
    r = e.value.report
    assert r.chosen is None and r.best_point()["quality"] < 1.0


def test_cli_target(digits, tmp_path):
    from onnx2snn.cli import main

    path, _, x, _ = digits
    np.savez(tmp_path / "cal.npz", x=x.numpy())
    out = tmp_path / "m.snn.pt"
    assert main(["convert", str(path), "--calib", str(tmp_path / "cal.npz"), "--target", "0.99", "-T", "8",
                 "-o", str(out), "--quiet", "--margin", "0.005"]) == 0
    assert (tmp_path / "m.snn.tune" / "tune.png").is_file()
    tune = onnx2snn.load(out).config["tune"]
    assert tune["margin"] == 0.005 and tune["chosen"]["quality"] >= 0.995
    assert json.loads((tmp_path / "m.snn.tune" / "tune.json").read_text())["required"] == pytest.approx(0.995)
    _, yte = zoo.load_digits(16, "test")
    np.savez(tmp_path / "val.npz", x=digits[3][:100].numpy(), y=yte[:100])
    assert main(["convert", str(path), "--calib", str(tmp_path / "cal.npz"), "--target", "0.98", "-T", "4",
                 "-o", str(out), "--quiet", "--tune-data", str(tmp_path / "val.npz")]) == 0
    tune = onnx2snn.load(out).config["tune"]
    assert tune["validation"] == "labeled validation" and tune["validation_samples"] == 100
    for bad in (["--margin", "-1"], ["--margin", "wide"], ["--target", "0.99", "--margin", "0.9"],
                ["--tune-data", str(tmp_path / "val.npz")], ["--target", "0.99", "--tune-data", "nope.npz"]):
        assert main(["convert", str(path), "--calib", str(tmp_path / "cal.npz"), *bad]) == 2, bad
    assert main(["convert", str(path), "--calib", str(tmp_path / "cal.npz"), "--target", "0"]) == 2
    assert main(["convert", str(path), "--calib", str(tmp_path / "cal.npz"), "--postprocess", "yolov8"]) == 2


# -- a detector: quality is mAP@0.5 of the SNN's detections against the ANN's -----------
@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("tune_det") / "tiny_yolo.onnx"
    onnx2snn.export_zoo_model("tiny_yolo", path)
    calib, _ = zoo.scenes_to_tensors(zoo.make_scenes(256, "train", seed=12345))
    return path, onnx2snn.import_onnx(path), calib


def test_detector_search_meets_target_on_unseen_scenes(detector):
    path, twin, calib = detector
    snn = onnx2snn.convert(twin, calib, timesteps=8, target=0.95, progress=False,
                           search={"postprocess": "tiny-yolo", "max_runs": 4})
    r = snn.tune_report
    assert r.kind == "mAP50" and r.validation_samples == 64 and r.statistics_samples == 192
    p = r.points[r.chosen]
    assert p["meets"] and p["quality"] >= 0.95 and snn.config["timesteps"] == p["T"] <= 8
    # early stopping: the default designed for T=2 is hopeless after a quarter of the scenes
    first = r.candidates[0]
    assert first["design_t"] == 2 and first["stopped"] == "quality" and first["partial"][2]["quality"] < 0.92
    assert not any(q["candidate"] == first["id"] for q in r.points)
    assert len(r.candidates) <= 4 and 0 < p["energy_ratio"] < 1
    # on 100 val scenes the search never saw, against the real boxes: within 4 points of the ANN
    rep = onnx2snn.verify(snn, path, data=zoo.digit_scenes("val", n=100), timesteps=[p["T"]], task="detection",
                          postprocess="tiny-yolo", progress=False)
    ann, got = rep.metrics["reference"]["mAP50"], rep.metrics["snn"][p["T"]]["mAP50"]
    assert ann > 0.9 and got / ann >= 0.95 - 0.04


def test_labeled_detector_validation_is_verify_metric(detector):
    """With labeled scenes the search's quality is the real mAP@0.5 over the ANN's: what verify
    reports on the same scenes at the chosen T (twin vs onnxruntime aside)."""
    path, twin, calib = detector
    val = zoo.digit_scenes("train", n=48, seed=777)  # not among the calibration scenes (seed 12345)
    snn = onnx2snn.convert(twin, calib, timesteps=8, target=0.9, progress=False,
                           search={"postprocess": "tiny-yolo", "validation": val, "max_runs": 3})
    r = snn.tune_report
    assert r.labeled and r.kind == "mAP50" and r.validation_samples == 48 and r.statistics_samples == 256
    assert r.units == sum(len(s.labels) for s in val) and "labeled validation" in r.reason
    p = r.points[r.chosen]
    assert p["quality"] >= r.required
    rep = onnx2snn.verify(snn, path, data=val, timesteps=[p["T"]], task="detection", postprocess="tiny-yolo",
                          progress=False)
    got = rep.metrics["snn"][p["T"]]["mAP50"] / rep.metrics["reference"]["mAP50"]
    assert got == pytest.approx(p["quality"], abs=2e-3)
    assert rep.layers["ops"]["snn"][p["T"]]["energy_ratio_vs_ann"] == pytest.approx(p["energy_ratio"], rel=1e-6)


# -- the distributed path: two gloo processes choose what one process chooses ------------
def test_search_under_torchrun_matches_one_process(digits, tmp_path):
    from test_distributed import HERE, _ok, alone, torchrun

    path, _, x, _ = digits
    np.savez(tmp_path / "calib.npz", x=x[:160].numpy())
    job = [f"{HERE}/dist_tune_job.py", str(path), str(tmp_path / "calib.npz")]
    _ok(alone(job + [str(tmp_path / "one.pt")], tmp_path))
    _ok(torchrun(job + [str(tmp_path / "two.pt")], tmp_path))
    one, two = (torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt"))
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["tune"]["chosen"] == one["tune"]["chosen"] and one["tune"]["chosen"]["quality"] >= 0.99
    assert two["points"] == one["points"]
    assert one["thresholds"].keys() == two["thresholds"].keys()
    assert all(torch.equal(one["thresholds"][k], two["thresholds"][k]) for k in one["thresholds"])


# -- time-averaged operators: the re-encoding neurons' spikes per step are searched too ----
def test_reencode_levels_searched_for_time_averaged_ops(tmp_path):
    torch.set_num_threads(1)
    path = onnx2snn.export_zoo_model("digits_vit", tmp_path / "digits_vit.onnx")
    x, _ = zoo.load_digits(16, "train")
    xte, _ = zoo.load_digits(16, "test")
    x, xte = torch.as_tensor(x[:256]), torch.as_tensor(xte)
    snn = onnx2snn.convert(path, x, timesteps=16, target=0.97, progress=False, search={"max_runs": 8})
    r = snn.tune_report
    tried = {c["setting"]["reencode_levels"] for c in r.candidates}
    assert tried == {2, 3, 4, REENCODE_LEVELS}  # the default and the cheaper ones
    chosen = snn.config["tune"]["chosen"]
    assert r.points[r.chosen]["quality"] >= 0.97 and snn.averaged_ops()
    two_sided = [m for m in snn.neurons().values() if m.two_sided]
    assert two_sided and {m.levels for m in two_sided} == {chosen["reencode_levels"]} == {snn.config["reencode_levels"]}
    snn.save(tmp_path / "vit.snn.pt")
    back = onnx2snn.load(tmp_path / "vit.snn.pt")
    assert {m.levels for m in back.neurons().values() if m.two_sided} == {chosen["reencode_levels"]}
    twin = onnx2snn.import_onnx(path)
    # 360 unseen digits: within 4 points of the target (64 held-out samples: one is 1.6 points)
    assert _agreement(snn, twin, xte, chosen["timesteps"]) >= 0.93

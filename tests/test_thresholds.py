"""Thresholds with the least squared error (threshold="mse", the default) and multi-level
headroom (levels=2, the default): the error model equals the IF neuron, the search finds the
best threshold for the spikes each neuron may fire, and post-training conversion of the zoo's
ReLU YOLOv8 meets the bounds measured in scripts/bench_thresholds.py."""

import pytest
import torch
from torch import nn

import onnx2snn
from onnx2snn import zoo
from onnx2snn.calibration.observers import StreamingHistogram, neuron_error
from onnx2snn.snn.neurons import IFNeuron


def _if_mean(x: torch.Tensor, theta: float, T: int, levels: int) -> torch.Tensor:
    """Mean output of T steps of our IF neuron on the constant inputs ``x`` ([N])."""
    n = IFNeuron(torch.tensor([theta]), levels=levels)
    n.T = T
    out = n(x.reshape(1, 1, -1).expand(T, 1, -1).reshape(T, 1, -1))
    return out.reshape(T, -1).mean(0)


@pytest.mark.parametrize("T,levels", [(4, 1), (8, 2), (3, 3)])
def test_error_model_is_the_if_neuron(T, levels):
    """neuron_error sums (q(c) - c)^2 over bin centres c with q what the neuron represents."""
    B, width, theta = 512, 0.01, 1.7
    centres = (torch.arange(B, dtype=torch.float64) + 0.5) * width
    got = _if_mean(centres.float(), theta, T, levels).double()
    want = ((got - centres) ** 2).sum()
    err = neuron_error(torch.ones(1, B), torch.tensor([width], dtype=torch.float64),
                       torch.tensor([[theta]], dtype=torch.float64), T, levels)
    assert float(err[0, 0]) == pytest.approx(float(want), rel=1e-4)


@pytest.mark.parametrize("levels", [1, 2])
def test_mse_threshold_is_the_best_threshold(levels):
    """On heavy-tailed values the searched theta is within 1 % of the best of a dense grid
    for a neuron of ``levels`` spikes per step (error counted on the raw values, not the
    histogram), grows with T and stays below max."""
    g = torch.Generator().manual_seed(0)
    C = 6
    scale = torch.linspace(0.5, 4.0, C).reshape(1, C, 1)
    v = torch.relu(torch.randn(16, C, 4096, generator=g)) ** 2 * scale  # [N, C, M]
    h = StreamingHistogram(C)
    h.update_rows(v)
    rows = v.transpose(0, 1).reshape(C, -1).double()

    def raw_error(theta, T):  # [C, K] thetas -> [C, K]
        step = (theta / T).unsqueeze(2)
        q = torch.clamp(torch.floor(rows.unsqueeze(1) / step + 0.5), 0, levels * T) * step
        return ((q - rows.unsqueeze(1)) ** 2).sum(2)

    thetas = {}
    for T in (4, 16, 64):
        th = h.mse_threshold(T, levels)
        grid = h.max.unsqueeze(1) * torch.linspace(0.02, 1.0, 400, dtype=torch.float64)
        best = raw_error(grid, T).min(1).values
        mine = raw_error(th.unsqueeze(1), T)[:, 0]
        assert torch.all(mine <= best * 1.01), (T, mine / best)
        assert torch.all(th < h.max)
        thetas[T] = th
    assert torch.all(thetas[4] < thetas[16]) and torch.all(thetas[16] < thetas[64])


@pytest.mark.parametrize("levels", [1, 2])
def test_mse_tolerance_takes_the_largest_theta_within_it(levels):
    """mse_tolerance=0.25: per channel, a theta no smaller than the least-error one, whose
    histogram error is within 1.25 times the least (up to the search's own 0.5 % from the least
    of a dense grid), and (on that grid) no theta 2 % larger
    is within it: the one with the fewest spikes that the bound allows."""
    g = torch.Generator().manual_seed(1)
    C = 5
    v = torch.relu(torch.randn(8, C, 4096, generator=g)) ** 2 * torch.linspace(0.5, 3.0, C).reshape(1, C, 1)
    h = StreamingHistogram(C)
    h.update_rows(v)
    width = h.upper / h.bins
    for T in (4, 8):
        best = h.mse_threshold(T, levels)
        tol = h.mse_threshold(T, levels, tolerance=0.25)
        grid = h.max.unsqueeze(1) * torch.linspace(0.005, 1.0, 2000, dtype=torch.float64)
        err = neuron_error(h.counts.float(), width, grid, T, levels)
        least = err.min(1).values
        mine = neuron_error(h.counts.float(), width, tol.unsqueeze(1), T, levels)[:, 0]
        assert torch.all(tol >= best) and torch.any(tol > best * 1.05), (tol, best)
        assert torch.all(mine <= least * 1.25 * 1.005), (mine / least)  # the search's least is within 0.5 %
        above = grid >= tol.unsqueeze(1) * 1.02
        assert not torch.any(above & (err <= least.unsqueeze(1) * 1.25)), T
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    x = torch.randn(16, 1, 8, 8)
    with pytest.raises(onnx2snn.ConfigError, match="mse_tolerance"):
        onnx2snn.convert(model, x, example_input=x[:1], threshold=99.9, mse_tolerance=0.2, progress=False)
    with pytest.raises(onnx2snn.ConfigError, match="mse_tolerance"):
        onnx2snn.convert(model, x, example_input=x[:1], mse_tolerance=-1, progress=False)


def test_search_assumes_the_spikes_each_neuron_fires():
    """With levels=2 a neuron's theta is searched for two spikes per step, ReLU (IF) and
    LeakyReLU (IBT) alike: lower than for one (values above theta are no longer clipped)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                          nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x = torch.randn(64, 1, 8, 8)
    snns = {lv: onnx2snn.convert(model, x, example_input=x[:1], timesteps=4, levels=lv, progress=False)
            for lv in (1, 2)}
    theta = {lv: [m.theta for m in snn.neurons().values()] for lv, snn in snns.items()}
    assert [m.levels for m in snns[2].neurons().values()] == [2, 2]
    for k in (0, 1):  # ReLU, LeakyReLU
        assert torch.all(theta[2][k] < theta[1][k]), (k, theta[2][k], theta[1][k])


def test_capped_activation_never_fires_past_its_cap():
    """ReLU6 with levels=2: a neuron whose theta is the cap fires one spike per step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x = torch.randn(64, 1, 8, 8) * 20  # drive the activations far above 6
    snn = onnx2snn.convert(model, x, example_input=x[:1], threshold="max", timesteps=8, levels=2, progress=False)
    (neuron,) = snn.neurons().values()
    assert float(neuron.theta.max()) == 6.0 and neuron.levels == 1
    with torch.no_grad():
        out = snn(x, timesteps=8)
        want = model(x)
    assert float((out - want).abs().max()) <= 0.05 * float(want.abs().max())


def _map(model, scenes, T=None):
    decode = zoo.get_decoder("decode_ultralytics")
    x, _ = zoo.scenes_to_tensors(scenes)
    with torch.no_grad():
        out = model(x) if T is None else model(x, timesteps=T)
    dets = zoo.to_coco_detections(decode(out), [s.image_id for s in scenes])
    return zoo.evaluate_coco(dets, zoo.coco_dict(scenes))


@pytest.fixture(scope="module")
def relu_yolo(tmp_path_factory):
    path = onnx2snn.export_zoo_model("yolov8_relu", tmp_path_factory.mktemp("thr") / "yolov8_relu.onnx")
    calib, _ = zoo.scenes_to_tensors(zoo.make_scenes(512, "train", seed=12345))
    val = zoo.digit_scenes("val", n=200)
    return path, calib, val, _map(onnx2snn.import_onnx(path), val)


@pytest.mark.parametrize("T,bound50,bound5095", [(4, 0.97, 0.925), (8, 0.99, 0.97)])
def test_relu_yolo_post_training_defaults(relu_yolo, T, bound50, bound5095):
    """The zoo's ReLU YOLOv8, 512 calibration scenes, defaults, 200 val scenes: share of the
    ANN's mAP@0.5 / mAP@0.5:0.95. Measured: T=4 98.2 / 94.0 %, T=8 99.5 / 98.4 % (on 300 val
    scenes with the 99.99th percentile and one spike per step, the old defaults: 87.8 / 72.9 %
    and 98.0 / 92.9 %). T=8 is bounded at issue #10's targets (99 / 97 %), T=4 with about one
    point of slack; the defaults must beat the old ones."""
    path, calib, val, ann = relu_yolo
    snn = onnx2snn.convert(path, calib, timesteps=T, progress=False)
    m = _map(snn, val, T)
    r50, r5095 = m["mAP50"] / ann["mAP50"], m["mAP50_95"] / ann["mAP50_95"]
    assert r50 >= bound50 and r5095 >= bound5095, (r50, r5095)
    old = _map(onnx2snn.convert(path, calib, timesteps=T, threshold=99.99, levels=1, progress=False), val, T)
    assert r50 > old["mAP50"] / ann["mAP50"] and r5095 > old["mAP50_95"] / ann["mAP50_95"], (m, old)


def _energy(snn, path, scenes, T):
    rep = onnx2snn.verify(snn, path, data=scenes, timesteps=[T], task="detection", postprocess="yolov8",
                          progress=False)
    return rep.layers["ops"]["snn"][T]["energy_ratio_vs_ann"]


def test_relu_yolo_mse_tolerance_trades_little_accuracy_for_energy(relu_yolo):
    """yolov8_relu, T=8, ``mse_tolerance=0.25`` against the default (0): measured on 200 val
    scenes 99.5 / 98.3 % of the ANN's mAP@0.5 / mAP@0.5:0.95 (default 99.5 / 98.4) and energy
    0.430x against 0.463x the ANN's (verify's estimate, 100 scenes; 0.378x / 0.408x by the count before
    issue #29, which left neuron updates out and counted a k-spike behind a reshape or pool once).
    Bounds: issue #10's 99 / 97 % and 0.4x by the old count (0.45x by the new one), and less energy
    than the default."""
    path, calib, val, ann = relu_yolo
    snns = {tol: onnx2snn.convert(path, calib, timesteps=8, mse_tolerance=tol, progress=False) for tol in (0.0, 0.25)}
    m = _map(snns[0.25], val, 8)
    r50, r5095 = m["mAP50"] / ann["mAP50"], m["mAP50_95"] / ann["mAP50_95"]
    assert r50 >= 0.99 and r5095 >= 0.97, (r50, r5095)
    energy = {tol: _energy(snn, path, val[:100], 8) for tol, snn in snns.items()}
    assert energy[0.25] <= 0.45 and energy[0.25] < energy[0.0] - 0.01, energy
    assert snns[0.25].config["mse_tolerance"] == 0.25


def _tiny_map(model, scenes, T=None):
    x, _ = zoo.scenes_to_tensors(scenes)
    with torch.no_grad():
        out = model(x) if T is None else model(x, timesteps=T)
    return zoo.evaluate_coco(zoo.to_coco_detections(zoo.tiny_yolo_decode(out), [s.image_id for s in scenes]),
                             zoo.coco_dict(scenes))


def test_multi_level_ibt_tiny_yolo_post_training(tmp_path):
    """tiny_yolo (LeakyReLU -> IBT neurons), 512 calibration scenes, T=8, 100 val scenes: with
    the default levels=2 its IBT neurons fire up to two spikes per step (theta searched for
    them). Measured: 96.2 / 82.0 % of the ANN's mAP@0.5 / mAP@0.5:0.95 against 88.9 / 59.5 %
    with one spike per step (levels=1; 300 val scenes: 97.0 / 82.2 against 88.6 / 59.5)."""
    path = onnx2snn.export_zoo_model("tiny_yolo", tmp_path / "tiny_yolo.onnx")
    calib, _ = zoo.scenes_to_tensors(zoo.make_scenes(512, "train", seed=12345))
    val = zoo.digit_scenes("val", n=100)
    ann = _tiny_map(onnx2snn.import_onnx(path), val)
    share = {}
    for lv in (2, 1):
        m = _tiny_map(onnx2snn.convert(path, calib, timesteps=8, levels=lv, progress=False), val, 8)
        share[lv] = (m["mAP50"] / ann["mAP50"], m["mAP50_95"] / ann["mAP50_95"])
    assert share[2][0] >= 0.95 and share[2][1] >= 0.78, share
    assert share[2][0] >= share[1][0] + 0.04 and share[2][1] >= share[1][1] + 0.15, share

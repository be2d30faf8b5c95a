"""Spiking conversion on real data (scikit-learn digits): accuracy vs T, the analog
check, step mode, save/load, observers, and the errors users meet."""

import numpy as np
import pytest
import torch
from torch import nn

import onnx2snn
from onnx2snn.calibration.observers import StreamingHistogram
from onnx2snn.export import export_zoo_model

from graphs import fit_digits


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory):
    return export_zoo_model("digits_resnet", tmp_path_factory.mktemp("m") / "digits_resnet.onnx")


def accuracy(out, y):
    return float((out.argmax(1) == y).float().mean())


def test_channelwise_resnet_within_1_5_points_at_T64(digits, resnet_onnx):
    xtr, _, xte, yte = digits
    twin = onnx2snn.import_onnx(resnet_onnx)
    with torch.no_grad():
        ann = accuracy(twin(xte), yte)
        ch = onnx2snn.convert(resnet_onnx, xtr, timesteps=64, progress=False)
        layer = onnx2snn.convert(resnet_onnx, xtr, timesteps=64, normalization="layer", progress=False)
        ch16, ch64 = (accuracy(o, yte) for o in ch.run_timesteps(xte, checkpoints=[16, 64]))
        layer16 = accuracy(layer(xte, timesteps=16), yte)
    assert ann >= 0.97
    assert ch64 >= ann - 0.015
    assert ch16 >= layer16


def test_analog_check_equals_twin(digits, resnet_onnx):
    xtr, _, xte, _ = digits
    snn = onnx2snn.convert(resnet_onnx, xtr[:256], progress=False).set_analog(True)
    twin = onnx2snn.import_onnx(resnet_onnx)
    with torch.no_grad():
        assert (snn(xte[:64]) - twin(xte[:64])).abs().max() <= 1e-5


def test_one_run_sweep_equals_separate_runs_and_step_mode(digits, resnet_onnx):
    xtr, _, xte, _ = digits
    snn = onnx2snn.convert(resnet_onnx, xtr[:256], timesteps=8, progress=False)
    x = xte[:16]
    with torch.no_grad():
        sweep = snn.run_timesteps(x, checkpoints=[1, 4, 8])
        for T, o in zip([1, 4, 8], sweep):
            assert torch.allclose(o, snn(x, timesteps=T), atol=1e-5)
        snn.reset()
        for _ in range(8):
            streamed = snn.step(x)
    assert torch.allclose(streamed, sweep[-1], atol=1e-5)


def test_save_load_round_trip(tmp_path, digits, resnet_onnx):
    xtr, _, xte, _ = digits
    snn = onnx2snn.convert(resnet_onnx, xtr[:256], timesteps=16, progress=False)
    path = snn.save(tmp_path / "m.snn.pt")
    again = onnx2snn.load(path)
    with torch.no_grad():
        assert torch.equal(again(xte[:32]), snn(xte[:32]))
    assert again.timesteps == 16
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(onnx2snn.InvalidModelError, match="not an onnx2snn"):
        onnx2snn.load(bad)


def test_ibt_levels_saved_and_older_files_keep_one_spike(tmp_path):
    """LeakyReLU (IBT) neurons fire up to ``levels`` spikes per step like IF ones; the file says
    so (config "ibt_levels"), and a file from before (no such key: its IBT neurons fired one
    per step) loads with one, the neuron it was saved with, not silently a different one."""
    import json

    path = export_zoo_model("tiny_yolo", tmp_path / "tiny_yolo.onnx")
    x = onnx2snn.zoo.scenes_to_tensors(onnx2snn.zoo.digit_scenes("val", 8))[0]
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False)
    assert {m.levels for m in snn.neurons().values()} == {2} and all(m.alpha for m in snn.neurons().values())
    f = snn.save(tmp_path / "new.snn.pt")
    again = onnx2snn.load(f)
    assert {m.levels for m in again.neurons().values()} == {2}
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(again(x[:2]), snn(x[:2])))
    blob = torch.load(f, weights_only=True)
    config = json.loads(blob["config"])
    del config["ibt_levels"]
    blob["config"] = json.dumps(config)
    torch.save(blob, tmp_path / "old.snn.pt")
    old = onnx2snn.load(tmp_path / "old.snn.pt")
    assert {m.levels for m in old.neurons().values()} == {1}


def _train_leaky(xtr, ytr):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(32 * 16, 10))
    return fit_digits(m, xtr, ytr, epochs=12)


def test_leaky_relu_ibt_within_2_points_at_T64(digits):
    xtr, ytr, xte, yte = digits
    m = _train_leaky(xtr, ytr)
    snn = onnx2snn.convert(m, xtr, timesteps=64, example_input=xtr[:1], progress=False)
    assert all(n.alpha for n in snn.neurons().values())
    with torch.no_grad():
        ann = accuracy(m(xte), yte)
        acc = accuracy(snn(xte), yte)
    assert ann >= 0.95
    assert acc >= ann - 0.02


def test_streaming_histogram_percentiles_match_numpy():
    g = torch.Generator().manual_seed(0)
    h = StreamingHistogram(2, bins=2048)
    chunks = [torch.rand(2, 5000, generator=g) * s for s in (0.5, 1.0, 3.0, 10.0)]  # growing range
    for c in chunks:
        h.update(c)
    allv = torch.cat(chunks, 1).numpy()
    for q in (50, 99, 99.9):
        want = np.percentile(allv, q, axis=1)
        width = (h.upper / h.bins).numpy()
        assert np.all(np.abs(h.percentile(q).numpy() - want) <= 2 * width)
    assert np.allclose(h.max.numpy(), allv.max(1))
    assert h.counts.shape == (2, 2048)  # memory does not grow with samples


def test_calibration_data_forms(tmp_path, digits, resnet_onnx):
    xtr, ytr, xte, _ = digits
    np.savez(tmp_path / "calib.npz", x=xtr[:200].numpy(), y=ytr[:200].numpy())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr[:200], ytr[:200]), batch_size=50)
    a = onnx2snn.convert(resnet_onnx, tmp_path / "calib.npz", progress=False)
    b = onnx2snn.convert(resnet_onnx, loader, progress=False)
    c = onnx2snn.convert(resnet_onnx, xtr[:200].numpy(), progress=False)
    for k, v in a.thresholds.items():
        assert torch.allclose(v, b.thresholds[k]) and torch.allclose(v, c.thresholds[k])
    with pytest.raises(onnx2snn.DataError, match="NaN"):
        onnx2snn.convert(resnet_onnx, torch.full((4, 1, 16, 16), float("nan")), progress=False)
    with pytest.raises(onnx2snn.DataError, match="empty"):
        onnx2snn.convert(resnet_onnx, torch.zeros(0, 1, 16, 16), progress=False)
    np.savez(tmp_path / "noy.npz", images=xtr[:4].numpy())
    with pytest.raises(onnx2snn.DataError, match="no array 'x'"):
        onnx2snn.convert(resnet_onnx, tmp_path / "noy.npz", progress=False)


def test_silu_converts_time_averaged_or_replaced(exported):
    """SiLU runs as a time-averaged operator by default (analog mode = the twin); replacing it
    by ReLU (for a fully spike-driven network, then fine-tune) still works."""
    x = torch.randn(4, 3, 64, 64)
    snn = onnx2snn.convert(exported("yolov8_like"), x, timesteps=4, progress=False)
    assert len(snn.averaged_ops()) > 0 and any(m.two_sided for m in snn.neurons().values())
    twin = onnx2snn.import_onnx(exported("yolov8_like"))
    with torch.no_grad():
        snn.set_analog(True)
        assert (snn(x[:2]) - twin(x[:2])).abs().max() <= 1e-4
        snn.set_analog(False)
    snn = onnx2snn.convert(exported("yolov8_like"), torch.randn(4, 3, 64, 64), replace_activations={"SiLU": "ReLU"},
                           timesteps=4, progress=False)
    with torch.no_grad():
        out = snn(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 14, 80) and torch.isfinite(out).all()


def test_tiny_yolo_converts_with_ibt_and_spiking_maxpool(exported):
    """Pad + stride-1 max-pool, upsample and concat inside the core; analog equals the twin."""
    path = exported("tiny_yolov3")
    x = torch.randn(8, 3, 64, 64)
    snn = onnx2snn.convert(path, x, timesteps=8, progress=False)
    twin = onnx2snn.import_onnx(path)
    with torch.no_grad():
        snn.set_analog(True)
        for a, b in zip(snn(x[:2]), twin(x[:2])):
            assert (a - b).abs().max() <= 1e-5
        snn.set_analog(False)
        outs = snn(x[:2], timesteps=4)
    assert [tuple(o.shape) for o in outs] == [(2, 45, 4, 4), (2, 45, 8, 8)]

"""fold_thresholds: the binary-spike form (thresholds 1, spikes 0/+-1, weights rescaled)
gives the same outputs as the weighted form, on the zoo's trained models."""

import pytest
import torch

import onnx2snn
from onnx2snn.snn.fold import ChannelScale

# model -> ChannelScale nodes that must remain (identity paths with no weights to absorb
# the scale: the first residual block's skip comes straight from a neuron)
CASES = {"digits_resnet": 1, "digits_vgg": 0, "tiny_yolo": 0}


def _inputs(name, n=24):
    if name.startswith("digits"):
        return torch.as_tensor(onnx2snn.zoo.load_digits(16, "test")[0][:n])
    scenes = onnx2snn.zoo.digit_scenes("val", n)
    out = onnx2snn.zoo.scenes_to_tensors(scenes)
    return out[0] if isinstance(out, tuple) else out


def _tuple(y):
    return y if isinstance(y, tuple) else (y,)


def _with_spikes(folded, run):
    """``run()``'s result and every spike tensor the folded network's neurons emitted."""
    spikes = []
    hooks = [m.register_forward_hook(lambda mod, i, o: spikes.append(o)) for m in folded.neurons().values()]
    try:
        with torch.no_grad():
            return run(), spikes
    finally:
        for h in hooks:
            h.remove()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fold")
    out = {}
    for name in CASES:
        path = onnx2snn.export_zoo_model(name, str(tmp / f"{name}.onnx"))
        x = _inputs(name)
        out[name] = (onnx2snn.convert(path, x, levels=1, progress=False), x)  # the binary-spike form
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_folded_equals_weighted(converted, name):
    snn, x = converted[name]
    snn = snn.double()
    folded = onnx2snn.fold_thresholds(snn)
    assert all(bool((t == 1).all()) for t in folded.thresholds.values())
    scales = [m for m in folded.rewritten.modules() if isinstance(m, ChannelScale)]
    assert len(scales) == CASES[name]
    with torch.no_grad():
        want = snn.run_timesteps(x.double(), checkpoints=[4, 16])
    got, spikes = _with_spikes(folded, lambda: folded.run_timesteps(x.double(), checkpoints=[4, 16]))
    assert spikes and all(set(torch.unique(s).tolist()) <= {-1.0, 0.0, 1.0} for s in spikes)
    for w, g in zip(want, got):
        for a, b in zip(_tuple(w), _tuple(g)):
            assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))
    snn.float()


def test_fold_weights_are_rescaled_not_shared(converted):
    snn, x = converted["digits_vgg"]
    before = {k: v.clone() for k, v in snn.rewritten.state_dict().items()}
    folded = onnx2snn.fold_thresholds(snn)
    after = snn.rewritten.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the source is untouched
    changed = [k for k, v in folded.rewritten.state_dict().items() if k.endswith("weight") and
               not torch.equal(v, before[k])]
    assert changed
    assert onnx2snn.fold_thresholds(folded) is folded


def test_folded_save_load(converted, tmp_path):
    snn, x = converted["digits_resnet"]
    folded = onnx2snn.fold_thresholds(snn)
    path = folded.save(tmp_path / "folded.snn.pt")
    again = onnx2snn.load(path)
    assert again.config.get("folded") and all(bool((t == 1).all()) for t in again.thresholds.values())
    with torch.no_grad():
        assert torch.equal(folded(x, timesteps=8), again(x, timesteps=8))


@pytest.mark.parametrize("name", ["digits_resnet", "tiny_yolo"])
def test_folded_multi_level_equals_weighted(tmp_path, name):
    """With the default levels=2 the folded form fires integer spikes of up to 2 per step (IF
    and IBT neurons alike) and still gives the weighted form's outputs."""
    path = onnx2snn.export_zoo_model(name, str(tmp_path / f"{name}.onnx"))
    x = _inputs(name)
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False).double()
    assert all(m.levels == 2 for m in snn.neurons().values())
    folded = onnx2snn.fold_thresholds(snn)
    with torch.no_grad():
        want = _tuple(snn(x.double(), timesteps=4))
    got, spikes = _with_spikes(folded, lambda: _tuple(folded(x.double(), timesteps=4)))
    values = set(torch.unique(torch.cat([s.flatten() for s in spikes])).tolist())
    assert values <= {-2.0, -1.0, 0.0, 1.0, 2.0} and 2.0 in values
    for w, g in zip(want, got):
        assert float((w - g).abs().max()) <= 1e-5 * max(1.0, float(w.abs().max()))

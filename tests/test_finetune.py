"""Few timesteps: the single-step neuron model, onnx2snn.finetune, onnx2snn.calibrate, the SiLU path.

Bounds below were measured on 2 CPU threads (torch 2.x) and carry slack; see each test.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onnx2snn
from onnx2snn import zoo
from onnx2snn.calibration.quantized import QuantizedNeuron
from onnx2snn.graph.source import to_twin
from onnx2snn.snn.neurons import IFNeuron
from onnx2snn.errors import Onnx2SnnError

from graphs import fit_digits


@pytest.fixture(scope="module")
def resnet_twin(digits):
    return to_twin(zoo.build_model("digits_resnet"), digits[0][:1])


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return 100.0 * float((model(x).argmax(1) == y).float().mean())


# -- the theorem: one step of the model == T steps of the neuron, for constant input ----------
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("alpha", [None, 0.1, 0.25])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 8, 16, 32])
def test_single_step_model_equals_T_steps_exactly(T, alpha, levels):
    """IF and IBT neurons (multi-level too) for constant input: the single-step model's
    output equals the mean of T steps of the spiking neuron bit for bit."""
    theta = torch.tensor([1.0, 2.0, 0.5, 4.0])
    grid = (torch.arange(-2400, 2400).float() / 64).reshape(1, 1, -1).expand(1, 4, -1)  # hits every tie
    rand = torch.randn(1, 4, 4000, generator=torch.Generator().manual_seed(T)) * 3
    for x in (grid.contiguous(), rand):
        neuron = IFNeuron(theta, alpha=alpha, levels=levels)
        neuron.T = T
        spikes = neuron(x.unsqueeze(0).expand(T, *x.shape).reshape(T * x.shape[0], *x.shape[1:]))
        mean = spikes.reshape(T, *x.shape).mean(0)
        q = QuantizedNeuron(theta, T, nn.ReLU() if alpha is None else nn.LeakyReLU(alpha), alpha=alpha, noise=None,
                            levels=levels)
        with torch.no_grad():
            single = q(x)
        assert torch.equal(single, mean), (T, alpha, int((single != mean).sum()))
    # the model is x quantized to T levels of theta/T (round half up), clipped to [0, levels theta]
    if alpha is None:
        th = theta.reshape(1, -1, 1)
        expect = torch.clamp(torch.floor(grid * T / th + 0.5), 0, levels * T) * th / T
        assert torch.equal(q(grid.contiguous()).detach(), expect)


def test_straight_through_gradients():
    q = QuantizedNeuron(torch.tensor([1.0, 2.0]), 4, nn.ReLU(), noise=None)
    x = torch.tensor([[0.3, 0.3], [5.0, 5.0], [-1.0, -1.0]], requires_grad=True)
    q(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    assert q.theta.grad is not None and torch.all(q.theta.grad != 0)


# -- finetune ---------------------------------------------------------------------------------
def test_finetuned_resnet_converts_at_T8(digits, resnet_twin):
    """Measured: ANN 100.00, conversion with one-sign IF neurons T=8 98.89 (signed IF, the
    default, 99.72), fine-tuned (1 epoch) T=8 99.72-100."""
    xtr, ytr, xte, yte = digits
    ann = accuracy(resnet_twin, xte, yte)
    plain = accuracy(onnx2snn.convert(resnet_twin, xtr, timesteps=8, progress=False, signed_relu=False, levels=1,
                                      threshold=99.99), xte, yte)
    ft = onnx2snn.finetune(resnet_twin, (xtr, ytr), timesteps=8, epochs=1, progress=False, loss="cross_entropy")
    assert set(ft.learned_thresholds) == {n.target for n in ft.graph.nodes if n.op == "call_module"
                                          and isinstance(ft.get_submodule(n.target), nn.ReLU)}
    assert all(p.requires_grad for p in ft.parameters())
    assert not any(isinstance(m, QuantizedNeuron) for m in ft.modules())  # original activations back
    snn = onnx2snn.convert(ft, timesteps=8, progress=False)  # no calibration data: learned thetas
    for k, th in ft.learned_thresholds.items():
        assert torch.equal(snn.thresholds[k], th)
    acc = accuracy(snn, xte, yte)
    assert acc >= ann - 1.0, (acc, ann)
    assert acc > plain, (acc, plain)
    assert not any(isinstance(m, QuantizedNeuron) for m in resnet_twin.modules())  # source untouched


@pytest.mark.parametrize("noise", [None, "gaussian", "uniform"])
def test_noise_kinds_run_and_are_deterministic(digits, resnet_twin, noise):
    xtr, ytr = digits[0][:192], digits[1][:192]
    runs = [onnx2snn.finetune(resnet_twin, (xtr, ytr), timesteps=4, epochs=1, noise=noise, noise_scale=0.5,
                              batch_size=64, seed=3, progress=False) for _ in range(2)]
    a, b = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(runs[0].learned_thresholds[k], runs[1].learned_thresholds[k])
               for k in runs[0].learned_thresholds)
    assert runs[0].finetune_info["noise"] == noise
    assert any(not torch.equal(a[k], v) for k, v in resnet_twin.state_dict().items())  # it did train


def test_bad_inputs_raise_clear_errors(digits, resnet_twin):
    xtr, ytr = digits[0][:64], digits[1][:64]
    with pytest.raises(Onnx2SnnError, match="noise='laplace' is not valid"):
        onnx2snn.finetune(resnet_twin, (xtr, ytr), noise="laplace", progress=False)
    with pytest.raises(Onnx2SnnError, match="noise_scale"):
        onnx2snn.finetune(resnet_twin, (xtr, ytr), noise_scale=-1, progress=False)
    for T in (0, -3, 2.5):
        with pytest.raises(onnx2snn.ConfigError, match=f"timesteps={T} is not valid"):
            onnx2snn.finetune(resnet_twin, (xtr, ytr), timesteps=T, progress=False)
    with pytest.raises(Onnx2SnnError, match="scalar"):
        onnx2snn.finetune(resnet_twin, (xtr, ytr), epochs=1, progress=False,
                          loss=lambda out, y: F.cross_entropy(out, y, reduction="none"))
    with pytest.raises(Onnx2SnnError, match="unknown loss"):
        onnx2snn.finetune(resnet_twin, (xtr, ytr), loss="hinge", progress=False)
    with pytest.raises(onnx2snn.DataError, match="no targets"):  # inputs alone: only distillation works
        onnx2snn.finetune(resnet_twin, xtr, loss="cross_entropy", progress=False)
    snn = onnx2snn.convert(resnet_twin, xtr, timesteps=4, progress=False)
    with pytest.raises(onnx2snn.ConfigError, match="timesteps=0 is not valid: must be >= 1"):
        onnx2snn.correct(snn, xtr, timesteps=0, progress=False)
    with pytest.raises(Onnx2SnnError, match="method"):
        onnx2snn.correct(snn, xtr, method="weights", progress=False)


# -- calibrate --------------------------------------------------------------------------------
BASELINE = dict(signed_relu=False, levels=1, threshold=99.99)  # one-sign, one-spike IF, percentile thresholds
def test_calibrate_reduces_layer_error_and_improves_accuracy(digits, resnet_twin):
    """One-sign IF neurons with percentile thresholds (the issue's baseline; the defaults are
    already close):
    measured on digits_resnet, 512 calibration samples: T=8 98.89 -> 99.44-99.72, every
    neuron's mean per-channel error 3-15x smaller; T=4 78.61 -> 98-99."""
    xtr, ytr, xte, yte = digits
    plain8 = accuracy(onnx2snn.convert(resnet_twin, xtr, timesteps=8, progress=False, **BASELINE), xte, yte)
    snn = onnx2snn.convert(resnet_twin, xtr, timesteps=8, progress=False, correct_timesteps=8, **BASELINE,
                           calibration_limit=256)
    rep = snn.calibration_report
    assert len(rep) == len(snn.neurons())
    for k, r in rep.items():
        assert r["error_after"] < 0.7 * r["error_before"], (k, r)
    assert accuracy(snn, xte, yte) >= plain8 + 0.25
    snn4 = onnx2snn.convert(resnet_twin, xtr, timesteps=4, progress=False, **BASELINE)
    plain4 = accuracy(snn4, xte, yte)
    onnx2snn.correct(snn4, xtr, timesteps=4, limit=256, progress=False)
    assert accuracy(snn4, xte, yte) >= plain4 + 10.0, plain4


def small_cnn(acts, widths) -> nn.Sequential:
    """conv-act-pool, conv-act-pool, linear-act, linear for 16x16 digits (seeded)."""
    torch.manual_seed(0)
    (a, b, c), (w0, w1, w2) = acts, widths
    return nn.Sequential(nn.Conv2d(1, w0, 3, padding=1), a(), nn.AvgPool2d(2), nn.Conv2d(w0, w1, 3, padding=1), b(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(w1 * 16, w2), c(), nn.Linear(w2, 10))


# -- SiLU: replace, fine-tune, convert --------------------------------------------------------
def test_silu_model_replace_finetune_convert(digits, tmp_path):
    """Measured: SiLU ANN ~98-99 %, ReLU-swapped before fine-tune far lower, after 2 epochs at
    T=8 the SNN within ~1.5 points of the SiLU ANN."""
    xtr, ytr, xte, yte = digits
    model = fit_digits(small_cnn((nn.SiLU, nn.SiLU, nn.SiLU), (16, 32, 64)), xtr, ytr, epochs=6)
    path = onnx2snn.export_onnx(model, xtr[:1], str(tmp_path / "silu.onnx"))
    ann = accuracy(onnx2snn.import_onnx(path), xte, yte)
    assert ann > 95.0
    post = onnx2snn.convert(path, xtr, timesteps=8, progress=False)  # SiLU time-averaged, no training
    acc_post = accuracy(post, xte, yte)
    assert acc_post >= ann - 1.5, (acc_post, ann)
    ft = onnx2snn.finetune(path, (xtr, ytr), timesteps=8, epochs=2, replace_activations={"SiLU": "ReLU"},
                           loss="cross_entropy",
                           progress=False)
    assert ft.replaced_activations == {"SiLU": "ReLU"}
    snn = onnx2snn.convert(ft, timesteps=8, progress=False)
    acc = accuracy(snn, xte, yte)
    assert acc >= ann - 3.0, (acc, ann)
    snn.save(tmp_path / "silu.snn.pt")  # the replacement and the fine-tuned weights survive save/load
    again = onnx2snn.load(tmp_path / "silu.snn.pt")
    with torch.no_grad():
        assert torch.allclose(again(xte[:32]), snn(xte[:32]), atol=1e-5)


def test_finetuned_twin_with_time_averaged_op_converts_and_is_searched(digits):
    """A SiLU kept as it is (time-averaged) between fine-tuned ReLU neurons: the re-encoding neuron
    after it has no learned threshold, so convert calibrates it (and the settings search searches
    it) while the learned thresholds stay as they are."""
    xtr, ytr, xte, yte = digits
    model = fit_digits(small_cnn((nn.ReLU, nn.SiLU, nn.ReLU), (8, 16, 32)), xtr, ytr, epochs=8)
    ann = accuracy(model, xte, yte)
    assert ann > 90.0
    ft = onnx2snn.finetune(model, (xtr, ytr), timesteps=4, epochs=1, loss="cross_entropy", example_input=xtr[:2],
                           progress=False)
    learned = ft.learned_thresholds
    assert len(learned) == 2  # the two ReLUs; the SiLU is no neuron
    with pytest.raises(onnx2snn.DataError, match=r"re-encoding neurons \(reencode_\w+\) need thresholds"):
        onnx2snn.convert(ft, timesteps=4, progress=False)
    snn = onnx2snn.convert(ft, xtr[:256], timesteps=4, progress=False)
    assert len(snn.averaged_ops()) == 1 and all(torch.equal(snn.thresholds[k], v) for k, v in learned.items())
    assert accuracy(snn, xte, yte) >= ann - 3.0
    tuned = onnx2snn.convert(ft, xtr[:256], timesteps=8, target=0.98, progress=False)
    r = tuned.tune_report
    assert r.learned_thresholds and {c["setting"]["reencode_levels"] for c in r.candidates} <= {2, 3, 4, 7}
    assert len({c["setting"]["reencode_levels"] for c in r.candidates}) >= 2
    assert r.points[r.chosen]["quality"] >= r.required and tuned.config["timesteps"] <= 8
    assert all(torch.equal(tuned.thresholds[k], v) for k, v in learned.items())
    T = tuned.config["timesteps"]
    assert accuracy(tuned, xte, yte) >= ann - 4.0, (T, ann)  # 360 unseen digits


def test_rate_penalty_trades_spikes_for_accuracy(digits, tmp_path):
    """rate_weight adds the mean spikes per neuron and step to the loss. Measured (digits_resnet,
    distillation, T=4, 2 epochs on 1024 digits): rate_weight=10 cuts the SynOps per sample by
    22 % for 1.1 points of top-1 (100 -> 98.9 %); rate_weight=1 by 5 %."""
    xtr, _, xte, yte = digits
    path = onnx2snn.export_zoo_model("digits_resnet", str(tmp_path / "digits_resnet.onnx"))
    runs = {}
    for w in (0.0, 10.0):
        ft = onnx2snn.finetune(path, xtr[:1024], timesteps=4, epochs=2, rate_weight=w, progress=False)
        assert ft.finetune_info["rate_weight"] == w and ("rate" in ft.finetune_info["history"][-1]) == (w > 0)
        snn = onnx2snn.convert(ft, timesteps=4, progress=False)
        rep = onnx2snn.verify(snn, path, data=(xte, yte), timesteps=[4], progress=False)
        runs[w] = (rep.layers["ops"]["snn"][4]["synops"], rep.metrics["snn"][4]["top1"])
    assert runs[10.0][0] < 0.85 * runs[0.0][0], runs
    assert runs[10.0][1] >= runs[0.0][1] - 0.02, runs

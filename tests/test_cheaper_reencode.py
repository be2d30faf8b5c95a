"""Cheaper detectors (issue 32b): per-layer re-encoders chosen by sensitivity
(``reencode_levels="auto"``, one-sided where it pays) and piecewise-linear SiLU / GELU
(``pwl_activations``): exact engine (chunked == one-shot == step), counts by hand, the error of
the approximation, deterministic choice, and the settings search choosing them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onnx2snn
from onnx2snn.calibration.reencode_plan import encode, plan_reencoders, reencoders
from onnx2snn.graph.piecewise import MAX_ERROR, PiecewiseGELU, PiecewiseSiLU, piecewise_activations
from onnx2snn.snn.averaged import TimeAveraged, _Slot
from onnx2snn.snn.neurons import IFNeuron
from onnx2snn.verification.flops import count_ops


@pytest.mark.parametrize("cls,fn,name", [(PiecewiseSiLU, F.silu, "SiLU"), (PiecewiseGELU, F.gelu, "GELU")])
def test_piecewise_fit_error_is_bounded_everywhere(cls, fn, name):
    x = torch.linspace(-40, 40, 400001, dtype=torch.float64)
    err = (cls().double()(x) - fn(x)).abs()
    assert float(err.max()) <= MAX_ERROR[name]
    assert float(err.max()) > 0.5 * MAX_ERROR[name]  # the stated bound is the real one, not a loose cap
    assert float(err[x.abs() > 20].max()) < 3e-3  # the tails: f(first knot) below, x - const above


def test_piecewise_counts_by_hand_compares_multiply_add():
    """15 knots: a binary search of ceil(log2 16) = 4 compares, then a multiply and an add per element;
    the exact SiLU: exp, add, divide, multiply."""
    x = torch.randn(2, 3, 5)
    assert count_ops(PiecewiseSiLU(), x) == {"cmp": 4 * 30, "mul": 30, "add": 30}
    assert count_ops(PiecewiseSiLU().exact, x) == {"exp": 30, "add": 30, "div": 30, "mul": 30}


def test_piecewise_time_averaged_is_exact_chunked_one_shot_step():
    T, B = 9, 2
    x = torch.randn(T, B, 4, 6, generator=torch.Generator().manual_seed(3)) * 3
    fn = PiecewiseSiLU()
    one = TimeAveraged(fn, (_Slot(0),), {}, ["dynamic"])
    one.T = T
    ref = one(x.reshape(T * B, 4, 6))
    y = ref.reshape(T, B, 4, 6)
    for t in range(1, T + 1):  # running output average == f(running input average)
        assert torch.allclose(y[:t].sum(0) / t, fn(x[:t].mean(0)), atol=1e-5 * t)
    chunked = TimeAveraged(fn, (_Slot(0),), {}, ["dynamic"])
    chunked.carry = True
    parts = []
    for t0, n in ((0, 4), (4, 5)):
        chunked.T = n
        parts.append(chunked(x[t0:t0 + n].reshape(n * B, 4, 6)))
    assert torch.equal(torch.cat(parts), ref)
    stepped = TimeAveraged(fn, (_Slot(0),), {}, ["dynamic"])
    stepped.step_mode = True
    assert torch.equal(torch.cat([stepped(x[t]) for t in range(T)]), ref)
    assert one.sum_domain  # on the sums; the same numbers as on the averages, to float rounding
    avg = TimeAveraged(lambda v: fn(v), (_Slot(0),), {}, ["dynamic"])
    avg.T = T
    assert not avg.sum_domain
    assert torch.allclose(avg(x.reshape(T * B, 4, 6)), ref, atol=1e-5)


@pytest.mark.parametrize("one_sided", [False, True])
@pytest.mark.parametrize("levels", [1, 3])
def test_encode_matches_the_neuron_on_constant_input(one_sided, levels):
    """The planner's model of a re-encoder (mean and events for a constant input) is the neuron's."""
    theta = torch.tensor([0.4, 1.0])
    x = (torch.linspace(-3, 3, 61) + 0.0123).reshape(1, 1, -1).expand(1, 2, 61).contiguous()
    n = IFNeuron(theta, signed=True, two_sided=not one_sided, activation=nn.ReLU() if one_sided else nn.Identity(),
                 levels=levels)
    steps = 5
    n.T = steps
    s = n(x.expand(steps, 2, 61).reshape(steps * 1, 2, 61)).reshape(steps, 2, 61)
    th = theta.reshape(1, 2, 1)
    mean, events = encode(x, th, steps, levels, one_sided)
    assert torch.allclose(s.mean(0, keepdim=True), mean, atol=1e-6)
    k = (s / th).round().abs().long()
    bits = sum(((k >> b) & 1) for b in range(4)).sum(0, keepdim=True).float()
    assert torch.equal(events, bits)
    if one_sided:
        assert float(s.min()) >= 0


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.c3(F.silu(self.c2(F.silu(self.c1(x))))).mean((2, 3))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny")
    path = onnx2snn.export_onnx(Tiny().eval(), torch.rand(2, 1, 8, 8), str(d / "tiny.onnx"))
    return path, torch.rand(64, 1, 8, 8), d


def test_auto_plan_is_deterministic_and_the_snn_exact(tiny):
    path, x, d = tiny
    a = onnx2snn.convert(path, x, timesteps=4, progress=False, reencode_levels="auto", pwl_activations=True)
    b = onnx2snn.convert(path, x, timesteps=4, progress=False, reencode_levels="auto", pwl_activations=True)
    plan = a.config["reencode_plan"]
    assert plan == b.config["reencode_plan"] and len(plan) == 2
    assert all(lv in (15, 7, 3, 1) and isinstance(side, bool) for lv, side in plan.values())
    neurons = list(a.neurons().values())
    assert sorted((n.levels, not n.two_sided) for n in neurons) == sorted(tuple(v) for v in plan.values())
    with torch.no_grad():
        one = a(x[:3], timesteps=6)
        assert torch.equal(one, a(x[:3], timesteps=6, chunk=4))  # chunked == one-shot
        a.reset()
        for _ in range(6):
            step = a.step(x[:3])
        assert torch.equal(step, one)
        again = onnx2snn.load(a.save(d / "auto.snn.pt"))  # the plan and the fits come back
        assert again.config["reencode_plan"] == plan and again.config["pwl_activations"] is True
        assert torch.equal(again(x[:3], timesteps=6), one)


def test_bad_reencode_levels_and_pwl_are_our_errors(tiny):
    path, x, _ = tiny
    with pytest.raises(onnx2snn.ConfigError, match="'auto'"):
        onnx2snn.convert(path, x, timesteps=4, progress=False, reencode_levels="Auto")
    with pytest.raises(onnx2snn.ConfigError, match="pwl_activations"):
        onnx2snn.convert(path, x, timesteps=4, progress=False, pwl_activations="yes")


def test_plan_moves_layers_only_within_the_error_budget(tiny):
    """A huge tolerance: the cheapest encodings (one spike per step); tolerance 0: no predicted extra
    error (layers may only move where that costs no accuracy)."""
    path, x, _ = tiny
    twin = onnx2snn.import_onnx(path)
    from onnx2snn.graph.analysis import prepare_averaged
    from onnx2snn.calibration.thresholds import collect_statistics

    twin = prepare_averaged(twin)
    obs = collect_statistics(twin, x, 64, None, None, False)

    def th(name, levels):
        return obs[name].threshold("channel", "mse", {"timesteps": 4, "levels": levels, "v_init": 0.5,
                                                      "tolerance": 0.0})
    wide = plan_reencoders(twin, obs, x[:16], th, 4, 7, tolerance=1e9)
    assert all(v[0] == 1 for v in wide.values()), wide
    assert plan_reencoders(twin, obs, x[:16], th, 4, 7, tolerance=1e9) == wide
    tight = plan_reencoders(twin, obs, x[:16], th, 4, 7, tolerance=0.0)
    assert set(tight) == {t for t, _ in reencoders(twin).values()}


def test_verify_counts_piecewise_silu_by_hand_and_the_ann_exact(tiny):
    """The SNN's SiLUs (6 x 8 x 8 = 384 elements each): the first reads the static prefix (direct input
    encoding): its fit once; the second is time-averaged: per step 4 compares, a multiply and an add per
    element. The ANN's: the exact SiLU (exp, add, divide, multiply)."""
    path, x, _ = tiny
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False, pwl_activations=True)
    rep = onnx2snn.verify(snn, reference=path, data=(x[:8], torch.zeros(8, dtype=torch.long)), timesteps=[1, 3],
                          progress=False)
    rows = {r["form"]: r for r in rep.layers["energy"] if r["op"] == "PiecewiseSiLU"}
    assert set(rows) == {"static", "time-averaged"}
    n = 384
    for r in rows.values():
        assert r["ann"] == {"exp": n, "add": n, "div": n, "mul": n}
    for t in (1, 3):
        assert rows["static"]["snn"][t] == {"cmp": 4 * n, "mul": n, "add": n}
        # run on the sums: from step 2 on (at t = 1 the output is f(x_1)) a running-sum add per input
        # element, a difference add per output element, and per step 15 knots + 16 intercepts scaled
        # by t (no averaging, no scaling per element)
        assert rows["time-averaged"]["snn"][t] == {"cmp": t * 4 * n, "mul": t * n + (t - 1) * 31,
                                                   "add": t * n + (t - 1) * 2 * n}
    ann = rep.layers["ops"]["ann_counts"]
    assert ann["exp"] == ann["div"] == 2 * n and ann["cmp"] == 0


def test_search_can_choose_auto_reencoders(tiny):
    path, x, _ = tiny
    x = torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False, target=0.9,
                           search={"reencode_levels": ("auto", 2), "percentiles": ("mse",),
                                         "mse_tolerances": (0.0,), "levels": (4,), "max_runs": 6})
    labels = [c["label"] for c in snn.tune_report.candidates]
    assert any("reencode=auto" in lb for lb in labels), labels
    if snn.config["reencode_levels"] == "auto":
        assert set(snn.config["reencode_plan"]) == {m for m in snn.config["reencode_plan"]}


def test_search_builds_the_piecewise_fits_it_chose(tiny, tmp_path):
    """search={"pwl_activations": (True,)}: the fits are tried beside the default (exact) point and,
    cheaper at a quality this target keeps, chosen; the SNN it returns runs them (PiecewiseSiLU in
    place of SiLU), says so in its config, and loads back the same."""
    from onnx2snn.graph.piecewise import PiecewiseSiLU

    path, _, _ = tiny
    x = torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    opts = {"percentiles": ("mse",), "mse_tolerances": (0.0,), "levels": (2,), "reencode_levels": (7,), "max_runs": 3}
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False, target=0.5, search={**opts, "pwl_activations": (True,)})
    assert snn.config["pwl_activations"] is True
    assert any(isinstance(m, PiecewiseSiLU) for m in snn.rewritten.modules())
    assert any(c["label"].endswith(", pwl") for c in snn.tune_report.candidates)
    snn.save(str(tmp_path / "p.snn"))
    back = onnx2snn.load(str(tmp_path / "p.snn"))
    assert torch.allclose(back(x[:4], timesteps=3), snn(x[:4], timesteps=3), atol=1e-6)
    exact = onnx2snn.convert(path, x, timesteps=4, progress=False, target=0.5, search=opts)
    assert exact.config["pwl_activations"] is False
    assert not any(isinstance(m, PiecewiseSiLU) for m in exact.rewritten.modules())


def test_a_candidate_twin_keeps_the_levels_its_search_set(tmp_path):
    """The exact-product variant of a twin (operand re-encoders dropped) is a copy: it must carry the
    re-encoders' spikes per step the search set on the twin, as the thresholds were made for them."""
    from onnx2snn.graph.analysis import prepare_averaged
    from onnx2snn.graph.averaged import Reencode
    from onnx2snn.config import ConvertConfig
    from onnx2snn.tuning.search import candidate_twin

    class Gate(torch.nn.Module):  # a product of two computed tensors (q k^T) after a neuron
        def __init__(self):
            super().__init__()
            self.a, self.q, self.k, self.out, self.head = (torch.nn.Linear(6, 6) for _ in range(5))

        def forward(self, x):
            h = torch.relu(self.a(x))
            a = torch.softmax(torch.matmul(self.q(h), self.k(h).transpose(1, 2)), -1)
            return self.head(torch.relu(self.out(torch.matmul(a, h))))

    twin = onnx2snn.import_onnx(onnx2snn.export_onnx(Gate().eval(), torch.rand(2, 4, 6), str(tmp_path / "gate.onnx")))
    twin = prepare_averaged(twin, 7, "off", True)
    for m in twin.modules():
        if isinstance(m, Reencode):
            m.levels = 3
    for c in (ConvertConfig(spike_products=False), ConvertConfig(spike_products=False, pwl_activations=True)):
        variant = candidate_twin(twin, c)
        assert variant is not twin
        assert not any(n.startswith("reencode_operand_") for n, _ in variant.named_modules())
        assert {m.levels for m in variant.modules() if isinstance(m, Reencode)} == {3}

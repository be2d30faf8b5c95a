"""The engine runs the same however it is run, on any layout: chunked == one-shot == step mode and
analog == twin for every graph the differential generator makes (tests/layout_cases.py), the
five cases of issue #28 as tests of their own, thresholds along the feature axis."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import layout_cases as L
import onnx2snn
from onnx2snn.errors import LayoutError
from onnx2snn.graph.layout import channel_axes, probe_batch_axes
from onnx2snn.snn.averaged import TimeAveraged, _Slot
from onnx2snn.snn.neurons import time_folded, time_major

NODE_CASES = L.node_cases()
MODULE_CASES = L.module_cases()


@pytest.mark.parametrize("name", sorted(NODE_CASES))
def test_onnx_node_case_between_neurons(name):
    case, p = NODE_CASES[name]
    outcome = L.check(*L.build_node_case(case, p))
    assert outcome.startswith(("ran", "refused")), outcome


@pytest.mark.parametrize("name", sorted(MODULE_CASES))
def test_torch_block_between_neurons(name, tmp_path):
    factory, shape = MODULE_CASES[name]
    outcome = L.check(*L.build_module_case(factory, shape, tmp_path), full=True, tmp=tmp_path)
    batch = int(name.rsplit("@", 1)[1][0]) if "@" in name else None
    if f"(axis {batch})" in name:  # a softmax / norm over the batch axis mixes the samples: refused
        assert outcome in ("refused: LayoutError", "refused: ShapeError"), outcome
    else:
        assert outcome.startswith("ran ("), outcome


def test_generator_covers_every_kind_it_promises():
    ops = {c.model.graph.node[0].op_type for c, _ in NODE_CASES.values()}
    assert {"Softmax", "LogSoftmax", "LayerNormalization", "Div", "Sqrt", "Pow", "MatMul", "Reciprocal", "Log",
            "Transpose", "Reshape", "Gelu", "HardSwish", "ReduceMean"} <= ops
    assert {p for _, p in NODE_CASES.values()} == {0, 1, 2}
    assert len(NODE_CASES) > 400 and len(MODULE_CASES) >= 30


# -- the five cases of the issue ---------------------------------------------------------------
class SeqFirstGate(nn.Module):
    """neuron -> transpose to [N, B, D] -> softmax gate over the tokens -> LayerNorm -> neuron."""

    def __init__(self):
        super().__init__()
        self.fc1, self.g, self.ln, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 4)

    def forward(self, x):
        h = F.relu(self.fc1(x)).transpose(0, 1)
        h = self.ln(h * torch.softmax(self.g(h), 0))
        return self.fc2(F.relu(h)).transpose(0, 1).flatten(1)


def _convert(model, shape, tmp_path, n=64, **kw):
    torch.manual_seed(0)
    path = onnx2snn.export_onnx(model.eval(), torch.rand(2, *shape), str(tmp_path / "m.onnx"))
    x = torch.rand(n, *shape)
    return path, x, onnx2snn.convert(path, x, progress=False, **kw)


def test_sequence_first_attention_same_chunked_and_stepped(tmp_path):
    """Case 1: [N, B, D] tensors were silently mixed with time in chunked runs (and T=16 crashed)."""
    model = SeqFirstGate()
    path, x, snn = _convert(model, (5, 8), tmp_path, timesteps=8)
    assert {tuple(m.out_layout) for m in snn.averaged_ops().values()} == {(1, 1)}  # [N, B, D]
    ref = model(x[:6]).detach()
    errs = []
    with torch.no_grad():
        for T in (4, 8, 16):
            one = snn(x[:6], timesteps=T)
            assert torch.equal(one, snn(x[:6], timesteps=T, chunk=3))
            snn.reset()
            for _ in range(T):
                step = snn.step(x[:6])
            assert torch.equal(step, one)
            errs.append(float((one - ref).norm() / ref.norm()))
    assert errs[0] < 0.3 and errs[-1] < errs[0] / 2, errs  # converges to the ANN (was 0.45 / 0.51 at T=4 / 8)


def test_neuron_after_transpose_calibrates_per_feature(tmp_path):
    """Case 2: a neuron reading a transposed (non-contiguous) tensor crashed calibration; its
    thresholds follow the feature axis (the Linear's outputs), whatever the strides."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(5, 3)

        def forward(self, x):  # [B, 5, 6] -> [B, 5, 8] -> [B, 8, 5] (transposed) -> ReLU -> Linear on 5
            return self.fc2(F.relu(self.fc1(x).transpose(1, 2))).flatten(1)

    model = M()
    path, x, snn = _convert(model, (5, 6), tmp_path, timesteps=4)
    (neuron,) = snn.neurons().values()
    assert neuron.channel_axis == 1 and neuron.theta.numel() == 8  # the 8 features, now on axis 1
    with torch.no_grad():
        top = F.relu(model.fc1(x)).amax((0, 1))  # each feature's largest value
    assert torch.all((neuron.theta <= top * 1.01) | (top == 0)), (neuron.theta, top)


def test_verify_runs_on_a_torchvision_vit(tmp_path, digits):
    """Case 3: verify crashed in the synapse count of a MatMul-with-weights reading a transposed
    tensor ("size mismatch ... (8x17408)") on a torchvision VisionTransformer."""
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=16, patch_size=4, num_layers=1, num_heads=2,
                                               hidden_dim=16, mlp_dim=32, num_classes=10).eval()
    path = onnx2snn.export_onnx(vit, torch.rand(2, 3, 16, 16), str(tmp_path / "vit.onnx"))
    xtr, _, xte, yte = digits
    rgb = lambda x: x.expand(-1, 3, -1, -1).contiguous()  # noqa: E731
    snn = onnx2snn.convert(path, rgb(xtr[:64]), timesteps=4, progress=False)
    rep = onnx2snn.verify(snn, data=(rgb(xte[:16]), yte[:16]), timesteps=[1, 2, 4], progress=False)
    ops = rep.layers["ops"]["snn"]
    assert all(ops[t]["synops"] > 0 and math.isfinite(ops[t]["energy_pj"]) for t in (1, 2, 4))
    assert rep.metrics["snn"][4]["agreement"] >= 0.5


def test_thresholds_follow_the_feature_axis(tmp_path):
    """Case 4: in token layouts [B, N, D] thresholds are per feature D (the last axis after a
    Linear / LayerNorm), per channel (dim 1) after a convolution; one per layer where the
    feature axis cannot be followed."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc, self.ln = nn.Conv2d(1, 4, 3), nn.Linear(4, 6), nn.LayerNorm(6)

        def forward(self, x):
            c = F.relu(self.conv(x))                       # [B, 4, 6, 6]: per channel, dim 1
            t = F.relu(self.fc(c.flatten(2).transpose(1, 2)))  # [B, 36, 6]: per feature, dim 2
            u = F.relu(self.ln(t).transpose(1, 2))          # [B, 6, 36]: the features moved to dim 1
            return F.relu(u.reshape(u.shape[0], -1))        # [B, 216]: features mixed into one axis

    gm = onnx2snn.import_onnx(onnx2snn.export_onnx(M().eval(), torch.rand(2, 1, 8, 8), str(tmp_path / "m.onnx")))
    acts = [n.name for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU)]
    assert [channel_axes(gm, acts)[a] for a in acts] == [1, 2, 1, None]


def test_out_of_domain_step_does_not_poison_later_steps():
    """Case 5: a Div whose running-average denominator is 0 at the first steps (a neuron that has
    not fired yet) made those steps inf and every later step NaN. Undefined steps now stay out of
    the running state: from the first step where the op is defined, the running output average
    is the op of the running input averages again."""
    T, B = 8, 3
    den = torch.zeros(T, B, 4)
    den[3:] = 1.0  # the denominator's neuron fires from step 4 on
    num = torch.ones(T, B, 4)
    mod = TimeAveraged(torch.div, (_Slot(0), _Slot(1)), {}, ["dynamic", "dynamic"], "Div")
    mod.T = T
    y = mod(num.reshape(T * B, 4), den.reshape(T * B, 4)).reshape(T, B, 4)
    assert torch.isfinite(y).all()
    assert (y[:3] == 0).all()  # undefined steps send nothing
    for t in range(4, T + 1):  # defined again: mean output = mean(num) / mean(den)
        want = num[:t].mean(0) / den[:t].mean(0)
        assert torch.allclose(y[:t].sum(0) / t, want, rtol=1e-5), t
    # chunks and step mode carry the held value the same way
    mod.carry = True
    mod.T = 2
    parts = [mod(num[k:k + 2].reshape(2 * B, 4), den[k:k + 2].reshape(2 * B, 4)) for k in range(0, T, 2)]
    assert torch.equal(torch.cat([p.reshape(2, B, 4) for p in parts]), y)


def test_layout_the_engine_cannot_follow_is_refused_naming_the_node(tmp_path):
    """A slice of the batch axis with fixed bounds after a neuron would cut time x batch, not the
    batch: refused at convert time with an error that names the node, never run wrong (the ANN
    itself takes it: at batch 2 the slice keeps every sample)."""
    from onnx import TensorProto, helper

    X = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    Y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 4])
    init = [helper.make_tensor(k, TensorProto.INT64, [1], [v]) for k, v in (("s", 0), ("e", 3), ("a", 0))]
    g = helper.make_graph([helper.make_node("Relu", ["X"], ["r"]), helper.make_node("Slice", ["r", "s", "e", "a"], ["c"],
                                                                                    name="first_three"),
                           helper.make_node("Relu", ["c"], ["Y"])], "g", [X], [Y], init)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(LayoutError, match="first_three") as e:
        onnx2snn.convert(model, torch.rand(16, 4), timesteps=4, progress=False)
    assert "does not follow the batch" in str(e.value)
    # and before any calibration pass (the user does not wait for the statistics first)
    from unittest import mock

    with mock.patch("onnx2snn.api.calibrate_thresholds", side_effect=AssertionError("calibrated first")):
        with pytest.raises(LayoutError, match="first_three"):
            onnx2snn.convert(model, torch.rand(16, 4), timesteps=4, progress=False)


def test_probe_finds_batch_axes_and_blocks():
    """[N, B, D] is (1, 1); [N * B, D] is (0, N): the batch inside N blocks."""

    class M(nn.Module):
        def forward(self, x):  # [B, 5, 8]
            t = x.transpose(0, 1)                  # [5, B, 8]
            return t.reshape(-1, 8) * 2            # [5 * B, 8]

    gm = torch.fx.symbolic_trace(M())
    gm.onnx_info = type("I", (), {"input_shapes": {"x": (1, 5, 8)}})()
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            n.meta["onnx_input"] = "x"
    axes, problems = probe_batch_axes(gm, {n.name for n in gm.graph.nodes})
    assert axes["transpose"] == (1, 1) and axes["mul"] == (0, 5) and not problems


@pytest.mark.parametrize("layout", [(0, 1), (1, 1), (2, 1), (0, 5), (1, 3)])
def test_time_major_inverts(layout):
    T, B = 3, 2
    shape = [4, 5, 6]
    shape[layout[0]] = T * B * layout[1]
    x = torch.randn(*shape)
    xs = time_major(x, T, layout)
    assert xs.shape[:2] == (T, B * layout[1]) and torch.equal(time_folded(xs, layout), x)

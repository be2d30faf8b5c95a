"""LayerNorm on running sums (snn/norms.py): the same values as the time-averaged LayerNorm,
chunked == one-shot == step mode, in a tokens-first layout too; verify counts it by hand."""

import pytest
import torch
from torch import nn

import onnx2snn
from onnx2snn.snn.averaged import TimeAveraged, _Slot
from onnx2snn.snn.norms import SumNorm

T, B = 9, 3


def _ln(bias=True):
    torch.manual_seed(0)
    ln = nn.LayerNorm(6, eps=1e-3, bias=bias)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        if bias:
            ln.bias.uniform_(-0.5, 0.5)
    return ln


def _x(seed=0):
    return torch.randn(T, B, 5, 6, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bias", [True, False])
def test_sum_norm_equals_time_averaged_layer_norm(bias):
    ln, x = _ln(bias), _x()
    ref, new = TimeAveraged(ln, (_Slot(0),), {}, ["dynamic"]), SumNorm(ln, (_Slot(0),), {}, ["dynamic"])
    ref.T = new.T = T
    xs = x.reshape(T * B, 5, 6)
    want, got = ref(xs), new(xs)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), float((got - want).abs().max())
    y = got.reshape(T, B, 5, 6)
    for t in range(1, T + 1):  # running output average == LayerNorm of the running input average
        assert torch.allclose(y[:t].sum(0) / t, ln(x[:t].mean(0)), rtol=1e-5, atol=1e-5)


def test_sum_norm_chunks_steps_and_tokens_first_layout():
    ln, x = _ln(), _x(1)
    one = SumNorm(ln, (_Slot(0),), {}, ["dynamic"])
    one.T = T
    ref = one(x.reshape(T * B, 5, 6))
    chunked = SumNorm(ln, (_Slot(0),), {}, ["dynamic"])
    chunked.carry = True
    parts = []
    for t0, n in ((0, 4), (4, 3), (7, 2)):
        chunked.T = n
        parts.append(chunked(x[t0:t0 + n].reshape(n * B, 5, 6)))
    assert torch.equal(torch.cat(parts), ref)
    stepped = SumNorm(ln, (_Slot(0),), {}, ["dynamic"])
    stepped.step_mode = True
    assert torch.equal(torch.cat([stepped(x[t]) for t in range(T)]), ref)
    # tokens first: [5, T*B, 6] with time x batch on axis 1
    tf = SumNorm(ln, (_Slot(0),), {}, ["dynamic"])
    tf.T, tf.in_layouts, tf.out_layout = T, [(1, 1)], (1, 1)
    got = tf(x.reshape(T * B, 5, 6).transpose(0, 1))
    assert torch.allclose(got.transpose(0, 1), ref, rtol=1e-6, atol=1e-6)


class Block(nn.Module):
    """Tokens [B, 4, 8] -> Linear + ReLU -> LayerNorm -> Linear + ReLU -> Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.emb, self.norm, self.fc, self.head = nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(32, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc(self.norm(torch.relu(self.emb(x))))).flatten(1))


def test_layer_norm_on_sums_counted_by_hand(tmp_path):
    x = torch.rand(32, 4, 8)
    path = onnx2snn.export_onnx(Block().eval(), x[:2], str(tmp_path / "ln.onnx"))
    snn = onnx2snn.convert(path, x, timesteps=4, progress=False)
    assert sum(isinstance(m, SumNorm) for m in snn.rewritten.modules()) == 1
    rep = onnx2snn.verify(snn, reference=path, data=(x[:8], torch.zeros(8, dtype=torch.long)), timesteps=[1, 2, 4],
                          progress=False)
    row = [r for r in rep.layers["energy"] if r["op"] == "LayerNorm"]
    assert len(row) == 1 and row[0]["form"] == "time-averaged (sums)"
    ann = row[0]["ann"]  # per element 4 adds + 3 multiplies, per row (4 tokens) a sqrt and a divide
    assert ann == {"add": 4 * 32, "mul": 3 * 32, "sqrt": 4, "div": 4}
    for t in (1, 2, 4):
        # after the first step: the running sum and the difference (2 x 32 adds), r_t per row (2 multiplies,
        # an add), t * beta (8)
        want = {"add": t * 4 * 32 + (t - 1) * (2 * 32 + 4), "mul": t * 3 * 32 + (t - 1) * (2 * 4 + 8), "sqrt": t * 4,
                "div": t * 4}
        assert {k: v for k, v in row[0]["snn"][t].items() if v} == want

"""The user's path: every bad input and setting a user can give gets an error of ours
(a subclass of Onnx2SnnError; on the command line exit code 2 and one line naming the
option), before any long work; never a traceback from inside torch / PIL / argparse,
never a silent wrong result. Small models and few samples, so the battery stays fast."""

import math
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

import onnx2snn
from onnx2snn import ConfigError, DataError, InvalidModelError, ShapeError
from onnx2snn.calibration.data import progress_samples, sample_count
from onnx2snn.cli import build_parser, main
from onnx2snn.errors import Onnx2SnnWarning


# -- fixtures --------------------------------------------------------------------------------
class Ctx:
    pass


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    c = Ctx()
    c.dir = tmp_path_factory.mktemp("userpath")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c.onnx = onnx2snn.export_zoo_model("digits_resnet", c.dir / "digits_resnet.onnx")
        torch.manual_seed(0)
        silu = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.SiLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 10))
        c.silu = onnx2snn.export_onnx(silu, torch.zeros(1, 1, 16, 16), c.dir / "silu.onnx")
        averaged = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.SiLU(),
                                 nn.Flatten(), nn.Linear(4 * 16 * 16, 10))  # a SiLU after a neuron: time-averaged
        c.averaged = onnx2snn.export_onnx(averaged, torch.zeros(1, 1, 16, 16), c.dir / "averaged.onnx")
        other = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, 10))
        c.other = onnx2snn.export_onnx(other, torch.zeros(1, 1, 16, 16), c.dir / "other.onnx")
    x, y = onnx2snn.zoo.load_digits(16, "train")
    c.x, c.y = x[:64], y[:64]
    c.x8 = np.round(c.x * 255).astype(np.uint8)
    np.savez(c.dir / "calib.npz", x=c.x, y=c.y)
    np.savez(c.dir / "calib8.npz", x=c.x8)
    np.savez(c.dir / "calib3.npz", x=np.repeat(c.x, 3, axis=1))
    c.snn = onnx2snn.convert(c.onnx, c.x, timesteps=4, progress=False)
    c.snn_path = c.snn.save(c.dir / "digits.snn.pt")
    c.images = c.dir / "images"
    c.images.mkdir()
    for i, im in enumerate(c.x8[:16]):
        Image.fromarray(im[0], mode="L").save(c.images / f"{i:04d}.png")
    c.empty = c.dir / "empty"
    c.empty.mkdir()
    c.corrupt = c.dir / "corrupt"
    c.corrupt.mkdir()
    Image.fromarray(c.x8[0, 0], mode="L").save(c.corrupt / "0000.png")
    full = c.dir / "full.jpg"
    Image.fromarray(c.x8[1, 0], mode="L").resize((64, 64)).save(full, quality=95)
    (c.corrupt / "0001.jpg").write_bytes(full.read_bytes()[:200])  # truncated JPEG
    dyn = onnx.load(c.onnx)
    for k in (2, 3):
        dyn.graph.input[0].type.tensor_type.shape.dim[k].dim_param = "hw"[k - 2]
    c.dynamic = c.dir / "dynamic.onnx"
    onnx.save(dyn, c.dynamic)
    return c


def xt(c, n=8):
    return torch.as_tensor(c.x[:n])


# -- the API battery: (case, call, error, message pattern) -------------------------------------
def _convert(c, **kw):
    kw.setdefault("progress", False)
    data = kw.pop("data", c.x)
    return onnx2snn.convert(kw.pop("source", c.onnx), data, **kw)


API_CASES = [
    # calibration data
    ("calib 3 channels for a 1-channel model", lambda c: _convert(c, data=np.repeat(c.x, 3, 1)), ShapeError,
     r"samples have shape \(3, 16, 16\).*takes \(1, 16, 16\).*3 channels where the model takes 1"),
    ("calib of the wrong H/W", lambda c: _convert(c, data=c.x[:, :, :8, :8]), ShapeError,
     r"images of 8x8 where the model takes 16x16"),
    ("calib without the channel dim", lambda c: _convert(c, data=c.x[:, 0]), ShapeError, r"lacks the channel dim"),
    ("calib channels last", lambda c: _convert(c, data=np.repeat(c.x, 3, 1)[:, :1].transpose(0, 2, 3, 1)),
     ShapeError, r"channels last"),
    ("calib uint8", lambda c: _convert(c, data=c.x8), DataError, r"uint8 \(integers\).*/ 255.*preprocess="),
    ("calib int64", lambda c: _convert(c, data=c.x8.astype(np.int64)), DataError, r"int64 \(integers\)"),
    ("calib NaN", lambda c: _convert(c, data=np.where(c.x > 0.5, np.nan, c.x)), DataError, r"NaN"),
    ("calib empty", lambda c: _convert(c, data=c.x[:0]), DataError, r"empty"),
    ("calib missing", lambda c: _convert(c, data=None), DataError, r"calibration data is required"),
    ("calib path missing", lambda c: _convert(c, data=str(c.dir / "nope.npz")), DataError, r"no such file"),
    ("calib empty image folder", lambda c: _convert(c, data=str(c.empty)), DataError, r"no images found"),
    ("calib corrupt JPEG", lambda c: _convert(c, data=str(c.corrupt)), DataError,
     r"0001\.jpg: cannot read the image"),
    ("calib a Python object", lambda c: _convert(c, data=object()), DataError, r"cannot read samples from a object"),
    # convert settings
    ("timesteps=0", lambda c: _convert(c, timesteps=0), ConfigError, r"timesteps=0 is not valid: must be >= 1"),
    ("timesteps=-3", lambda c: _convert(c, timesteps=-3), ConfigError, r"timesteps=-3 is not valid"),
    ("timesteps=1.5", lambda c: _convert(c, timesteps=1.5), ConfigError, r"timesteps=1.5 is not valid"),
    ("timesteps=True", lambda c: _convert(c, timesteps=True), ConfigError, r"timesteps=True is not valid"),
    ("timesteps='8'", lambda c: _convert(c, timesteps="8"), ConfigError, r"timesteps='8' is not valid"),
    ("threshold=150", lambda c: _convert(c, threshold=150), ConfigError, r"threshold=150 .*\(0, 100\]"),
    ("threshold=0", lambda c: _convert(c, threshold=0), ConfigError, r"threshold=0 is not valid"),
    ("threshold=-5", lambda c: _convert(c, threshold=-5), ConfigError, r"threshold=-5 is not valid"),
    ("threshold=NaN", lambda c: _convert(c, threshold=math.nan), ConfigError, r"threshold=nan is not valid"),
    ("threshold='p99'", lambda c: _convert(c, threshold="p99"), ConfigError, r"threshold='p99'"),
    ("normalization='batch'", lambda c: _convert(c, normalization="batch"), ConfigError,
     r"normalization='batch' is not valid: expected one of 'channel', 'layer'"),
    ("encoding='rate'", lambda c: _convert(c, encoding="rate"), ConfigError, r"encoding='rate'"),
    ("levels=0", lambda c: _convert(c, levels=0), ConfigError, r"levels=0 is not valid"),
    ("threshold='mse2'", lambda c: _convert(c, threshold="mse2"), ConfigError, r"'max' or 'mse'"),
    ("batch_size=0", lambda c: _convert(c, batch_size=0), ConfigError, r"batch_size=0"),
    ("calibration_limit=0", lambda c: _convert(c, calibration_limit=0), ConfigError, r"calibration_limit=0"),
    ("correct_timesteps=0", lambda c: _convert(c, correct_timesteps=0), ConfigError, r"correct_timesteps=0"),
    ("v_init=NaN", lambda c: _convert(c, v_init=math.nan), ConfigError, r"v_init=nan"),
    ("signed_relu='yes'", lambda c: _convert(c, signed_relu="yes"), ConfigError, r"signed_relu='yes'"),
    ("replace unknown kind", lambda c: _convert(c, replace_activations={"Swish": "ReLU"}), ConfigError,
     r"unknown activation kind 'Swish'"),
    ("replace by a non-spiking kind", lambda c: _convert(c, replace_activations={"SiLU": "Tanh"}), ConfigError,
     r"cannot replace SiLU by 'Tanh'"),
    ("replace given as a string", lambda c: _convert(c, replace_activations="SiLU=ReLU"), ConfigError,
     r"replace_activations='SiLU=ReLU' is not valid"),
    ("input_shape='foo'", lambda c: _convert(c, input_shape="foo"), ConfigError, r"input_shape='foo' is not valid"),
    ("input_shape with a 0", lambda c: _convert(c, input_shape=(1, 0, 16, 16)), ConfigError, r"input_shape="),
    ("preprocess of a wrong type", lambda c: _convert(c, preprocess={"size": 16}), ConfigError,
     r"preprocess must be an onnx2snn.zoo.Preprocess"),
    # (calibration tensors fill the dynamic dims, see test_metadata; images of any size cannot)
    ("dynamic dims, no input_shape", lambda c: _convert(c, source=c.dynamic, data=c.images), onnx2snn.DynamicShapeError,
     r"dynamic dimension 2.*input_shape="),
    ("model file missing", lambda c: _convert(c, source=str(c.dir / "nope.onnx")), InvalidModelError,
     r"nope.onnx: no such file"),
    # running the SNN
    ("snn(x, timesteps=0)", lambda c: c.snn(xt(c), timesteps=0), ConfigError, r"timesteps=0 is not valid"),
    ("snn(x, timesteps=1.5)", lambda c: c.snn(xt(c), timesteps=1.5), ConfigError, r"timesteps=1.5"),
    ("snn(x, timesteps=True)", lambda c: c.snn(xt(c), timesteps=True), ConfigError, r"timesteps=True"),
    ("run_timesteps([])", lambda c: c.snn.run_timesteps(xt(c), checkpoints=[]), ConfigError,
     r"checkpoints=\[\] is not valid"),
    ("run_timesteps([0, 4])", lambda c: c.snn.run_timesteps(xt(c), checkpoints=[0, 4]), ConfigError,
     r"checkpoints=\[0, 4\]"),
    ("snn(numpy array)", lambda c: c.snn(c.x[:8]), DataError, r"expected a torch.Tensor.*torch.as_tensor"),
    ("snn(uint8 tensor)", lambda c: c.snn(torch.as_tensor(c.x8[:8])), DataError, r"is uint8.*x.float\(\) / 255"),
    ("snn(wrong shape)", lambda c: c.snn(torch.zeros(2, 3, 16, 16)), ShapeError, r"\[2, 3, 16, 16\].*\[B, 1, 16, 16\]"),
    ("step(wrong shape)", lambda c: c.snn.step(torch.zeros(2, 1, 8, 8)), ShapeError, r"takes \[B, 1, 16, 16\]"),
    ("a batch beyond the free memory", lambda c: c.snn(xt(c, 1).expand(10 ** 7, 1, 16, 16), timesteps=4), ConfigError,
     r"T=4 steps on a batch of 10000000 \(1 steps at a time\) needs about .* GiB.*free.*smaller batch"),
    # verify
    ("verify timesteps=[0]", lambda c: onnx2snn.verify(c.snn, data=c.x, timesteps=[0]), ConfigError,
     r"timesteps=\[0\] is not valid"),
    ("verify timesteps='1,2'", lambda c: onnx2snn.verify(c.snn, data=c.x, timesteps="1,2"), ConfigError,
     r"timesteps='1,2' is not valid"),
    ("verify timesteps=[]", lambda c: onnx2snn.verify(c.snn, data=c.x, timesteps=[]), ConfigError, r"non-empty"),
    ("verify batch_size=0", lambda c: onnx2snn.verify(c.snn, data=c.x, batch_size=0), ConfigError, r"batch_size=0"),
    ("verify limit=0", lambda c: onnx2snn.verify(c.snn, data=c.x, limit=0), ConfigError, r"limit=0"),
    ("verify tolerance=-1", lambda c: onnx2snn.verify(c.snn, data=c.x, tolerance=-1), ConfigError, r"tolerance=-1"),
    ("verify task='segmentation'", lambda c: onnx2snn.verify(c.snn, data=c.x, task="segmentation"), ConfigError,
     r"task='segmentation'"),
    ("verify without data", lambda c: onnx2snn.verify(c.snn), DataError, r"needs data="),
    ("verify of an ONNX file", lambda c: onnx2snn.verify(c.onnx, data=c.x), InvalidModelError,
     r"an ONNX model, not a spiking network: convert it first"),
    ("verify of a non-network", lambda c: onnx2snn.verify(42, data=c.x), ConfigError, r"needs a SpikingNetwork"),
    ("verify on an empty image folder", lambda c: onnx2snn.verify(c.snn, data=str(c.empty), timesteps=[1]), DataError,
     r"no images found"),
    ("verify on a corrupt JPEG", lambda c: onnx2snn.verify(c.snn, data=str(c.corrupt), timesteps=[1], progress=False),
     DataError, r"0001\.jpg: cannot read the image"),
    # load
    ("load an ONNX file", lambda c: onnx2snn.load(c.onnx), InvalidModelError,
     r"an ONNX model, not a spiking network: convert it first \(onnx2snn convert"),
    ("load a state_dict", lambda c: onnx2snn.load(_state_dict(c)), InvalidModelError, r"a PyTorch checkpoint"),
    ("load a text file", lambda c: onnx2snn.load(_text(c)), InvalidModelError, r"not an onnx2snn spiking network"),
    ("load an .npz", lambda c: onnx2snn.load(c.dir / "calib.npz"), InvalidModelError, r"numpy .npz archive"),
    ("load a missing file", lambda c: onnx2snn.load(c.dir / "nope.snn.pt"), InvalidModelError, r"no such file"),
    ("load(None)", lambda c: onnx2snn.load(None), ConfigError, r"load takes a file path"),
    # correct, finetune, fold
    ("correct timesteps=0", lambda c: onnx2snn.correct(c.snn, c.x, timesteps=0), ConfigError, r"timesteps=0"),
    ("correct method='all'", lambda c: onnx2snn.correct(c.snn, c.x, method="all"), ConfigError, r"method='all'"),
    ("correct limit=0", lambda c: onnx2snn.correct(c.snn, c.x, limit=0), ConfigError, r"limit=0"),
    ("correct wrong-shape data", lambda c: onnx2snn.correct(c.snn, c.x[:, :, :8], progress=False), ShapeError,
     r"samples have shape \(1, 8, 16\)"),
    ("correct a twin", lambda c: onnx2snn.correct(onnx2snn.import_onnx(c.onnx), c.x), ConfigError,
     r"correct needs a SpikingNetwork"),
    ("finetune timesteps=0", lambda c: onnx2snn.finetune(c.onnx, (c.x, c.y), timesteps=0), ConfigError,
     r"timesteps=0"),
    ("finetune epochs=-1", lambda c: onnx2snn.finetune(c.onnx, (c.x, c.y), epochs=-1), ConfigError, r"epochs=-1"),
    ("finetune lr=0", lambda c: onnx2snn.finetune(c.onnx, (c.x, c.y), lr=0), ConfigError, r"lr=0.0 is not valid"),
    ("finetune rate_weight=-1", lambda c: onnx2snn.finetune(c.onnx, (c.x, c.y), rate_weight=-1), ConfigError,
     r"rate_weight=-1"),
    ("finetune levels=0", lambda c: onnx2snn.finetune(c.onnx, (c.x, c.y), levels=0), ConfigError, r"levels=0"),
    ("finetune noise='pink'", lambda c: onnx2snn.finetune(c.onnx, (c.x, c.y), noise="pink"), ConfigError,
     r"noise='pink'"),
    ("finetune loss='nope'", lambda c: onnx2snn.finetune(c.onnx, (c.x, c.y), loss="nope"), ConfigError,
     r"unknown loss 'nope'"),
    ("finetune device='gpu'", lambda c: onnx2snn.finetune(c.onnx, (c.x, c.y), device="gpu"), ConfigError,
     r"device='gpu' is not valid"),
    ("finetune without data", lambda c: onnx2snn.finetune(c.onnx, None), DataError, r"needs train_data"),
    ("finetune uint8 inputs", lambda c: onnx2snn.finetune(c.onnx, (c.x8, c.y), epochs=0, progress=False), DataError,
     r"uint8"),
    ("finetune wrong-shape inputs",
     lambda c: onnx2snn.finetune(c.onnx, (c.x[:, :, :8, :8], c.y), epochs=0, progress=False), ShapeError,
     r"training data: samples have shape \(1, 8, 8\)"),
    ("fold_thresholds of a twin", lambda c: onnx2snn.fold_thresholds(onnx2snn.import_onnx(c.onnx)), ConfigError,
     r"needs a SpikingNetwork"),
    ("fold_thresholds of a time-averaged network",
     lambda c: onnx2snn.fold_thresholds(onnx2snn.convert(c.averaged, c.x, progress=False)), ConfigError,
     r"time-averaged operators \(SiLU; 1 node\).*no binary-spike form.*onnx2snn.finetune"),
    # import / export / zoo
    ("import_onnx input_shape='foo'", lambda c: onnx2snn.import_onnx(c.onnx, input_shape="foo"), ConfigError,
     r"input_shape='foo'"),
    ("import_onnx of garbage bytes", lambda c: onnx2snn.import_onnx(b"not onnx"), InvalidModelError,
     r"not a readable ONNX"),
    ("export_onnx of a non-module", lambda c: onnx2snn.export_onnx("net", torch.zeros(1), c.dir / "m.onnx"),
     ConfigError, r"needs a torch.nn.Module"),
    ("export_onnx example not a tensor", lambda c: onnx2snn.export_onnx(nn.ReLU(), [1, 2], c.dir / "m.onnx"),
     ConfigError, r"example_input must be a torch.Tensor"),
    ("export_onnx into a missing folder",
     lambda c: onnx2snn.export_onnx(nn.ReLU(), torch.zeros(1, 2), c.dir / "no" / "m.onnx"), ConfigError,
     r"the folder .*no does not exist"),
    ("export_onnx opset=3", lambda c: onnx2snn.export_onnx(nn.ReLU(), torch.zeros(1, 2), c.dir / "m.onnx", opset=3),
     ConfigError, r"opset=3 is not valid: must be >= 7"),
    ("export_zoo_model unknown name", lambda c: onnx2snn.export_zoo_model("resnet9000", c.dir / "m.onnx"),
     ConfigError, r"name='resnet9000' is not valid: expected one of 'digits_resnet'"),
    ("zoo.load_digits split='val'", lambda c: onnx2snn.zoo.load_digits(16, "val"), ConfigError,
     r"split='val' is not valid"),
    ("zoo.load_digits size=0", lambda c: onnx2snn.zoo.load_digits(0), ConfigError, r"size=0"),
    ("zoo.digit_scenes split='test'", lambda c: onnx2snn.zoo.digit_scenes("test", n=2), ConfigError,
     r"split='test'"),
    ("zoo.ImageFolder without a Preprocess", lambda c: onnx2snn.zoo.ImageFolder(c.images, None), ConfigError,
     r"preprocess must be an onnx2snn.zoo.Preprocess"),
    ("zoo.load_batch limit=0", lambda c: onnx2snn.zoo.load_batch(c.images, onnx2snn.zoo.Preprocess(size=(16, 16)),
                                                                  limit=0), ConfigError, r"limit=0"),
    ("Preprocess size=(0, 16)", lambda c: onnx2snn.zoo.Preprocess(size=(0, 16)), ConfigError, r"size=\(0, 16\)"),
    ("Preprocess std=0", lambda c: onnx2snn.zoo.Preprocess(std=(0.0,)), ConfigError, r"std=0.0 is not valid"),
    ("Preprocess channels=2", lambda c: onnx2snn.zoo.Preprocess(channels=2), ConfigError, r"channels=2"),
    ("Preprocess mean per channel mismatch", lambda c: onnx2snn.zoo.Preprocess(mean=(0.1, 0.2), channels=3),
     ConfigError, r"one per channel \(3\)"),
]


def _state_dict(c):
    p = c.dir / "state.pt"
    torch.save(nn.Linear(2, 2).state_dict(), p)
    return p


def _text(c):
    p = c.dir / "notes.txt"
    p.write_text("hello")
    return p


@pytest.mark.parametrize("case,call,error,pattern", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_battery(ctx, case, call, error, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Onnx2SnnWarning)
        with pytest.raises(error, match=pattern) as info:
            call(ctx)
    assert isinstance(info.value, onnx2snn.Onnx2SnnError)
    assert "weights_only=False" not in str(info.value)


def test_config_errors_name_their_parameter(ctx):
    with pytest.raises(ConfigError) as info:
        _convert(ctx, input_shape="foo")
    assert info.value.param == "input_shape"
    with pytest.raises(ConfigError) as info:
        onnx2snn.verify(ctx.snn, data=ctx.x, timesteps=[0])
    assert info.value.param == "timesteps"


# -- what works must be right -------------------------------------------------------------------
def test_uint8_with_preprocess_equals_scaled_floats(ctx):
    """uint8 images with a preprocessing spec are scaled by 1/255: the same thresholds as the floats."""
    ref = _convert(ctx, data=ctx.x8.astype(np.float32) / 255)
    for data in (ctx.x8, str(ctx.dir / "calib8.npz"), str(ctx.images)):
        n = len(ctx.x8) if not str(data).endswith("images") else 16
        want = ref if n == len(ctx.x8) else _convert(ctx, data=ctx.x8[:16].astype(np.float32) / 255)
        got = _convert(ctx, data=data, preprocess=onnx2snn.zoo.Preprocess(size=(16, 16)))
        for k, th in want.thresholds.items():
            assert torch.allclose(got.thresholds[k], th, rtol=1e-6, atol=1e-7), k
    # an image folder without a spec: resized to the model's input size, pixels in [0, 1]
    folder = _convert(ctx, data=str(ctx.images))
    want = _convert(ctx, data=ctx.x8[:16].astype(np.float32) / 255)
    for k, th in want.thresholds.items():
        assert torch.allclose(folder.thresholds[k], th, rtol=1e-6, atol=1e-7), k


def test_float_arrays_ignore_preprocess_with_a_warning(ctx):
    with pytest.warns(Onnx2SnnWarning, match="not applied to float arrays"):
        snn = _convert(ctx, timesteps=4, preprocess=onnx2snn.zoo.Preprocess(size=(16, 16), mean=(0.5,)))
    for k, th in ctx.snn.thresholds.items():
        assert torch.equal(snn.thresholds[k], th)


def test_memory_warning_before_the_run(ctx, monkeypatch):
    from onnx2snn import checks

    from onnx2snn.snn.network import default_memory_budget

    per_step, state = ctx.snn.memory_per_sample()
    need = 8 * (state + per_step * ctx.snn.chunk_length(4, 8))
    # the chunk budget also follows checks.available_memory: keep it (and the chunk) as measured
    monkeypatch.setattr(ctx.snn, "max_memory", default_memory_budget("cpu"))
    monkeypatch.setattr(checks, "available_memory", lambda device="cpu": int(need * 1.5))
    with pytest.warns(Onnx2SnnWarning, match=r"T=4 steps on a batch of 8 \(\d+ steps at a time\) needs about"), torch.no_grad():
        out = ctx.snn(xt(ctx, 8), timesteps=4)
    assert out.shape == (8, 10)
    monkeypatch.setattr(checks, "available_memory", lambda device="cpu": int(need * 0.9))
    with pytest.raises(ConfigError, match="needs about"):
        ctx.snn(xt(ctx, 8), timesteps=4)
    with pytest.raises(ConfigError, match="needs about"):  # verify refuses before its first batch
        onnx2snn.verify(ctx.snn, data=(torch.as_tensor(ctx.x[:8]), torch.as_tensor(ctx.y[:8])), timesteps=[4],
                        batch_size=8, progress=False)


def test_memory_estimate_is_of_the_right_size(ctx):
    """The estimate is per sample and step (a chunk of steps x batch scales it), and it is at
    least the bytes of the widest neuron layer's input (16 channels x 16 x 16 floats)."""
    b, _ = ctx.snn.memory_per_sample()
    assert 16 * 16 * 16 * 4 <= b <= 64 * 16 * 16 * 16 * 4


def test_verify_warns_on_another_model_and_not_on_the_source(ctx, tmp_path):
    data = (torch.as_tensor(ctx.x[:32]), torch.as_tensor(ctx.y[:32]))
    kw = dict(data=data, timesteps=[1, 4], progress=False, layers=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Onnx2SnnWarning)
        same = onnx2snn.verify(ctx.snn, ctx.onnx, **kw)        # the source file itself
        copy = tmp_path / "copy.onnx"                          # the same network, re-saved
        onnx.save(onnx.load(ctx.onnx), copy)
        onnx2snn.verify(ctx.snn, str(copy), **kw)
        onnx2snn.verify(ctx.snn, None, **kw)
    assert "warning" not in same.reference
    with pytest.warns(Onnx2SnnWarning, match="not the ONNX model this SNN was converted from"):
        other = onnx2snn.verify(ctx.snn, ctx.other, **kw)
    assert "graph differs" in other.reference["warning"] and "**Warning**" in other.table()
    assert other.metrics["snn"][4]["agreement"] < 0.9  # really another network: the warning is deserved
    changed = onnx.load(ctx.onnx)
    w = next(t for t in changed.graph.initializer if len(t.dims) == 4)
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[0] *= -1
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(changed, tmp_path / "changed.onnx")
    with pytest.warns(Onnx2SnnWarning, match="weights differ"):
        onnx2snn.verify(ctx.snn, str(tmp_path / "changed.onnx"), **kw)


def test_smallest_t_needs_agreement_too():
    """T=1 has the reference's top-1 but agrees on 44 % of the samples: not a match."""
    from onnx2snn.verification.report import VerifyReport

    ts = [1, 2, 4]
    snn = {1: {"top1": 0.95, "agreement": 0.44, "rel_l2": 0.9}, 2: {"top1": 0.945, "agreement": 0.97, "rel_l2": 0.2},
           4: {"top1": 0.95, "agreement": 0.995, "rel_l2": 0.05}}
    r = VerifyReport(task="classification", timesteps=ts, n_samples=100,
                     metrics={"reference": {"top1": 0.95}, "snn": snn}, reference={}, config={})
    assert r.smallest_t(metric="top1") == 1
    assert r.smallest_t() == 4 and r.summary["smallest_t"] == 4
    assert r.smallest_t(tol=0.05) == 2
    assert r.summary["smallest_t_per_metric"] == {"top1": 1, "agreement": 4}


def test_progress_counts_samples(ctx, capsys, monkeypatch):
    monkeypatch.setenv("ONNX2SNN_PROGRESS", "1")  # the bar, though pytest's stderr is no terminal
    assert sample_count(ctx.x) == 64 and sample_count(ctx.x, limit=10) == 10
    assert sample_count((ctx.x, ctx.y)) == 64 and sample_count({"x": ctx.x}) == 64
    assert sample_count(str(ctx.dir / "calib.npz")) == 64  # from the .npy header
    ds = torch.utils.data.TensorDataset(torch.as_tensor(ctx.x))
    assert sample_count(torch.utils.data.DataLoader(ds, batch_size=10)) == 64
    assert sample_count(torch.utils.data.DataLoader(ds, batch_size=10, drop_last=True)) == 60
    assert sample_count(str(ctx.images), preprocess=onnx2snn.zoo.Preprocess(size=(16, 16))) == 16
    assert sample_count(iter([ctx.x])) is None
    batches = [torch.zeros(30, 1), torch.zeros(30, 1), torch.zeros(4, 1)]
    assert sum(len(b) for b in progress_samples(batches, 64, "t", enabled=True)) == 64
    err = capsys.readouterr().err
    assert "64/64" in err and "sample" in err


# -- the command line -----------------------------------------------------------------------------
def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, [line for line in cap.err.splitlines() if line.strip()], cap.out


def _no_call(*args, **kwargs):
    raise AssertionError("the long work started before the arguments were checked")


CLI_CASES = [
    ("--input-shape foo", ["convert", "{onnx}", "--calib", "{npz}", "--input-shape", "foo"],
     "argument --input-shape: 'foo' is not valid"),
    ("--threshold foo", ["convert", "{onnx}", "--calib", "{npz}", "--threshold", "foo"],
     "argument --threshold/--percentile: 'foo' is not valid"),
    ("--percentile 150", ["convert", "{onnx}", "--calib", "{npz}", "--percentile", "150"], "(0, 100]"),
    ("--levels 0", ["convert", "{onnx}", "--calib", "{npz}", "--levels", "0"], "argument --levels: 0 is not valid"),
    ("--mse-tolerance -1", ["convert", "{onnx}", "--calib", "{npz}", "--mse-tolerance", "-1"],
     "argument --mse-tolerance: -1.0 is not valid: must be >= 0"),
    ("-T 0", ["convert", "{onnx}", "--calib", "{npz}", "-T", "0"], "argument -T/--timesteps: 0 is not valid"),
    ("-T 1.5", ["convert", "{onnx}", "--calib", "{npz}", "-T", "1.5"], "argument -T/--timesteps: '1.5'"),
    ("--limit 0", ["convert", "{onnx}", "--calib", "{npz}", "--limit", "0"], "argument --limit: 0"),
    ("--replace SiLU", ["convert", "{onnx}", "--calib", "{npz}", "--replace", "SiLU"],
     "argument --replace: 'SiLU' is not valid: expected KIND=NEW"),
    ("--replace Foo=ReLU", ["convert", "{onnx}", "--calib", "{npz}", "--replace", "Foo=ReLU"],
     "argument --replace: unknown activation kind 'Foo'"),
    ("--norm batch", ["convert", "{onnx}", "--calib", "{npz}", "--norm", "batch"], "argument --norm: invalid choice"),
    ("--size 0", ["convert", "{onnx}", "--calib", "{npz}", "--size", "0"], "argument --size"),
    ("--std 0", ["convert", "{onnx}", "--calib", "{npz}", "--std", "0"], "argument --std: 0.0 is not valid: must be > 0"),
    ("--mean a", ["convert", "{onnx}", "--calib", "{npz}", "--mean", "a"], "argument --mean: 'a' is not valid"),
    ("missing model file", ["convert", "{dir}/nope.onnx", "--calib", "{npz}"], "no such ONNX file"),
    ("missing --calib", ["convert", "{onnx}"], "the following arguments are required: --calib"),
    ("calib path missing", ["convert", "{onnx}", "--calib", "{dir}/nope.npz"], "argument --calib"),
    ("-o into a missing folder", ["convert", "{onnx}", "--calib", "{npz}", "-o", "/missing/dir/x.snn.pt"],
     "-o/--output: cannot write /missing/dir/x.snn.pt: the folder /missing/dir does not exist"),
    ("-o onto a folder", ["convert", "{onnx}", "--calib", "{npz}", "-o", "{dir}"], "-o/--output: "),
    ("--fold on time-averaged ops", ["convert", "{averaged}", "--calib", "{npz}", "--fold"],
     "the network has time-averaged operators (SiLU; 1 node): they compute on analog values, so it has no "
     "binary-spike form"),
    ("verify --timesteps a,b", ["verify", "{snn}", "--data", "{npz}", "--timesteps", "a,b"],
     "argument -T/--timesteps: 'a,b' is not valid"),
    ("verify --timesteps 0,4", ["verify", "{snn}", "--data", "{npz}", "--timesteps", "0,4"],
     "argument -T/--timesteps: '0,4' is not valid: expected comma-separated integers >= 1"),
    ("verify --batch-size 0", ["verify", "{snn}", "--data", "{npz}", "--batch-size", "0"], "--batch-size: 0"),
    ("verify --tolerance -1", ["verify", "{snn}", "--data", "{npz}", "--tolerance", "-1"], "--tolerance: -1.0"),
    ("verify --out an existing file", ["verify", "{snn}", "--data", "{npz}", "--out", "{npz}"],
     "--out: {npz} is an existing file, not a folder"),
    ("verify --task seg", ["verify", "{snn}", "--data", "{npz}", "--task", "seg"], "invalid choice"),
    ("unknown command", ["transmogrify"], "invalid choice: 'transmogrify'"),
]


@pytest.mark.parametrize("case,argv,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_battery(ctx, capsys, monkeypatch, case, argv, message):
    import onnx2snn.api
    import onnx2snn.verification.api

    monkeypatch.setattr(onnx2snn.api, "convert", _no_call)
    monkeypatch.setattr(onnx2snn.verification.api, "verify", _no_call)
    fill = {"onnx": ctx.onnx, "npz": ctx.dir / "calib.npz", "snn": ctx.snn_path, "dir": ctx.dir,
            "averaged": ctx.averaged}
    rc, err, _ = cli(capsys, *[a.format(**fill) for a in argv])
    assert rc == 2 and len(err) == 1, err
    assert message.format(**fill) in err[0] and "Traceback" not in err[0]


CLI_API_CASES = [  # errors raised by the API, printed under the CLI's option names
    ("dynamic dims without --input-shape", ["convert", "{dynamic}", "--calib", "{images}", "--quiet",
                                            "-o", "{dir}/d.snn.pt"], "--input-shape", "input_shape="),
    ("uint8 .npz without preprocessing", ["convert", "{onnx}", "--calib", "{npz8}", "--quiet", "-o", "{dir}/u.snn.pt"],
     "--size H,W --mean ... --std ...", "Preprocess("),
    ("3-channel .npz", ["convert", "{onnx}", "--calib", "{npz3}", "--quiet", "-o", "{dir}/c.snn.pt"],
     "3 channels where the model takes 1", "input_shape="),
    ("--mse-tolerance with a percentile", ["convert", "{onnx}", "--calib", "{npz}", "--percentile", "99",
                                           "--mse-tolerance", "0.2", "--quiet", "-o", "{dir}/t.snn.pt"],
     "mse_tolerance applies to --threshold 'mse'", "Traceback"),
    ("corrupt image folder", ["convert", "{onnx}", "--calib", "{corrupt}", "--quiet", "-o", "{dir}/c.snn.pt"],
     "0001.jpg: cannot read the image", "Traceback"),
    ("verify an ONNX file", ["verify", "{onnx}", "--data", "{npz}", "--quiet", "--out", "{dir}/r"],
     "an ONNX model, not a spiking network: convert it first (onnx2snn convert", "weights_only"),
    ("verify a corrupt image folder", ["verify", "{snn}", "--data", "{corrupt}", "--quiet", "-T", "1",
                                       "--out", "{dir}/r"], "0001.jpg: cannot read the image", "Traceback"),
    ("verify an empty image folder", ["verify", "{snn}", "--data", "{empty}", "--quiet", "-T", "1",
                                      "--out", "{dir}/r"], "no images found", "FileNotFoundError"),
    ("verify --size on float .npz data", ["verify", "{snn}", "--data", "{npz}", "--quiet", "-T", "1",
                                              "--size", "8,8", "--out", "{dir}/r"], "not applied to float", "xx"),
]


@pytest.mark.parametrize("case,argv,message,absent", CLI_API_CASES, ids=[c[0] for c in CLI_API_CASES])
def test_cli_api_errors_speak_cli(ctx, capsys, case, argv, message, absent):
    fill = {"onnx": ctx.onnx, "npz": ctx.dir / "calib.npz", "npz8": ctx.dir / "calib8.npz",
            "npz3": ctx.dir / "calib3.npz", "snn": ctx.snn_path, "dir": ctx.dir, "silu": ctx.silu,
            "dynamic": ctx.dynamic, "corrupt": ctx.corrupt, "empty": ctx.empty, "images": ctx.images}
    rc, err, _ = cli(capsys, *[a.format(**fill) for a in argv])
    if case.startswith("verify --size"):  # runs, with the warning as one line
        assert rc == 0 and any("warning:" in e and message in e for e in err), err
        return
    assert rc == 2 and len(err) == 1, err
    assert message in err[0] and absent not in err[0] and "Traceback" not in err[0], err[0]


def test_cli_replace_before_the_model_and_image_folder_calibration(ctx, capsys, tmp_path):
    args = build_parser().parse_args(["convert", "--replace", "SiLU=ReLU", str(ctx.silu), "--calib", str(ctx.images)])
    assert args.model == str(ctx.silu) and args.replace_activations == [{"SiLU": "ReLU"}]
    args = build_parser().parse_args(["convert", str(ctx.onnx), "--calib", str(ctx.images), "--replace", "SiLU=ReLU,GELU=ReLU",
                                      "--replace", "HardSwish=ReLU6"])
    assert args.replace_activations == [{"SiLU": "ReLU", "GELU": "ReLU"}, {"HardSwish": "ReLU6"}]
    out = tmp_path / "silu.snn.pt"
    rc, err, _ = cli(capsys, "convert", "--replace", "SiLU=ReLU", ctx.silu, "--calib", ctx.images, "--quiet",
                     "-o", out)
    assert rc == 0, err
    # image folder with --size/--mean/--std: the same thresholds as the API on the scaled arrays
    out = tmp_path / "img.snn.pt"
    rc, err, stdout = cli(capsys, "convert", ctx.onnx, "--calib", ctx.images, "--size", "16", "--mean", "0.1",
                          "--std", "0.5", "--quiet", "-T", "4", "-o", out)
    assert rc == 0 and "wrote" in stdout, err
    want = _convert(ctx, data=(ctx.x8[:16].astype(np.float32) / 255 - 0.1) / 0.5, timesteps=4)
    got = onnx2snn.load(out)
    for k, th in want.thresholds.items():
        assert torch.allclose(got.thresholds[k], th, rtol=1e-5, atol=1e-6), k


def test_cli_verify_other_model_warns_in_one_line(ctx, capsys, tmp_path):
    rc, err, stdout = cli(capsys, "verify", ctx.snn_path, "--reference", ctx.other, "--data", ctx.dir / "calib.npz",
                          "-T", "1,2", "--quiet", "--no-layers", "--out", tmp_path / "r")
    assert rc == 0
    assert err == ["onnx2snn verify: warning: verify: the reference is not the ONNX model this SNN was converted "
                   "from (its graph differs): the report compares against another network. Leave out --reference "
                   "to use the source stored in the SNN"]
    assert "**Warning**" in (tmp_path / "r" / "report.md").read_text()


def test_help_and_version_without_torch():
    code = ("import sys; from onnx2snn.cli import build_parser, main; build_parser().format_help(); "
            "rc = main(['--version']); assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"onnx2snn {onnx2snn.__version__}"
    for cmd in ("convert", "verify", "inspect", "demo", "zoo"):
        proc = subprocess.run([sys.executable, "-c", "import sys; from onnx2snn.cli import main; "
                               f"rc = main(['{cmd}', '--help']); assert rc == 0; assert 'torch' not in sys.modules"],
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "usage: onnx2snn " + cmd in proc.stdout, proc.stderr


def test_check_lists_agree_with_the_graph_code():
    from onnx2snn import checks
    from onnx2snn.graph import source

    assert set(checks.ACTIVATION_KINDS) == set(source._KIND_TYPES)
    assert set(checks.REPLACEMENTS) == set(source._REPLACEMENTS)

"""The ANN twin equals onnxruntime on the graphs that matter, for both torch exporters."""

import numpy as np
import onnx
import pytest
import torch

import onnx2snn
from onnx2snn import onnx_io
from onnx2snn.graph.importer import reference_inputs

TOL = 1e-4  # max |twin - ort| <= TOL * max(1, max |ort|)

CASES = [(m, o, False) for m in ("resnet18", "vgg11_bn", "mobilenet_v2", "tiny_yolov3", "yolov8_like", "op_zoo")
         for o in (13, 17, 20)]
CASES += [(m, o, True) for m in ("resnet18", "vgg11_bn", "mobilenet_v2", "tiny_yolov3", "yolov8_like", "op_zoo")
          for o in (18, 20)]
CASES += [("resnet50", 17, False), ("resnet50", 18, True)]


def compare(twin, path, batch=3, seed=1):
    """Largest relative difference between the twin on a batch and onnxruntime per sample."""
    x = reference_inputs(twin, batch=batch, seed=seed)[0]
    sess = onnx_io.ort_session(path)
    refs = [onnx_io.run_onnxruntime(path, x[i:i + 1].numpy(), session=sess) for i in range(batch)]
    with torch.no_grad():
        out = twin(x)
    out = out if isinstance(out, tuple) else (out,)
    errs = []
    for k, o in enumerate(out):
        r = np.concatenate([rr[k] for rr in refs])
        assert o.shape == r.shape, (o.shape, r.shape)
        errs.append(float(np.abs(r - o.numpy()).max() / max(1.0, np.abs(r).max())))
    return max(errs)


@pytest.mark.parametrize("name,opset,dynamo", CASES, ids=[f"{m}-op{o}-{'dynamo' if d else 'ts'}" for m, o, d in CASES])
def test_twin_equals_onnxruntime(exported, name, opset, dynamo):
    path = exported(name, opset, dynamo)
    twin = onnx2snn.import_onnx(path)
    assert compare(twin, path) <= TOL


def test_twin_is_readable_and_trainable(exported):
    twin = onnx2snn.import_onnx(exported("resnet18"))
    code = twin.code
    assert "self.layer1_0_conv1(" in code and "layer1_0_add = " in code
    params = list(twin.parameters())
    assert params and all(p.requires_grad for p in params)
    out = twin(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert twin.conv1.weight.grad is not None


def test_twin_from_modelproto_and_bytes_agree(exported):
    path = exported("tiny_yolov3")
    proto = onnx.load(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = onnx2snn.import_onnx(path)(x)
        b = onnx2snn.import_onnx(proto)(x)
        c = onnx2snn.import_onnx(proto.SerializeToString())(x)
    for u, v, w in zip(a, b, c):
        assert torch.equal(u, v) and torch.equal(u, w)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_twin_runs_on_cuda(exported):
    path = exported("yolov8_like")
    twin = onnx2snn.import_onnx(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = twin(x)
        out = twin.cuda()(x.cuda()).cpu()
    assert torch.allclose(ref, out, atol=1e-3, rtol=1e-3)


def test_static_batch_file_takes_any_batch(onnx_dir):
    import graphs

    model, _ = graphs.build("yolov8_like")
    path = str(onnx_dir / "yolo_static.onnx")
    onnx2snn.export_onnx(model, torch.randn(1, 3, 64, 64), path, dynamic_batch=False)
    twin = onnx2snn.import_onnx(path)
    assert compare(twin, path, batch=4) <= TOL


def test_dynamic_spatial_shape_needs_input_shape(onnx_dir):
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    path = str(onnx_dir / "dyn.onnx")
    torch.onnx.export(m.eval(), torch.randn(1, 3, 8, 8), path, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    with pytest.raises(onnx2snn.DynamicShapeError, match=r"dynamic dimension 2.*input_shape"):
        onnx2snn.import_onnx(path)
    twin = onnx2snn.import_onnx(path, input_shape=(1, 3, 12, 12))
    assert compare(twin, path) <= TOL


def test_not_onnx_and_truncated_files(tmp_path, exported):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model")
    with pytest.raises(onnx2snn.InvalidModelError, match="not"):
        onnx2snn.import_onnx(bad)
    data = open(exported("resnet18"), "rb").read()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(onnx2snn.InvalidModelError, match="truncated|not an ONNX|checker"):
        onnx2snn.import_onnx(cut)
    with pytest.raises(onnx2snn.InvalidModelError, match="no such file"):
        onnx2snn.import_onnx(tmp_path / "missing.onnx")


def test_unsupported_ops_are_listed_at_once():
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 8, 8])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])
    nodes = [h.make_node("Relu", ["x"], ["a"], name="relu0"),
             h.make_node("Unique", ["a"], ["b"], name="unique0"),
             h.make_node("LRN", ["b"], ["c"], name="lrn0", size=3),
             h.make_node("Unique", ["c"], ["y"], name="unique1")]
    model = h.make_model(h.make_graph(nodes, "g", [x], [y]), opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(onnx2snn.UnsupportedOpError) as e:
        onnx2snn.import_onnx(model)
    assert e.value.ops == {"Unique": ["unique0", "unique1"], "LRN": ["lrn0"]}
    assert "unique0" in str(e.value) and "LRN" in str(e.value)


def test_unsupported_attribute_names_the_node():
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])
    roi = h.make_tensor("roi", onnx.TensorProto.FLOAT, [0], [])
    scales = h.make_tensor("scales", onnx.TensorProto.FLOAT, [4], [1, 1, 2, 2])
    node = h.make_node("Resize", ["x", "roi", "scales"], ["y"], name="up0", mode="nearest",
                       coordinate_transformation_mode="tf_crop_and_resize")
    model = h.make_model(h.make_graph([node], "g", [x], [y], initializer=[roi, scales]),
                         opset_imports=[h.make_opsetid("", 13)])
    with pytest.raises(onnx2snn.UnsupportedOpError, match="up0.*tf_crop_and_resize"):
        onnx2snn.import_onnx(model, simplify=False)


def test_pad_then_maxpool_matches_reference_semantics():
    """ZeroPad2d + MaxPool (tiny-YOLOv3): onnxruntime's Pad_Fusion would get this wrong."""
    m = torch.nn.Sequential(torch.nn.ZeroPad2d((0, 1, 0, 1)), torch.nn.MaxPool2d(2, 1)).eval()
    x = -torch.rand(1, 2, 5, 5) - 0.5  # all negative: zero padding must win at the border
    proto_path = "/tmp/_o2s_padpool.onnx"
    onnx2snn.export_onnx(m, x, proto_path)
    twin = onnx2snn.import_onnx(proto_path)
    ref = onnx_io.run_onnxruntime(proto_path, x.numpy())[0]
    np.testing.assert_allclose(twin(x).detach().numpy(), m(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(ref, m(x).numpy(), atol=1e-6)


# -- torchvision architectures at test size (the full models: scripts/torchvision_models.py) --------
def _tv_small(name):
    """The torchvision architecture `name`, narrowed and shallowed so that a test runs in seconds
    (same building blocks and exported op patterns as the full model), random BN statistics."""
    import graphs
    from torchvision.models import convnext, densenet, efficientnet, maxvit, mobilenetv3, regnet
    from torchvision.models import swin_transformer as swin
    from torchvision.models import vision_transformer as vit

    torch.manual_seed(0)
    if name == "convnext":
        m = convnext.ConvNeXt([convnext.CNBlockConfig(8, 16, 1), convnext.CNBlockConfig(16, None, 1)], num_classes=10)
    elif name == "swin":
        m = swin.SwinTransformer([4, 4], 8, [1, 1], [1, 2], [2, 2], num_classes=10, stochastic_depth_prob=0)
    elif name == "swin_v2":
        m = swin.SwinTransformer([4, 4], 8, [1, 1], [1, 2], [2, 2], num_classes=10, stochastic_depth_prob=0,
                                 block=swin.SwinTransformerBlockV2, downsample_layer=swin.PatchMergingV2)
    elif name == "vit":
        m = vit.VisionTransformer(32, 8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10)
    elif name == "efficientnet":
        setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
        m = efficientnet.EfficientNet(setting, 0.0, last_channel=last, num_classes=10)
    elif name == "mobilenet_v3":
        setting, last = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
        m = mobilenetv3.MobileNetV3(setting, last, num_classes=10)
    elif name == "regnet":
        m = regnet.RegNet(regnet.BlockParams.from_init_params(depth=3, w_0=8, w_a=8.0, w_m=2.0, group_width=8,
                                                              se_ratio=0.25), stem_width=8, num_classes=10)
    elif name == "densenet":
        m = densenet.DenseNet(growth_rate=4, block_config=(1, 1, 1, 1), num_init_features=8, num_classes=10)
    elif name == "maxvit":
        m = maxvit.MaxVit((32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16], block_layers=[1, 1],
                          head_dim=4, stochastic_depth_prob=0.0, num_classes=10)
    with torch.no_grad():  # torchvision starts some weights at 0 (ViT's head): the outputs would be 0
        for p in m.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0, 0.2)
    return _unit_outputs(graphs.randomize_bn(m), (1, 3, 32, 32))


def _unit_outputs(m, shape):
    """Scale the last Linear layer so that the logits have std 1: the error bound
    max |twin - ort| <= 1e-4 * max(1, max |ref|) is then a relative one."""
    last = [x for x in m.modules() if isinstance(x, torch.nn.Linear)][-1]
    with torch.no_grad():
        std = float(m(torch.randn(4, *shape[1:], generator=torch.Generator().manual_seed(5))).std())
        last.weight.div_(std)
        if last.bias is not None:
            last.bias.div_(std)
    return m


TV = ["convnext", "swin_v2", "vit", "efficientnet", "mobilenet_v3", "regnet", "densenet", "maxvit"]
# dynamo writes plain conv nets like TorchScript: its slow export runs where the graphs differ
TV_CASES = [(n, False) for n in TV] + [(n, True) for n in ("convnext", "swin_v2", "vit", "efficientnet", "maxvit")]


@pytest.mark.parametrize("name,dynamo", TV_CASES, ids=[f"{n}-{'dynamo' if d else 'ts'}" for n, d in TV_CASES])
def test_torchvision_architectures_import_exactly(onnx_dir, name, dynamo):
    import warnings

    model = _tv_small(name)
    path = str(onnx_dir / f"tv_{name}_{'dynamo' if dynamo else 'ts'}.onnx")
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            onnx2snn.export_onnx(model, x, path, opset=18 if dynamo else 17, dynamo=dynamo)
        except onnx2snn.InvalidModelError:  # torch.export cannot make this batch dynamic: a static one
            onnx2snn.export_onnx(model, x, path, opset=18 if dynamo else 17, dynamo=dynamo, dynamic_batch=False)
    twin = onnx2snn.import_onnx(path)
    if not dynamo:  # the TorchScript files have a dynamic batch: the twin takes any batch
        assert twin.onnx_info.batch_flexible
    assert compare(twin, path, batch=3 if twin.onnx_info.batch_flexible else 1) <= TOL


def test_batch_tied_graph_refuses_other_batches():
    """A graph whose reshape fixes the batch (here written by hand) gets a clear ShapeError at
    another batch size instead of a torch error or mixed-up samples."""
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4, 6])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 1, 6])
    shape = h.make_tensor("shape", onnx.TensorProto.INT64, [3], [4, 1, 6])
    graph = h.make_graph([h.make_node("Reshape", ["x", "shape"], ["y"], name="tie")], "g", [x], [y], [shape])
    twin = onnx2snn.import_onnx(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]))
    assert not twin.onnx_info.batch_flexible
    assert twin(torch.ones(1, 4, 6)).shape == (4, 1, 6)
    with pytest.raises(onnx2snn.ShapeError, match="batch 1 only"):
        twin(torch.ones(2, 4, 6))


def test_shape_from_a_graph_input_is_refused_not_ignored():
    """Reshape(x, shape) with `shape` a graph input: the twin must not drop the input and use a
    shape guessed from the declared output; it refuses, naming the node and the input."""
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 4])
    s = h.make_tensor_value_info("shape", onnx.TensorProto.INT64, [2])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [6, 4])
    graph = h.make_graph([h.make_node("Reshape", ["x", "shape"], ["y"], name="r0")], "g", [x, s], [y])
    with pytest.raises(onnx2snn.UnsupportedOpError, match=r"r0.*shape.*constant"):
        onnx2snn.import_onnx(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]))


def test_dropout_in_training_mode_is_refused(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).train()
    path = str(tmp_path / "drop.onnx")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, torch.randn(1, 4), path, dynamo=False, training=torch.onnx.TrainingMode.TRAINING,
                          do_constant_folding=False)
    with pytest.raises(onnx2snn.UnsupportedOpError, match="Dropout.*training"):
        onnx2snn.import_onnx(path)


def test_gelu_written_with_erf_is_one_activation(onnx_dir):
    """TorchScript writes GELU as Div/Erf/Add/Mul/Mul: the twin has one nn.GELU, so analysis and
    inspect can name it (and replace_activations swap it)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU(), torch.nn.Conv2d(4, 2, 1)).eval()
    path = str(onnx_dir / "gelu.onnx")
    onnx2snn.export_onnx(model, torch.randn(1, 3, 8, 8), path, opset=17)
    assert "Erf" in {n.op_type for n in onnx.load(path).graph.node}
    twin = onnx2snn.import_onnx(path)
    assert [type(m).__name__ for m in twin.modules()].count("GELU") == 1
    assert "erf" not in twin.code
    assert compare(twin, path) <= TOL


def test_dynamo_adaptive_pool_at_non_divisible_sizes(onnx_dir):
    """torch's dynamo exporter writes AdaptiveAvgPool2d with uneven windows as GatherND / Where
    arithmetic (TorchScript cannot export it): exact, any batch, and linear for the analysis."""
    from onnx2snn.graph.analysis import analyze

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d((3, 5)),
                            torch.nn.Flatten(), torch.nn.Linear(60, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    path = str(onnx_dir / "adaptive_dynamo.onnx")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx2snn.export_onnx(m, torch.randn(1, 3, 9, 9), path, dynamo=True, opset=18)
    assert "GatherND" in {n.op_type for n in onnx.load(path).graph.node}
    twin = onnx2snn.import_onnx(path)
    assert compare(twin, path, batch=3) <= TOL
    assert analyze(twin).non_convertible == {}


@pytest.mark.parametrize("name", ["convnext", "swin"])
def test_dynamo_dynamic_batch_twin_takes_any_batch(onnx_dir, name):
    """torch's dynamo exporter writes the as_strided after ConvNeXt's / Swin's global pool as a
    Gather whose indices are Range(batch) * stride + offsets: the twin computes them from its
    input's batch (exact at any batch, not tied to the export batch), and the LayerNormalization
    behind it, whose shape ONNX inference leaves open, imports."""
    import warnings

    model = _tv_small(name)
    path = str(onnx_dir / f"tv_{name}_dynamo_dynamic.onnx")
    with warnings.catch_warnings():  # batch 2: torch.export specializes a batch-1 example to 1
        warnings.simplefilter("ignore")
        onnx2snn.export_onnx(model, torch.randn(2, 3, 32, 32), path, opset=18, dynamo=True)
    proto = onnx.load(path)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the file's batch is dynamic
    assert {"Range", "Gather"} <= {n.op_type for n in proto.graph.node}
    twin = onnx2snn.import_onnx(path)
    assert twin.onnx_info.batch_flexible
    assert compare(twin, path, batch=3) <= TOL
    assert compare(twin, path, batch=1, seed=2) <= TOL


def _batch_range_gather(tail: str) -> onnx.ModelProto:
    """x (B, 4, 3, 3) -> mean over H, W -> flat (4B) -> Gather at Range(B) * 4 + arange(4): the
    as_strided pattern of the dynamo exporter, by hand. tail "ln": LayerNormalization over the
    channels (shape inference cannot size it) and a reshape to (Shape[0], -1); tail "relu": a
    ReLU and a weighted layer after the gather (the index arithmetic then feeds the spiking core)."""
    h, TP = onnx.helper, onnx.TensorProto
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in {
        "axes_hw": np.array([2, 3], np.int64), "flat": np.array([-1], np.int64),
        "zero": np.array(0, np.int64), "one": np.array(1, np.int64), "four": np.array(4, np.int64),
        "axes_123": np.array([1, 2, 3], np.int64), "chan": np.arange(4, dtype=np.int64).reshape(1, 4, 1, 1),
        "gamma": rng.normal(1, 0.2, 4).astype(np.float32), "beta": rng.normal(0, 0.2, 4).astype(np.float32),
        "minus1": np.array([-1], np.int64), "to2d": np.array([-1, 4], np.int64),
        "w": rng.normal(0, 0.5, (4, 3)).astype(np.float32)}.items()]
    nodes = [h.make_node("Relu", ["x"], ["r"]),
             h.make_node("ReduceMean", ["r", "axes_hw"], ["m"], keepdims=1),
             h.make_node("Reshape", ["m", "flat"], ["f"]),
             h.make_node("Shape", ["x"], ["s"], start=0, end=1),
             h.make_node("Squeeze", ["s"], ["b"]),
             h.make_node("Range", ["zero", "b", "one"], ["i"]),
             h.make_node("Mul", ["i", "four"], ["o"]),
             h.make_node("Unsqueeze", ["o", "axes_123"], ["o4"]),
             h.make_node("Add", ["o4", "chan"], ["idx"]),
             h.make_node("Gather", ["f", "idx"], ["g"], axis=0)]
    if tail == "ln":
        nodes += [h.make_node("Transpose", ["g"], ["t"], perm=[0, 2, 3, 1]),
                  h.make_node("LayerNormalization", ["t", "gamma", "beta"], ["n"], axis=-1, epsilon=1e-5),
                  h.make_node("Shape", ["n"], ["ns"], start=0, end=1),
                  h.make_node("Concat", ["ns", "minus1"], ["target"], axis=0),
                  h.make_node("Reshape", ["n", "target"], ["y"])]
    else:
        nodes += [h.make_node("Relu", ["g"], ["gr"]), h.make_node("Reshape", ["gr", "to2d"], ["g2"]),
                  h.make_node("MatMul", ["g2", "w"], ["y"])]
    graph = h.make_graph(nodes, "batch_range_gather", [h.make_tensor_value_info("x", TP.FLOAT, ["B", 4, 3, 3])],
                         [h.make_tensor_value_info("y", TP.FLOAT, ["B", 4 if tail == "ln" else 3])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


@pytest.mark.parametrize("tail", ["ln", "relu"])
def test_gather_at_batch_range_follows_the_batch(tmp_path, tail):
    from onnx2snn.graph.analysis import analyze

    path = str(tmp_path / f"range_gather_{tail}.onnx")
    onnx.save(_batch_range_gather(tail), path)
    twin = onnx2snn.import_onnx(path)
    assert twin.onnx_info.batch_flexible
    assert compare(twin, path, batch=3) <= TOL
    assert compare(twin, path, batch=1, seed=2) <= TOL
    a = analyze(twin)
    if tail == "relu":  # the index arithmetic is data-independent: no blocker, computed with the core
        assert a.non_convertible == {}
        shape_node = next(n for n in a.nodes if n.op == "shape_of")
        assert shape_node.role == "constant" and shape_node.part == "core"

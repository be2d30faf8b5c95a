"""Reading ONNX models and running them with onnxruntime, the reference.

All file handling sits here so that every entry point reports a bad file the same way.
onnxruntime is always run with its ``Pad_Fusion`` optimization disabled: it fuses a Pad
into a following MaxPool with zero padding, which is wrong (MaxPool pads with -inf).
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import DynamicShapeError, InvalidModelError

DISABLED_ORT_OPTIMIZERS = ["Pad_Fusion"]


def load_model(model: "str | os.PathLike | onnx.ModelProto | bytes") -> onnx.ModelProto:
    """Return a checked ModelProto from a path, bytes or a ModelProto."""
    checked = False
    if isinstance(model, onnx.ModelProto):
        proto = model
        where = "the given ModelProto"
    elif isinstance(model, (bytes, bytearray)):
        proto = _parse(bytes(model), "the given bytes")
        where = "the given bytes"
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        where = path
        if not os.path.isfile(path):
            raise InvalidModelError(f"{path}: no such file")
        with open(path, "rb") as f:
            data = f.read()
        proto = _parse(data, path)
        if _uses_external_data(proto):
            _check(path, where)  # from the path: the checker reads the weights where they are (> 2 GB)
            checked = True
            try:
                onnx.load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
            except Exception as e:  # noqa: BLE001 - reported with the file name
                raise InvalidModelError(f"{path}: cannot read the external weight data: {e}") from None
    else:
        raise InvalidModelError(
            f"expected an ONNX file path, bytes or onnx.ModelProto, got {type(model).__name__}")
    if len(proto.graph.node) == 0 and len(proto.graph.output) == 0:
        raise InvalidModelError(f"{where}: not an ONNX model (the graph is empty)")
    if not checked:
        _check(proto, where)
    return proto


def _check(model: "str | onnx.ModelProto", where: str) -> None:
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidModelError(f"{where}: the ONNX checker rejects the model: {msg}") from None


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError or RuntimeWarning types
        raise InvalidModelError(
            f"{where}: not a readable ONNX file (protobuf parse failed; the file is truncated "
            "or is not ONNX). Re-export it, e.g. with onnx2snn.export_onnx(model, x, path).") from None
    if not proto.HasField("graph"):
        raise InvalidModelError(f"{where}: not an ONNX model (no graph in the file)")
    return proto


def _uses_external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs of the graph (initializers listed as inputs are left out)."""
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def input_dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    """Dims of a value: ints where static, the symbol (or None) where dynamic."""
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def fix_input_shapes(proto: onnx.ModelProto,
                     input_shape: "Sequence[int] | Mapping[str, Sequence[int]] | None",
                     symbolic_batch: bool = False) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """Copy of the model whose inputs have static shapes, and those shapes.

    A dynamic batch dim (dim 0) becomes 1 (with ``symbolic_batch`` it stays a symbol,
    ``batch``, in the returned model; the shapes say 1). Any other dynamic dim needs
    ``input_shape``.
    """
    inputs = graph_inputs(proto)
    if input_shape is None:
        given: dict[str, Sequence[int]] = {}
    elif isinstance(input_shape, Mapping):
        given = dict(input_shape)
        unknown = set(given) - {i.name for i in inputs}
        if unknown:
            raise DynamicShapeError(
                f"input_shape names inputs the model does not have: {sorted(unknown)}; "
                f"its inputs are {[i.name for i in inputs]}")
    else:
        if len(inputs) != 1:
            raise DynamicShapeError(
                f"the model has {len(inputs)} inputs {[i.name for i in inputs]}: give input_shape "
                "as a dict {input_name: shape}")
        given = {inputs[0].name: tuple(int(d) for d in input_shape)}
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in inputs:
        dims = input_dims(vi)
        if vi.name in given:
            shape = tuple(int(d) for d in given[vi.name])
            if len(shape) != len(dims) and dims:
                raise DynamicShapeError(
                    f"input {vi.name!r} has rank {len(dims)} (dims {dims}) but input_shape "
                    f"{shape} has rank {len(shape)}")
            for k, (a, b) in enumerate(zip(dims, shape)):
                if isinstance(a, int) and a != b and not (k == 0):
                    raise DynamicShapeError(
                        f"input {vi.name!r} has static dim {k} = {a}, but input_shape gives {b}")
            shapes[vi.name] = shape
            continue
        fixed = []
        for k, d in enumerate(dims):
            if isinstance(d, int) and d >= 0:  # 0 is a real size (an empty tensor)
                fixed.append(d)
            elif k == 0:
                fixed.append(1)
            else:
                raise DynamicShapeError(
                    f"input {vi.name!r} has a dynamic dimension {k} ({d!r}; dims {dims}). Pass "
                    f"input_shape=(1, ...) with the size you will run, e.g. "
                    f"import_onnx(path, input_shape={tuple(x if isinstance(x, int) and x > 0 else 1 if j == 0 else 224 for j, x in enumerate(dims))})")
        shapes[vi.name] = tuple(fixed)
    dynamic_batch = {vi.name for vi in inputs if input_dims(vi) and not isinstance(input_dims(vi)[0], int)}
    out = copy.deepcopy(proto)
    for vi in out.graph.input:
        if vi.name in shapes:
            shape = vi.type.tensor_type.shape
            while len(shape.dim):
                shape.dim.pop()
            for k, d in enumerate(shapes[vi.name]):
                if k == 0 and symbolic_batch and vi.name in dynamic_batch:
                    shape.dim.add().dim_param = BATCH
                    continue
                shape.dim.add().dim_value = d
    # value_info from the exporter may hold stale symbolic shapes; shape inference redoes them
    del out.graph.value_info[:]
    return out, shapes


BATCH = "batch"  # the symbol of a dynamic batch dim while the graph is simplified


def at_batch(proto: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """The model with every input's symbolic batch dim set to ``batch`` and shapes inferred."""
    light, weights = _without_weights(proto)
    for vi in light.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_param == BATCH:
            dims[0].dim_value = batch
    del light.graph.value_info[:]
    try:
        light = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"ONNX shape inference failed ({e}); shapes may be missing", stacklevel=3)
    return _with_weights(light, weights)


_LARGE = 4096  # initializers with more elements are weights: simplified around, not through


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and Shape/Gather chains (onnxslim), then infer shapes.

    Large initializers (weights) are taken out while onnxslim works (as graph inputs of
    the same type and shape) and put back after: onnxslim serializes the model many times,
    which costs a minute on a ViT-B with its weights and a second without; and it then
    cannot fuse weights into reshaped forms the twin cannot batch. The importer folds what
    is left on constants with onnx's reference evaluator.
    onnxslim is exact on the graphs we care about; if it fails on an unusual graph we go
    on with the unsimplified one (and say so) rather than fail the import.
    """
    light, weights = _without_weights(proto)
    try:
        import onnxslim

        slim = onnxslim.slim(light)
        if slim is not None:
            light = slim
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"onnxslim could not simplify the graph ({type(e).__name__}: {e}); "
                      "importing it unsimplified", stacklevel=3)
    light = onnx.inliner.inline_local_functions(light) if light.functions else light
    try:
        light = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"ONNX shape inference failed ({e}); shapes may be missing", stacklevel=3)
    return _with_weights(light, weights)


def _without_weights(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    light = onnx.ModelProto()
    light.CopyFrom(proto)
    weights = {}
    keep = []
    for t in light.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        if n > _LARGE and t.data_location != onnx.TensorProto.EXTERNAL:
            weights[t.name] = t
        else:
            keep.append(t)
    if not weights:
        return light, {}
    declared = {i.name for i in light.graph.input}
    big = [light.graph.initializer[k] for k in range(len(light.graph.initializer))
           if light.graph.initializer[k].name in weights]
    weights = {}
    for t in big:
        w = onnx.TensorProto()
        w.CopyFrom(t)
        weights[t.name] = w
    del light.graph.initializer[:]
    light.graph.initializer.extend(keep)
    for name, t in weights.items():
        if name not in declared:
            light.graph.input.append(onnx.helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
    return light, weights


def _with_weights(light: onnx.ModelProto, weights: dict[str, onnx.TensorProto]) -> onnx.ModelProto:
    if not weights:
        return light
    inputs = [i for i in light.graph.input if i.name not in weights]
    kept = [onnx.ValueInfoProto() for _ in inputs]
    for k, i in zip(kept, inputs):
        k.CopyFrom(i)
    del light.graph.input[:]
    light.graph.input.extend(kept)
    light.graph.initializer.extend(weights.values())
    return light


def initializer_arrays(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def opset_version(proto: onnx.ModelProto) -> int:
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def ort_session(model: "str | os.PathLike | onnx.ModelProto", providers: Sequence[str] | None = None):
    """An onnxruntime session (CPU unless providers say otherwise) with Pad_Fusion off."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    try:
        return ort.InferenceSession(src, sess_options=opts,
                                    providers=list(providers or ["CPUExecutionProvider"]),
                                    disabled_optimizers=DISABLED_ORT_OPTIMIZERS)
    except Exception as e:  # noqa: BLE001
        where = "the given model" if isinstance(model, onnx.ModelProto) else os.fspath(model)
        raise InvalidModelError(f"{where}: onnxruntime cannot load it: {str(e).strip()[:500]}") from None


def run_onnxruntime(model, inputs: "np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]",
                    session=None) -> list[np.ndarray]:
    """Run the model in onnxruntime on numpy inputs; returns the list of outputs."""
    sess = session or ort_session(model)
    names = [i.name for i in sess.get_inputs()]
    if isinstance(inputs, Mapping):
        feed = {k: np.asarray(v) for k, v in inputs.items()}
    else:
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        if len(arrays) != len(names):
            raise InvalidModelError(f"the model takes {len(names)} inputs {names}, got {len(arrays)}")
        feed = {n: np.asarray(a) for n, a in zip(names, arrays)}
    return sess.run(None, feed)

"""Export a PyTorch model to ONNX, so PyTorch users take the same path as ONNX users."""

from __future__ import annotations

import os
from typing import Sequence

import onnx
import torch

from . import checks
from .errors import ConfigError, InvalidModelError


def export_onnx(module: torch.nn.Module, example_input: "torch.Tensor | Sequence[torch.Tensor]",
                path: "str | os.PathLike", opset: int = 17, dynamo: bool = False,
                dynamic_batch: bool = True, input_names: Sequence[str] | None = None) -> str:
    """Write ``module`` (in eval mode) to ``path`` as ONNX and return the path.

    The TorchScript-based exporter is the default (stable for CNNs); ``dynamo=True``
    uses torch's newer exporter (needs onnxscript). With ``dynamic_batch`` the batch dim
    is left dynamic so the file runs at any batch size.
    """
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"export_onnx needs a torch.nn.Module, got {type(module).__name__}", "module")
    if isinstance(example_input, torch.Tensor):
        args = (example_input,)
    elif isinstance(example_input, (list, tuple)) and example_input and \
            all(isinstance(a, torch.Tensor) for a in example_input):
        args = tuple(example_input)
    else:
        raise ConfigError("example_input must be a torch.Tensor (a batch of the input shape, e.g. "
                          f"torch.zeros(1, 3, 224, 224)) or a sequence of them, got {type(example_input).__name__}",
                          "example_input")
    path = checks.writable_file("path", path)
    opset = checks.integer("opset", opset, 7, onnx.defs.onnx_opset_version())
    dynamo, dynamic_batch = checks.boolean("dynamo", dynamo), checks.boolean("dynamic_batch", dynamic_batch)
    was_training = module.training
    module.eval()
    names = list(input_names or (["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]))
    try:
        with torch.no_grad():
            out = module(*args)
        n_out = len(out) if isinstance(out, (tuple, list)) else 1
        out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
        kwargs = dict(opset_version=opset, input_names=names, output_names=out_names)
        if dynamo:
            trace = args
            if dynamic_batch:
                batch = torch.export.Dim("batch", min=1)
                kwargs["dynamic_shapes"] = tuple({0: batch} for _ in args)
                # torch.export fixes a dimension of size 1 to 1 (ConvNeXt / Swin then lose the
                # dynamic batch): trace a batch of 2 made of the example
                trace = tuple(a.expand((2,) + tuple(a.shape[1:])).clone() if a.dim() and a.shape[0] == 1 else a
                              for a in args)
            prog = torch.onnx.export(module, trace, dynamo=True, verbose=False, **kwargs)
            prog.save(path)
        else:
            if dynamic_batch:
                kwargs["dynamic_axes"] = {n: {0: "batch"} for n in names + out_names}
            torch.onnx.export(module, args, path, dynamo=False, do_constant_folding=True, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise InvalidModelError(
            f"torch.onnx.export failed for {type(module).__name__}: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    finally:
        module.train(was_training)
    return path


def export_zoo_model(name: str, path: "str | os.PathLike", opset: int = 17, batch: int = 1) -> str:
    """Export zoo model ``name`` (with its committed weights) to ONNX at ``path``."""
    from . import zoo

    name = checks.choice("name", name, list(zoo.PRESETS))
    path = checks.writable_file("path", path)
    batch = checks.integer("batch", batch, 1)
    preset = zoo.get_preset(name)
    model = zoo.build_model(name)
    example = torch.zeros(batch, *preset.input_shape)
    out = export_onnx(model, example, path, opset=opset)
    if preset.decoder == "decode_ultralytics":  # describe it as Ultralytics describes its exports
        from .graph.metadata import set_metadata
        from .zoo.models.yolov8 import STRIDES

        proto = onnx.load(out)
        set_metadata(proto, {"description": f"onnx2snn zoo {name}", "author": "onnx2snn", "task": "detect",
                             "stride": max(STRIDES), "batch": batch, "imgsz": list(preset.input_shape[1:]),
                             "channels": preset.input_shape[0], "end2end": False,
                             "names": {i: str(i) for i in range(preset.num_classes)}})
        onnx.save(proto, out)
    return out

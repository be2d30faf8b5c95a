"""Export a PyTorch model to ONNX, so PyTorch users take the same path as ONNX users."""

from __future__ import annotations

import os
from typing import Sequence

import torch

from .errors import InvalidModelError


def export_onnx(module: torch.nn.Module, example_input: "torch.Tensor | Sequence[torch.Tensor]",
                path: "str | os.PathLike", opset: int = 17, dynamo: bool = False,
                dynamic_batch: bool = True, input_names: Sequence[str] | None = None) -> str:
    """Write ``module`` (in eval mode) to ``path`` as ONNX and return the path.

    The TorchScript-based exporter is the default (stable for CNNs); ``dynamo=True``
    uses torch's newer exporter (needs onnxscript). With ``dynamic_batch`` the batch dim
    is left dynamic so the file runs at any batch size.
    """
    path = os.fspath(path)
    args = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
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
            if dynamic_batch:
                batch = torch.export.Dim("batch", min=1)
                kwargs["dynamic_shapes"] = tuple({0: batch} for _ in args)
            prog = torch.onnx.export(module, args, dynamo=True, verbose=False, **kwargs)
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

    preset = zoo.get_preset(name)
    model = zoo.build_model(name)
    example = torch.zeros(batch, *preset.input_shape)
    return export_onnx(model, example, path, opset=opset)

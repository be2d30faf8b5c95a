"""The reference: onnxruntime running the source ONNX file, and the checks that the
data, the SNN and that file fit together.

Verification compares the SNN with the file it came from, never with our own twin:
a bug in the importer would otherwise hide itself.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnx
import torch

from .. import onnx_io
from ..errors import InvalidModelError, Onnx2SnnError, ShapeError

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


@dataclass
class Reference:
    """An onnxruntime session on the reference model plus what it expects."""

    session: Any
    source: str                       # where the model came from, in words
    input_name: str
    input_dims: list                  # ints where static, None / symbol where dynamic
    input_dtype: type
    output_names: list[str]
    mismatch: str | None = None       # how the reference differs from the SNN's source model, if it does

    @classmethod
    def open(cls, reference: "str | os.PathLike | bytes | onnx.ModelProto | None", snn) -> "Reference":
        """Load ``reference`` (path, bytes, ModelProto; None = the ONNX bytes stored in the
        SNN) and start an onnxruntime session with Pad_Fusion disabled."""
        if reference is None:
            data = getattr(getattr(snn.ann, "onnx_info", None), "onnx_bytes", b"")
            if not data:
                raise Onnx2SnnError("the SNN carries no ONNX file to verify against: pass reference='model.onnx'")
            src = getattr(snn.ann.onnx_info, "source", "") or ""
            source = "the ONNX file stored in the SNN" + (f" (converted from {src})" if src else "")
            proto = onnx_io.load_model(bytes(data))
        else:
            if isinstance(reference, (str, os.PathLike)):
                source = os.fspath(reference)
            elif isinstance(reference, (bytes, bytearray)):
                source = f"ONNX bytes ({len(reference)} B)"
            elif isinstance(reference, onnx.ModelProto):
                source = "an onnx.ModelProto"
            else:
                raise InvalidModelError(f"reference must be an ONNX path, bytes or onnx.ModelProto (or None for the "
                                        f"file stored in the SNN), got {type(reference).__name__}")
            proto = onnx_io.load_model(reference)
        inputs = onnx_io.graph_inputs(proto)
        if len(inputs) != 1:
            raise ShapeError(f"reference {source}: verify supports single-input models; this one has "
                             f"{len(inputs)} inputs {[i.name for i in inputs]}")
        session = onnx_io.ort_session(proto)
        mismatch = None if reference is None else _mismatch(proto, snn)
        ort_in = session.get_inputs()[0]
        dtype = _ORT_DTYPES.get(ort_in.type)
        if dtype is None:
            raise ShapeError(f"reference {source}: its input {ort_in.name!r} has type {ort_in.type}; verify feeds "
                             "float tensors")
        return cls(session=session, source=source, input_name=ort_in.name,
                   input_dims=onnx_io.input_dims(inputs[0]), input_dtype=dtype,
                   output_names=[o.name for o in session.get_outputs()], mismatch=mismatch)

    def describe(self) -> dict:
        import onnxruntime

        return {"source": self.source, "runtime": f"onnxruntime {onnxruntime.__version__}",
                "providers": list(self.session.get_providers()),
                "disabled_optimizers": list(onnx_io.DISABLED_ORT_OPTIMIZERS),
                "input": {self.input_name: [d if isinstance(d, int) else None for d in self.input_dims]},
                "outputs": list(self.output_names),
                **({"warning": self.mismatch} if self.mismatch else {})}

    # -- checks ---------------------------------------------------------------------
    def check_input(self, x: torch.Tensor, snn_shape: Sequence[int] | None) -> None:
        """Raise ShapeError unless a batch ``x`` fits both the SNN and the reference."""
        sample = tuple(x.shape[1:])
        if snn_shape is not None and sample != tuple(snn_shape[1:]):
            raise ShapeError(
                f"the data's samples have shape {sample}, but the SNN was converted for input "
                f"{tuple(snn_shape[1:])} (per sample). Feed data of that shape (resize / preprocess it), or "
                "convert the model with input_shape= matching your data.")
        dims = self.input_dims
        bad = len(dims) != x.dim() or any(isinstance(d, int) and d > 0 and d != s
                                          for k, (d, s) in enumerate(zip(dims, x.shape)) if k > 0)
        if bad:
            shown = ["batch" if k == 0 else (d if isinstance(d, int) else "?") for k, d in enumerate(dims)]
            raise ShapeError(
                f"reference {self.source} expects input {self.input_name!r} of shape {shown}, but the data "
                f"(which fits the SNN) has shape {list(x.shape)}: the reference is not the model this SNN was "
                "converted from. Pass the source ONNX file as reference= (or leave it out to use the file "
                "stored in the SNN).")

    def check_outputs(self, ref: Sequence[np.ndarray], snn: Sequence[torch.Tensor]) -> None:
        """Raise ShapeError unless the reference and the SNN give outputs of the same shapes."""
        rs = [tuple(a.shape) for a in ref]
        ss = [tuple(t.shape) for t in snn]
        if rs != ss:
            raise ShapeError(
                f"reference {self.source} gives outputs of shapes {rs}, the SNN gives {ss}: they are not "
                "the same model. Pass the ONNX file the SNN was converted from as reference=.")

    # -- running --------------------------------------------------------------------
    def run(self, x: torch.Tensor) -> list[np.ndarray]:
        """Outputs of the reference on a batch (CPU numpy); a file with a fixed batch size
        runs in chunks of that size."""
        arr = x.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        fixed = self.input_dims[0] if self.input_dims and isinstance(self.input_dims[0], int) and \
            self.input_dims[0] > 0 else None
        step = fixed or len(arr)
        if len(arr) % step:
            raise ShapeError(f"reference {self.source} has a fixed batch size {fixed}; use a batch_size that is a "
                             f"multiple of it (got a batch of {len(arr)})")
        chunks = []
        for i in range(0, len(arr), step):
            try:
                chunks.append(self.session.run(None, {self.input_name: arr[i:i + step]}))
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
                raise ShapeError(f"onnxruntime failed to run reference {self.source} on a batch of shape "
                                 f"{list(arr[i:i + step].shape)}: {str(e).strip()[:300]}") from None
        return [np.concatenate([c[k] for c in chunks]).astype(np.float32, copy=False)
                for k in range(len(chunks[0]))]


def fingerprint(proto: onnx.ModelProto) -> tuple:
    """What makes two ONNX files the same network: the op sequence and every weight's
    bytes (names, doc strings and producer are left out)."""
    digest = []
    for t in proto.graph.initializer:
        digest.append(hashlib.sha1(onnx.numpy_helper.to_array(t).tobytes()).hexdigest())
    for n in proto.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                digest.append(hashlib.sha1(onnx.numpy_helper.to_array(a.t).tobytes()).hexdigest())
    return tuple(n.op_type for n in proto.graph.node), tuple(sorted(digest))


def _mismatch(proto: onnx.ModelProto, snn) -> str | None:
    """None when ``proto`` is the ONNX model the SNN was converted from, else what differs."""
    stored = getattr(getattr(snn.ann, "onnx_info", None), "onnx_bytes", b"")
    if not stored or proto.SerializeToString() == bytes(stored):
        return None
    ops, weights = fingerprint(proto)
    ops0, weights0 = fingerprint(onnx_io.load_model(bytes(stored)))
    if ops == ops0 and weights == weights0:
        return None
    what = "its weights differ" if ops == ops0 else "its graph differs"
    return (f"the reference is not the ONNX model this SNN was converted from ({what}): the report compares "
            "against another network. Leave out reference= to use the source stored in the SNN")


__all__ = ["Reference", "fingerprint"]

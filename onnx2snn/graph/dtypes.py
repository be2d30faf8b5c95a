"""ONNX tensor types and the torch dtypes a twin computes them in.

A twin computes in torch, so an ONNX type torch has no arithmetic for (UINT16/32/64, the
4- and 2-bit types, strings, complex) is refused with the node that uses it, instead of
failing inside torch at run time. The float8 types are storage types in torch: only
``Cast`` / ``CastLike`` (and pass-throughs) may take or make them.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch

TP = onnx.TensorProto

# ONNX types a twin computes with
COMPUTE = {
    TP.FLOAT: torch.float32, TP.DOUBLE: torch.float64, TP.FLOAT16: torch.float16, TP.BFLOAT16: torch.bfloat16,
    TP.INT64: torch.int64, TP.INT32: torch.int32, TP.INT16: torch.int16, TP.INT8: torch.int8,
    TP.UINT8: torch.uint8, TP.BOOL: torch.bool,
}
# storage-only types: a Cast may produce or read them
FLOAT8 = {
    TP.FLOAT8E4M3FN: torch.float8_e4m3fn, TP.FLOAT8E5M2: torch.float8_e5m2,
    TP.FLOAT8E4M3FNUZ: torch.float8_e4m3fnuz, TP.FLOAT8E5M2FNUZ: torch.float8_e5m2fnuz,
}
TORCH = {**COMPUTE, **FLOAT8}
INTEGER = {TP.INT8, TP.INT16, TP.INT32, TP.INT64, TP.UINT8, TP.UINT16, TP.UINT32, TP.UINT64}
FLOATING = {TP.FLOAT, TP.DOUBLE, TP.FLOAT16, TP.BFLOAT16} | set(FLOAT8)

# ml_dtypes arrays (what onnx.numpy_helper returns for these types) reach torch through
# an integer view of the same width
_VIEWS = {"bfloat16": (np.int16, torch.bfloat16), "float8_e4m3fn": (np.int8, torch.float8_e4m3fn),
          "float8_e5m2": (np.int8, torch.float8_e5m2), "float8_e4m3fnuz": (np.int8, torch.float8_e4m3fnuz),
          "float8_e5m2fnuz": (np.int8, torch.float8_e5m2fnuz)}


def name(elem_type: int) -> str:
    try:
        return TP.DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"


def why_not(elem_type: int | None, float8_ok: bool = False) -> str:
    """'' when a twin can hold tensors of this ONNX type, else the reason it cannot."""
    if elem_type is None or elem_type == TP.UNDEFINED or elem_type in COMPUTE:
        return ""
    if elem_type in FLOAT8:
        return "" if float8_ok else (f"{name(elem_type)} tensors are supported by Cast only (torch has no "
                                     "arithmetic for them)")
    if elem_type in (TP.UINT16, TP.UINT32, TP.UINT64):
        return f"{name(elem_type)} tensors are not supported (torch has no arithmetic for them)"
    return f"{name(elem_type)} tensors are not supported (torch has no such type)"


def onnx_type_of(arr: np.ndarray) -> int:
    """The ONNX type of a numpy (or ml_dtypes) array (STRING for text and objects)."""
    if arr.dtype.kind in "OUS":
        return TP.STRING
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
    except (KeyError, ValueError, TypeError):
        return TP.UNDEFINED


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """A torch tensor holding the numpy (or ml_dtypes) array ``arr`` with the same type.

    Raises ``TypeError`` for types torch lacks (the importer turns it into a refusal)."""
    arr = np.array(arr, copy=True, order="C")  # (np.ascontiguousarray makes 0-d arrays 1-d)
    view = _VIEWS.get(str(arr.dtype))
    if view is not None:
        return torch.from_numpy(arr.view(view[0])).view(view[1])
    if arr.dtype.kind in "OUS" or arr.dtype in (np.uint16, np.uint32, np.uint64) or arr.dtype.kind == "c":
        raise TypeError(f"numpy type {arr.dtype} has no torch counterpart the twin can compute with")
    try:
        return torch.from_numpy(arr)
    except TypeError as e:
        raise TypeError(f"numpy type {arr.dtype} has no torch counterpart: {e}") from None


def onnx_to_numpy(elem_type: int | None):
    """The numpy dtype of an ONNX type (float32 when unknown)."""
    if elem_type is None:
        return np.float32
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type)

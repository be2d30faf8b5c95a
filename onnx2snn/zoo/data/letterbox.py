"""Moved to :mod:`onnx2snn.data.letterbox`; re-exported here for code that imports it from the zoo."""
from ...data.letterbox import letterbox_geometry  # noqa: F401

__all__ = ["letterbox_geometry"]

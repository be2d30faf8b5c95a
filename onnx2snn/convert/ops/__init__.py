"""ONNX op converters, one module per op family; importing registers them."""

from . import activations, elementwise, layers, pooling, resize, tensor_ops  # noqa: F401

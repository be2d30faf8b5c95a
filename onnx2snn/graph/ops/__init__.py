"""ONNX op converters, one module per op family; importing registers them."""

import importlib

for _family in ("activations", "elementwise", "layers", "pooling", "resize", "tensor_ops"):
    importlib.import_module(f".{_family}", __name__)

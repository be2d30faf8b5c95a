import os
import sys
import warnings

# idle OpenMP threads sleep instead of spinning: two xdist workers share two cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def exported(onnx_dir):
    """export(name, opset, dynamo) -> path of that model's ONNX file (cached per session)."""
    import graphs

    import onnx2snn

    cache = {}

    def export(name: str, opset: int = 17, dynamo: bool = False) -> str:
        key = (name, opset, dynamo)
        if key not in cache:
            model, shape = graphs.build(name)
            path = str(onnx_dir / f"{name}_{opset}_{'dynamo' if dynamo else 'ts'}.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx2snn.export_onnx(model, torch.randn(*shape), path, opset=opset, dynamo=dynamo)
            cache[key] = path
        return cache[key]

    return export


@pytest.fixture(scope="session")
def digits():
    """Real handwritten digits (16x16): train x, y and test x, y as tensors."""
    from onnx2snn import zoo

    xtr, ytr = (torch.as_tensor(a) for a in zoo.load_digits(16, "train"))
    xte, yte = (torch.as_tensor(a) for a in zoo.load_digits(16, "test"))
    return xtr, ytr, xte, yte

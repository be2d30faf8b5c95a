"""onnx2snn: convert trained ANNs (ONNX files, PyTorch models) into spiking neural networks.

    twin = onnx2snn.import_onnx("model.onnx")          # exact PyTorch twin (torch.fx)
    snn = onnx2snn.convert("model.onnx", calib_data, timesteps=32)
    report = onnx2snn.verify(snn, reference="model.onnx", data=test_data)
"""

from .convert.importer import import_onnx
from .errors import (DataError, DynamicShapeError, InvalidModelError, NonSpikingActivationError,
                     Onnx2SnnError, ShapeError, UnsupportedOpError)
from .export import export_onnx, export_zoo_model
from .api import calibrate_thresholds, convert, replace_activations
from .convert.spiking import SpikingNetwork, load
from .convert.fold import fold_thresholds
from .calibration.finetune import finetune
from .calibration.correction import calibrate

from . import zoo  # noqa: E402
from .verify import VerifyReport, verify

__version__ = "0.1.0"

__all__ = [
    "import_onnx", "export_onnx", "export_zoo_model", "convert", "load", "SpikingNetwork", "replace_activations",
    "calibrate_thresholds", "fold_thresholds", "finetune", "calibrate",
    "Onnx2SnnError", "InvalidModelError", "UnsupportedOpError", "DynamicShapeError", "ShapeError",
    "NonSpikingActivationError", "DataError", "zoo", "verify", "VerifyReport",
]

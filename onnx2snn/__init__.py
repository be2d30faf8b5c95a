"""onnx2snn: convert trained ANNs (ONNX files, PyTorch models) into spiking neural networks.

    twin = onnx2snn.import_onnx("model.onnx")          # exact PyTorch twin (torch.fx)
    snn = onnx2snn.convert("model.onnx", calib_data, timesteps=32)   # or config=ConvertConfig(...)
    report = onnx2snn.verify(snn, reference="model.onnx", data=test_data)

The public names load on first use (PEP 562), so that ``import onnx2snn`` and the command
line's ``--help`` do not pay for importing torch.

Packages, in the order data flows: ``graph`` (ONNX -> torch.fx twin, its analysis),
``calibration`` (observers, thresholds, fine-tuning, bias/potential correction: ``correct``), ``snn``
(neurons, the spiking network, folding, save/load), ``verification`` (onnxruntime
reference, metrics, report), ``deploy`` (NIR export / import), ``zoo`` (models and data), ``cli``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute); attribute None: the module itself
_EXPORTS = {
    "import_onnx": (".graph.importer", "import_onnx"),
    "export_onnx": (".export", "export_onnx"),
    "export_zoo_model": (".export", "export_zoo_model"),
    "convert": (".api", "convert"),
    "replace_activations": (".graph.source", "replace_activations"),
    "calibrate_thresholds": (".calibration.thresholds", "calibrate_thresholds"),
    "SpikingNetwork": (".snn.network", "SpikingNetwork"),
    "load": (".snn.serialize", "load"),
    "fold_thresholds": (".snn.fold", "fold_thresholds"),
    "finetune": (".calibration.finetune", "finetune"),
    "correct": (".calibration.correction", "correct"),
    "calibrate": (".calibration.correction", "calibrate"),  # deprecated name of correct
    "ConvertConfig": (".config", "ConvertConfig"),
    "SearchConfig": (".config", "SearchConfig"),
    "FinetuneConfig": (".config", "FinetuneConfig"),
    "settings": (".settings", None),
    "verify": (".verification.api", "verify"),
    "VerifyReport": (".verification.report", "VerifyReport"),
    "export_nir": (".deploy.nir_export", "export_nir"),
    "import_nir": (".deploy.nir_import", "import_nir"),
    "replace_maxpool": (".deploy.onnx_rewrite", "replace_maxpool"),
    "NIRExportError": (".deploy.nir_export", "NIRExportError"),
    "zoo": (".zoo", None),
    "Onnx2SnnError": (".errors", "Onnx2SnnError"),
    "InvalidModelError": (".errors", "InvalidModelError"),
    "UnsupportedOpError": (".errors", "UnsupportedOpError"),
    "DynamicShapeError": (".errors", "DynamicShapeError"),
    "ShapeError": (".errors", "ShapeError"),
    "NonSpikingActivationError": (".errors", "NonSpikingActivationError"),
    "DataError": (".errors", "DataError"),
    "ConfigError": (".errors", "ConfigError"),
    "LayoutError": (".errors", "LayoutError"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'onnx2snn' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

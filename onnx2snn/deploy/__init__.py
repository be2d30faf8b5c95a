"""Deployment: the spiking network in formats that neuromorphic toolkits and hardware read.

- :func:`export_nir` writes the binary-spike (folded) form as a NIR graph (HDF5), the
  format SpiNNaker2, Loihi 2 (Lava), Speck (sinabs), Xylo (Rockpool), snnTorch, Norse and
  SpikingJelly exchange networks in; what NIR cannot express is refused in one error.
- :func:`import_nir` reads a NIR file back into a runnable PyTorch network with NIR's
  semantics and our documented metadata (reset by subtraction), which ``onnx2snn.verify``
  accepts as the SNN.
- :func:`replace_maxpool` rewrites an ONNX file's max-pools as average pools (NIR has no
  max-pool), to be fine-tuned before conversion.
"""

from .nir_export import NIRExportError, export_nir
from .nir_import import NIRNetwork, import_nir
from .onnx_rewrite import replace_maxpool

__all__ = ["export_nir", "import_nir", "NIRNetwork", "NIRExportError", "replace_maxpool"]

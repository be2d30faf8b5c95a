"""Moved to :mod:`onnx2snn.data.batches`; re-exported here for code that imports it from calibration."""
from ..data.batches import *  # noqa: F401,F403
from ..data.batches import __all__  # noqa: F401

"""Moved to :mod:`onnx2snn.data.evaluation`; re-exported here for code that imports it from verification."""
from ..data.evaluation import *  # noqa: F401,F403
from ..data.evaluation import __all__  # noqa: F401

"""Moved to :mod:`onnx2snn.data.loaders`; re-exported here for code that imports it from the zoo."""
from ...data.loaders import *  # noqa: F401,F403
from ...data.loaders import __all__  # noqa: F401

"""Calibration: sample data in, per-layer and per-channel activation statistics out."""

from ..data.batches import iter_batches
from .observers import ActivationObserver, calibrate_twin

__all__ = ["iter_batches", "ActivationObserver", "calibrate_twin"]

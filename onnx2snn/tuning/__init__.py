"""Settings chosen for the user: a search over conversion settings (threshold method and its
parameter, levels, v_init, signed or not, T) against a target share of the ANN's quality on
held-out calibration data, at the least energy or the smallest T (``convert(..., target=0.99)``).

Modules: ``validation`` (the held-out part, quality vs the ANN, energy as verify counts it),
``search`` (candidates, order, early stopping, choice), ``report`` (TuneReport: frontier,
markdown, JSON, plot).
"""

from .report import TuneReport
from .search import OBJECTIVES, check_objective, check_options, check_target, search

__all__ = ["search", "TuneReport", "OBJECTIVES", "check_target", "check_objective", "check_options"]

"""The energy model: operation kinds, one cost table per arithmetic, and energy from counts.

Every piece of work verify counts (ANN and SNN, by the same rules) is one of :data:`KINDS`:

- ``ac``: an accumulate into a weight layer's accumulator: one event x one synapse, a bias add;
- ``mac``: a multiply-accumulate (a weight layer on an analog input, a matrix product);
- ``add`` / ``mul`` / ``cmp``: float element-wise work (a compare, max or ReLU counts as an add);
- ``exp`` (exp, log, erf, tanh's core), ``div`` (divide, reciprocal), ``sqrt`` (sqrt, rsqrt):
  charged as 4 multiplies + 4 adds each (a degree-4 polynomial or two Newton steps: the 45 nm
  table has no figure for them);
- ``neuron``: one neuron update (integrate, compare, reset: 3 adds) per neuron per step.

Costs (pJ, 45 nm, Horowitz ISSCC 2014): 32-bit float add 0.9, multiply 3.7; 32-bit integer add
0.1; 8-bit integer multiply 0.2, add 0.03. Two tables, the same rules:

- :data:`FP32`: the field's convention, everything in 32-bit float (SNN vs FP32 ANN);
- :data:`INT8`: what one would deploy: weights in 8 bits, integer accumulators (32-bit adds), so
  ``ac`` 0.1, ``mac`` 0.2 + 0.1, integer neuron potentials (3 x 0.1); the float work of
  nonlinear ops (softmax, norms, SiLU, time-averaged ops) stays FP32 on both sides (integer
  kernels for them are model-specific).
"""

from __future__ import annotations

import math
from typing import Mapping

from ..errors import EnergyModelError

KINDS = ("ac", "mac", "add", "mul", "cmp", "exp", "div", "sqrt", "neuron")
SPIKING_KINDS = ("ac", "neuron")          # the work of events and neurons
WEIGHT_KINDS = ("ac", "mac")              # the work of weight layers
FLOAT_KINDS = ("add", "mul", "cmp", "exp", "div", "sqrt")  # element-wise float work

F32_ADD, F32_MUL, I32_ADD, I8_MUL, I8_ADD = 0.9, 3.7, 0.1, 0.2, 0.03
_TRANSCENDENTAL = 4 * F32_MUL + 4 * F32_ADD  # exp / divide / sqrt: 4 multiplies + 4 adds

FP32 = {"ac": F32_ADD, "mac": F32_MUL + F32_ADD, "add": F32_ADD, "mul": F32_MUL, "cmp": F32_ADD,
        "exp": _TRANSCENDENTAL, "div": _TRANSCENDENTAL, "sqrt": _TRANSCENDENTAL, "neuron": 3 * F32_ADD}
INT8 = dict(FP32, ac=I32_ADD, mac=I8_MUL + I32_ADD, neuron=3 * I32_ADD)

SOURCE = ("Horowitz, 'Computing's energy problem', ISSCC 2014, 45 nm: 32-bit float add 0.9 pJ, multiply 3.7 pJ; "
          "32-bit integer add 0.1 pJ; 8-bit integer multiply 0.2 pJ, add 0.03 pJ. exp / divide / sqrt: "
          "4 multiplies + 4 adds each (not in the table). Neuron update: integrate, compare, reset = 3 adds.")

RULES = {
    "ac": "one per event per synapse it reaches (a k-spike is k events; binary-weighted: popcount(k)), counted "
          "where the events are consumed, through reshape, transpose, concat, split, slice, pad, pooling and "
          "upsampling (routing, folded into the synapses); plus one per output element and step for a bias",
    "mac": "a weight layer on an analog input: one per synapse (padding taps excluded) each time it runs: once "
           "before the first neuron (static prefix), every step inside the core, once for a readout on "
           "averages; every multiply-add of a matrix product in a time-averaged op or the ANN",
    "add": "element-wise adds and subtractions of analog tensors (residual adds), reductions (one per input "
           "element), the running sums and differences of time-averaged and max-pool ops",
    "mul": "element-wise products and scalings of analog tensors, the 1/t and t of time-averaged ops",
    "cmp": "compares, max / min, ReLU and clip in the ANN, max-pool windows",
    "exp": "exp, log, erf, tanh, sigmoid's exp, softmax's exp (one per element)",
    "div": "divisions and reciprocals (softmax's normalisation, sigmoid)",
    "sqrt": "square roots (norms: one per normalised row)",
    "neuron": "every neuron (re-encoders included) at every step, whether it fires or not",
}


def check_costs(costs: Mapping[str, float], name: str = "cost table") -> dict[str, float]:
    """The table as a dict, refusing a missing, unknown, negative or non-finite entry."""
    if not isinstance(costs, Mapping):
        raise EnergyModelError(f"{name}: expected a mapping kind -> pJ, got {type(costs).__name__}")
    missing = [k for k in KINDS if k not in costs]
    unknown = [k for k in costs if k not in KINDS]
    if missing or unknown:
        raise EnergyModelError(f"{name}: " + "; ".join(
            ([f"missing entries {missing}"] if missing else []) + ([f"unknown kinds {unknown}"] if unknown else []))
            + f" (kinds: {list(KINDS)})")
    out = {}
    for k in KINDS:
        v = costs[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise EnergyModelError(f"{name}: the cost of {k!r} must be a finite number >= 0 pJ, got {v!r}")
        out[k] = float(v)
    return out


def check_counts(counts: Mapping[str, float], where: str = "count") -> None:
    """Refuse an op kind the cost tables do not know (it would be charged nothing)."""
    unknown = [k for k in counts if k not in KINDS]
    if unknown:
        raise EnergyModelError(f"{where}: unknown op kind(s) {unknown}; the energy model knows {list(KINDS)}")


def energy_pj(counts: Mapping[str, float], costs: Mapping[str, float] = FP32) -> float:
    """Energy of ``counts`` (kind -> operations) under a cost table (kind -> pJ)."""
    check_counts(counts)
    costs = check_costs(costs)
    return float(sum(costs[k] * float(v) for k, v in counts.items()))


def by_kind_pj(counts: Mapping[str, float], costs: Mapping[str, float] = FP32) -> dict[str, float]:
    """Energy per kind (pJ)."""
    check_counts(counts)
    costs = check_costs(costs)
    return {k: costs[k] * float(counts.get(k, 0.0)) for k in KINDS}


def add_counts(into: dict, counts: Mapping[str, float], scale: float = 1.0) -> dict:
    """``into += scale * counts``, kind by kind (checked); returns ``into``."""
    check_counts(counts)
    for k, v in counts.items():
        into[k] = into.get(k, 0.0) + scale * float(v)
    return into


def zero_counts() -> dict[str, float]:
    return {k: 0.0 for k in KINDS}


def float_share(counts: Mapping[str, float], costs: Mapping[str, float] = FP32) -> float:
    """Share of the energy spent on element-wise float work (FLOAT_KINDS)."""
    parts = by_kind_pj(counts, costs)
    total = sum(parts.values())
    return sum(parts[k] for k in FLOAT_KINDS) / total if total else 0.0


def rules_table() -> str:
    """Markdown: one row per kind, its rule and its cost in both tables (the docs' table)."""
    rows = ["| kind | counted | FP32 pJ | INT8 deploy pJ |", "|---|---|---|---|"]
    for k in KINDS:
        rows.append(f"| `{k}` | {RULES[k]} | {FP32[k]:.4g} | {INT8[k]:.4g} |")
    return "\n".join(rows)


__all__ = ["KINDS", "FLOAT_KINDS", "SPIKING_KINDS", "WEIGHT_KINDS", "FP32", "INT8", "SOURCE", "RULES", "check_costs",
           "check_counts", "energy_pj", "by_kind_pj", "add_counts", "zero_counts", "float_share", "rules_table"]

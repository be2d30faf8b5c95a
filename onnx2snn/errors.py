"""Error classes of onnx2snn.

Every failure a user can cause (a bad file, an op we cannot convert, a missing shape,
bad calibration data) raises a subclass of :class:`Onnx2SnnError` whose message names
the problem and the way out, instead of a traceback from deep inside onnx or torch.
"""

from __future__ import annotations


class Onnx2SnnError(Exception):
    """Base class of every error onnx2snn raises on purpose."""


class InvalidModelError(Onnx2SnnError):
    """The file or object is not a readable, valid ONNX model."""


class UnsupportedOpError(Onnx2SnnError):
    """The graph holds ONNX ops (or attribute values) the importer cannot convert.

    ``ops`` maps each offending op type to the names of the nodes that use it, so that
    one error lists every problem at once.
    """

    def __init__(self, ops: dict[str, list[str]], details: dict[str, str] | None = None):
        self.ops = {k: list(v) for k, v in ops.items()}
        self.details = dict(details or {})
        lines = []
        for op, nodes in sorted(self.ops.items()):
            shown = ", ".join(repr(n) for n in nodes[:8])
            more = f" and {len(nodes) - 8} more" if len(nodes) > 8 else ""
            why = f": {self.details[op]}" if op in self.details else ""
            lines.append(f"  - {op} ({len(nodes)} node{'s' if len(nodes) != 1 else ''}: {shown}{more}){why}")
        super().__init__(
            "the ONNX graph uses ops that onnx2snn cannot convert:\n" + "\n".join(lines) +
            "\nRe-export the model without them (e.g. replace the layer in PyTorch), or open an "
            "issue with the op name and a small model that uses it."
        )


class DynamicShapeError(Onnx2SnnError):
    """An input has a symbolic (dynamic) non-batch dimension and no shape was given."""


class ShapeError(Onnx2SnnError):
    """A tensor has a shape the operation cannot take."""


class NonSpikingActivationError(Onnx2SnnError):
    """The spiking part of the network holds activations with no spiking equivalent (SiLU,
    GELU, ...) and/or other ops with no spiking form (products of two computed tensors such
    as squeeze-excitation gates, LayerNorm, ...). One error names all of them.

    ``nodes``: activation kind -> node names; ``ops``: op -> node names; ``reasons``: op -> why.
    """

    def __init__(self, nodes: dict[str, list[str]], ops: dict[str, list[str]] | None = None,
                 reasons: dict[str, str] | None = None):
        self.nodes = {k: list(v) for k, v in nodes.items()}
        self.ops = {k: list(v) for k, v in (ops or {}).items()}
        self.reasons = dict(reasons or {})

        def listing(groups):
            return ", ".join(f"{k} ({len(v)}: {', '.join(v[:5])}{' ...' if len(v) > 5 else ''})"
                             for k, v in sorted(groups.items()))

        parts = []
        if self.nodes:
            mapping = ", ".join(f'"{k}": "ReLU"' for k in sorted(self.nodes))
            parts.append(
                f"these activations have no spiking equivalent: {listing(self.nodes)}. "
                f"Pass replace_activations={{{mapping}}} to convert them to ReLU neurons; the "
                "network then computes something else than it was trained for, so fine-tune it "
                "afterwards (onnx2snn.finetune) before trusting its accuracy.")
        if self.ops:
            why = "; ".join(f"{k}: {self.reasons[k]}" for k in sorted(self.ops) if k in self.reasons)
            parts.append(
                f"{'Also, t' if self.nodes else 'T'}hese ops inside the spiking part have no spiking form "
                f"(replace_activations cannot help): {listing(self.ops)}{' (' + why + ')' if why else ''}. "
                "Remove them from the model before export (e.g. the squeeze-excitation blocks of "
                "MobileNetV3 / EfficientNet) or move them after the last activation.")
        super().__init__(" ".join(parts))


class DataError(Onnx2SnnError):
    """Calibration or evaluation data is missing, empty, malformed or not finite."""


class Onnx2SnnWarning(UserWarning):
    """Something works but may not be what the user meant (a reference that is not the
    SNN's source model, a run that needs most of the free memory)."""


class ConfigError(Onnx2SnnError, ValueError):
    """An argument or option has a value that cannot work (``timesteps=0``, a percentile
    of 150, an unknown choice). ``param`` names it as the Python API spells it; the command
    line maps it to its ``--option`` (see :mod:`onnx2snn.checks`)."""

    def __init__(self, message: str, param: str | None = None):
        self.param = param
        super().__init__(message)


class EnergyModelError(Onnx2SnnError, ValueError):
    """The energy model cannot price a count: a cost table with a missing, unknown or negative
    entry, or an op kind no table knows (it would otherwise be charged nothing)."""


class LayoutError(Onnx2SnnError):
    """The spiking core holds a tensor whose batch (and so time, which the engine folds into
    the batch) cannot be followed: an op mixes the samples of a batch, or a reshape puts the
    batch inside another axis. The message names the node."""

"""Training losses by name, for ``finetune(loss="...")``.

The library knows cross-entropy ("cross_entropy", "ce"); packages above it register
theirs (importing :mod:`onnx2snn.zoo` registers its detectors' losses, and each zoo preset's
name as an alias of its loss, so ``loss="yolo_relu"`` works too).
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F

from ..errors import ConfigError

CROSS_ENTROPY = "cross_entropy"
LOSSES: dict[str, Callable] = {}  # registered loss name -> callable(outputs, targets)
ALIASES: dict[str, str] = {}  # other accepted names (a preset's) -> a loss name or CROSS_ENTROPY


def cross_entropy(out, y):
    """Cross-entropy of [B, classes] scores against integer labels."""
    return F.cross_entropy(out, y)


def register_loss(name: str, fn: Callable) -> None:
    """Make ``fn(outputs, targets) -> scalar or (scalar, parts)`` available as ``loss=name``."""
    LOSSES[name] = fn


def register_loss_alias(name: str, target: str) -> None:
    """Accept ``loss=name`` for the loss registered as ``target`` (resolved when used)."""
    ALIASES[name] = target


def resolve_loss(loss: "Callable | str | None") -> Callable:
    """The loss callable: a callable as is, a registered loss name or alias, or cross-entropy."""
    if loss is None:
        return cross_entropy
    if callable(loss):
        return loss
    if isinstance(loss, str):
        if loss in LOSSES:
            return LOSSES[loss]
        target = ALIASES.get(loss)
        if target in LOSSES:
            return LOSSES[target]
        if loss in (CROSS_ENTROPY, "ce") or target == CROSS_ENTROPY:
            return cross_entropy
        raise ConfigError(f"unknown loss {loss!r}: pass a callable(outputs, targets) -> scalar, a zoo loss "
                          f"({', '.join(sorted(LOSSES))}), a zoo preset name, or None for cross-entropy "
                          "(the zoo's losses are registered when onnx2snn.zoo is imported)", "loss")
    raise ConfigError(f"loss must be a callable, a name or None, not {type(loss).__name__}", "loss")


__all__ = ["LOSSES", "ALIASES", "CROSS_ENTROPY", "cross_entropy", "register_loss", "register_loss_alias",
           "resolve_loss"]

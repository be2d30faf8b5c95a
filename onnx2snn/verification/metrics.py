"""Task metrics, accumulated batch by batch for the reference and for the SNN at each T.

Classification: top-1 / top-5 accuracy (with labels), agreement of the SNN's top-1
with the reference's top-1, relative L2 error ``||snn - ref|| / ||ref||`` over the
whole data set. Detection: COCO mAP@0.5 and mAP@0.5:0.95 (pycocotools) after the same
post-processing of both, the same two as Ultralytics' validation computes them (its own
matching and 101-point AP; both in :mod:`.detection`), plus the relative L2 error of
the raw outputs.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import Onnx2SnnError, ShapeError
from ..data.evaluation import BatchMeta
from .decoders import DECODER_ALIASES, find_decoder
from .detection import evaluate_coco, evaluate_ultralytics, to_coco_detections

Outputs = Sequence[torch.Tensor]  # the model's outputs as a list (one tensor per ONNX output)


class RelativeL2:
    """sqrt(sum ||a - ref||^2 / sum ||ref||^2) over every batch and output."""

    def __init__(self) -> None:
        self.err = 0.0
        self.ref = 0.0

    def update(self, a: Outputs, ref: Outputs) -> None:
        self.add(self.terms(a, ref))

    @staticmethod
    def terms(a: Outputs, ref: Outputs) -> list[tuple[float, float]]:
        """One batch's (squared error, squared reference) per output."""
        return [(float(((x.double() - r.double()) ** 2).sum()), float((r.double() ** 2).sum())) for x, r in zip(a, ref)]

    def add(self, terms: list[tuple[float, float]]) -> None:
        """Add one batch's :meth:`terms`, in output order (as :meth:`update` does)."""
        for e, r in terms:
            self.err += e
            self.ref += r

    def value(self) -> float:
        return float(np.sqrt(self.err / self.ref)) if self.ref > 0 else (0.0 if self.err == 0 else float("inf"))


class Classification:
    """Counts for one model (the reference, or the SNN at one T)."""

    def __init__(self, has_reference: bool) -> None:
        self.n = 0
        self.labelled = 0
        self.top1 = 0
        self.top5 = 0
        self.agree = 0
        self.classes = 0
        self.has_reference = has_reference
        self.l2 = RelativeL2()

    @staticmethod
    def logits(outputs: Outputs) -> torch.Tensor:
        o = outputs[0]
        if o.dim() < 2:
            raise ShapeError(f"classification needs [batch, classes] scores; the model's first output has shape "
                             f"{list(o.shape)}. Use task='detection' with a postprocess for other outputs.")
        return o.reshape(o.shape[0], -1)

    def update(self, outputs: Outputs, ref: Outputs | None, labels: torch.Tensor | None) -> None:
        self.add(self.summarize(outputs, ref, labels))

    def summarize(self, outputs: Outputs, ref: Outputs | None, labels: torch.Tensor | None) -> dict:
        """What one batch adds (small and picklable: batches measured on other processes
        are added in batch order with :meth:`add`, giving the one-process numbers)."""
        z = self.logits(outputs)
        pred = z.argmax(1)
        out = {"classes": z.shape[1], "n": len(z), "labelled": 0, "top1": 0, "top5": 0, "agree": 0, "l2": []}
        if labels is not None:
            labels = labels.to(z.device)
            out["labelled"] = len(labels)
            out["top1"] = int((pred == labels).sum())
            if z.shape[1] > 5:
                top = z.topk(5, dim=1).indices
                out["top5"] = int((top == labels[:, None]).any(1).sum())
        if self.has_reference and ref is not None:
            out["agree"] = int((pred == self.logits(ref).argmax(1)).sum())
            out["l2"] = RelativeL2.terms(outputs, ref)
        return out

    def add(self, b: dict) -> None:
        self.classes = b["classes"]
        for k in ("n", "labelled", "top1", "top5", "agree"):
            setattr(self, k, getattr(self, k) + b[k])
        self.l2.add(b["l2"])

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.labelled:
            out["top1"] = self.top1 / self.labelled
            if self.classes > 5:
                out["top5"] = self.top5 / self.labelled
        if self.has_reference:
            out["agreement"] = self.agree / max(self.n, 1)
            out["rel_l2"] = self.l2.value()
        return out


# -- detection ---------------------------------------------------------------------
Postprocess = Callable[[Any, BatchMeta], list]


def resolve_postprocess(postprocess: "str | Postprocess | None", category_ids=None) -> tuple[Postprocess, str]:
    """A callable ``(outputs, meta) -> COCO detections`` and its description.

    ``postprocess`` is a registered decoder name (:mod:`.decoders`) or such a callable.
    ``outputs`` are what the model returns (a tensor, or a tuple of tensors for several
    outputs), on the CPU.
    """
    if postprocess is None:
        raise Onnx2SnnError("task='detection' needs postprocess=: a decoder name ('tiny-yolo', 'yolo_relu', "
                            "'yolov8') or a callable(outputs, batch_meta) -> list of COCO detections")
    if callable(postprocess):
        return postprocess, getattr(postprocess, "__name__", type(postprocess).__name__)
    found = find_decoder(postprocess)
    if found is None:
        raise Onnx2SnnError(f"unknown postprocess {postprocess!r}: use one of {sorted(DECODER_ALIASES)} or a "
                            "callable(outputs, batch_meta) -> list of COCO detections (the zoo's decoders are "
                            "registered when onnx2snn.zoo is imported)")
    _, decoder = found
    decode, kwargs = decoder.fn, decoder.kwargs

    def run(outputs, meta: BatchMeta) -> list:
        dets = decode(outputs, **kwargs)
        dets = [dict(d, boxes=meta.to_original(d["boxes"], i)) for i, d in enumerate(dets)]
        return to_coco_detections(dets, meta.image_ids, category_ids)

    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return run, f"{decoder.label}({args})"


class Detection:
    """COCO results of one model over the data set; mAP at the end."""

    def __init__(self, postprocess: Postprocess, has_reference: bool) -> None:
        self.postprocess = postprocess
        self.results: list[dict] = []
        self.has_reference = has_reference
        self.l2 = RelativeL2()

    def update(self, outputs: Outputs, ref: Outputs | None, meta: BatchMeta) -> None:
        self.add(self.summarize(outputs, ref, meta))

    def summarize(self, outputs: Outputs, ref: Outputs | None, meta: BatchMeta) -> dict:
        """One batch's detections and error terms (see :meth:`Classification.summarize`)."""
        structured = outputs[0] if len(outputs) == 1 else tuple(outputs)
        dets = self.postprocess(tuple(t.cpu() for t in structured) if isinstance(structured, tuple)
                                else structured.cpu(), meta)
        if not isinstance(dets, list):
            raise Onnx2SnnError(f"postprocess returned {type(dets).__name__}; it must return a list of COCO "
                                "detections (dicts with image_id, category_id, bbox [x, y, w, h], score)")
        return {"dets": dets, "l2": RelativeL2.terms(outputs, ref) if self.has_reference and ref is not None else []}

    def add(self, b: dict) -> None:
        self.results.extend(b["dets"])
        self.l2.add(b["l2"])

    def result(self, ground_truth: dict, per_class: bool = False) -> dict[str, Any]:
        """mAP (pycocotools and Ultralytics' protocol), detections, rel. L2; ``per_class``: also
        AP@0.5 / AP@0.5:0.95 per category id under ``"per_class"``."""
        out = dict(evaluate_coco(self.results, ground_truth, per_class=per_class))
        ul = evaluate_ultralytics(self.results, ground_truth)  # Ultralytics' own AP protocol, for comparison
        out["mAP50_ultralytics"], out["mAP50_95_ultralytics"] = ul["mAP50"], ul["mAP50_95"]
        out["detections"] = len(self.results)
        if self.has_reference:
            out["rel_l2"] = self.l2.value()
        return out


__all__ = ["Classification", "Detection", "RelativeL2", "resolve_postprocess", "DECODER_ALIASES"]

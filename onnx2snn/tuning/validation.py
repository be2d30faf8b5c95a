"""The validation part of a search, and what one candidate SNN scores on it.

Without labels (default) it is a held-out part of the calibration data and quality is measured
against the ANN itself: the share of samples where the SNN's top-1 equals the ANN's
(classifiers), the mAP of the SNN's detections with the ANN's confident detections as ground
truth (detectors), or one minus the relative L2 error of the outputs (anything else). With
labeled validation data (``search={"validation": ...}``, what :func:`onnx2snn.verify`
takes) it is the real metric: the SNN's top-1 or mAP over the ANN's on the same samples. Either
way a detector's quality is the SNN's mAP over the ANN's against one ground truth.
Energy per T is what :func:`onnx2snn.verify` reports: the same :class:`LayerMonitor` hooks.
A run can be cut short after its first quarter of the samples (``stop``): the search drops a
candidate that is clearly below the target or dearer than a point it already has.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..data.batches import check_fits, resolve_preprocess
from ..data.evaluation import classification_batches, detection_batches
from ..errors import DataError
from ..settings import SEARCH
from ..data.evaluation import BatchMeta
from ..verification.detection import evaluate_coco
from ..verification.metrics import Classification, Detection, RelativeL2, resolve_postprocess
from ..verification.monitor import LayerMonitor

QUALITY_KINDS = ("agreement", "top1", "mAP50", "mAP50_95", "output")
# the ANN's detections at or above this score are the ground truth: borderline ones (0.25 - 0.5)
# come and go with tiny score changes and would count as the SNN's misses where the real
# metric barely moves
GT_CONFIDENCE = SEARCH["gt_confidence"].default
PROBE_PARTS = 4  # a run may stop after its first 1 / PROBE_PARTS of the held-out samples


def _as_list(out) -> list[torch.Tensor]:
    return [o.float() for o in out] if isinstance(out, (tuple, list)) else [out.float()]


def _probe_batch_size(n: "int | None", batch_size: int) -> int:
    """A batch size that leaves a first quarter to stop after."""
    return batch_size if not n else min(batch_size, max(8, -(-n // PROBE_PARTS)))


class Validation:
    """Validation inputs in batches, the ANN's outputs on them (computed once) and the quality.

    ``x``: held-out calibration inputs (quality against the ANN, no labels). ``data``: labeled
    validation data instead (a tensor pair ``(x, y)``, an ``.npz`` with ``y``, a DataLoader,
    an image folder with class folders; detectors: digit scenes, a COCO json, YOLO-format data,
    ``annotations=`` as verify takes them), at most ``limit`` samples. ``postprocess`` (a
    decoder name or callable, as :func:`onnx2snn.verify` takes it) makes it a detector: quality
    is ``metric`` (``"mAP50"`` or ``"mAP50_95"``) of the SNN over the ANN's."""

    def __init__(self, twin, x: "torch.Tensor | None" = None, batch_size: int = 64, postprocess: Any = None,
                 category_ids: Sequence[int] | None = None, metric: str | None = None,
                 gt_confidence: float = GT_CONFIDENCE, data: Any = None, annotations: Any = None,
                 preprocess=None, limit: int | None = None):
        self.twin = twin
        self.labeled = data is not None
        self.postprocess = None
        if postprocess is not None:
            self.postprocess, self.post_desc = resolve_postprocess(postprocess, category_ids)
        truth = None
        if self.labeled:
            shapes = getattr(getattr(twin, "onnx_info", None), "input_shapes", {}) or {}
            preprocess = resolve_preprocess(data, preprocess, shapes)
            pairs, truth = self._labeled(data, annotations, batch_size, preprocess, limit)
            self.batches, self.extras = [b for b, _ in pairs], [e for _, e in pairs]
            check_fits(self.batches[0][:1], shapes, "search['validation']")
            if self.postprocess is None and any(e is None for e in self.extras):
                raise DataError("search['validation'] has no labels: pass (inputs, labels), an .npz with 'y' or "
                                "class folders; or leave it out and the search holds out calibration data")
        else:
            bs = _probe_batch_size(len(x), batch_size)
            self.batches = [x[i:i + bs] for i in range(0, len(x), bs)]
            self.extras = self._metas() if self.postprocess is not None else [None] * len(self.batches)
        self.n = sum(len(b) for b in self.batches)
        with torch.no_grad():
            self.reference = [_as_list(twin(xb)) for xb in self.batches]
        self._ann_cache: dict = {}
        if self.postprocess is not None:
            self.kind = metric or "mAP50"
            if self.kind not in ("mAP50", "mAP50_95"):
                raise DataError(f"a detector's search quality is 'mAP50' or 'mAP50_95', not {self.kind!r}")
            det = Detection(self.postprocess, has_reference=False)
            for ref, meta in zip(self.reference, self.extras):
                det.add(det.summarize(ref, None, meta))
            self.ann_results = det.results
            self.truth = truth if truth is not None else self._ann_truth(det.results, gt_confidence)
            self.gt_objects = len(self.truth["annotations"])
        elif self.labeled:
            self.kind = metric or "top1"
            if self.kind != "top1":
                raise DataError(f"a classifier's search quality on labeled data is 'top1', not {self.kind!r}")
        else:
            first = self.reference[0][0]
            self.kind = metric or ("agreement" if first.dim() == 2 and first.shape[1] > 1 else "output")
        if self.labeled and self.ann_score() <= 0:
            raise DataError(f"the ANN itself scores 0 {self.kind} on search['validation'] ({self.n} samples): "
                            "quality relative to it is undefined. Check the labels (and category_ids / "
                            "annotations for detection data)")

    def _labeled(self, data, annotations, batch_size: int, preprocess, limit) -> tuple[list, "dict | None"]:
        """[(x, labels or BatchMeta)] of labeled validation data in memory, and the COCO ground
        truth for a detector's (None for a classifier's)."""
        if self.postprocess is not None:
            n = detection_batches(data, annotations, batch_size, limit, preprocess).n
            dd = detection_batches(data, annotations, _probe_batch_size(n, batch_size), limit, preprocess)
            if not dd.ground_truth.get("annotations"):
                raise DataError(f"search['validation']: the {dd.n} images have no annotations; mAP is "
                                "undefined. Pass labeled detection data (a COCO json, YOLO-format data, "
                                "annotations=), or leave it out and the search holds out calibration data")
            return list(dd.batches), dd.ground_truth
        _, total = classification_batches(data, batch_size, limit, preprocess)
        batches, _ = classification_batches(data, _probe_batch_size(total, batch_size), limit, preprocess)
        pairs = list(batches)
        if not pairs:
            raise DataError("search['validation']: empty (no samples)")
        return pairs, None

    @property
    def description(self) -> str:
        if self.kind.startswith("mAP"):
            name = {"mAP50": "mAP@0.5", "mAP50_95": "mAP@0.5:0.95"}[self.kind]
            return (f"{name} on labeled validation data (/ the ANN's)" if self.labeled else
                    f"{name} against the ANN's detections (/ the ANN's own)")
        return {"agreement": "top-1 agreement with the ANN", "top1": "top-1 on labeled validation data (/ the ANN's)",
                "output": "1 - relative L2 error of the outputs vs the ANN"}[self.kind]

    @property
    def units(self) -> int | None:
        """What quality is a share of: validation samples (top-1), ground-truth objects
        (detectors); None for an output error (a mean, not a share)."""
        return {"output": None}.get(self.kind, getattr(self, "gt_objects", self.n))

    def standard_error(self, share: float) -> float:
        """One binomial standard error of a share near ``share`` measured on :attr:`units`
        (0 when quality is not a share): how far the held-out number can sit above what unseen
        data gives."""
        return 0.0 if not self.units else math.sqrt(share * (1.0 - share) / self.units)

    def _metas(self) -> list[BatchMeta]:
        out, k = [], 1
        for xb in self.batches:
            size = tuple(int(s) for s in xb.shape[-2:])
            out.append(BatchMeta(list(range(k, k + len(xb))), [size] * len(xb), size))
            k += len(xb)
        return out

    def _ann_truth(self, results: list[dict], conf: float) -> dict:
        """COCO ground truth from the ANN's detections scored at least ``conf``."""
        kept = [d for d in results if d["score"] >= conf]
        if not kept:
            raise DataError(f"the ANN detects nothing with a score >= {conf:g} on the {self.n} held-out samples: "
                            "there is no ground truth to keep. Check postprocess= and the calibration data")
        cats = sorted({int(d["category_id"]) for d in results})
        images = [{"id": i, "height": m.sizes[j][0], "width": m.sizes[j][1]}
                  for m in self.extras for j, i in enumerate(m.image_ids)]
        anns = [{"id": k + 1, "image_id": d["image_id"], "category_id": d["category_id"], "bbox": list(d["bbox"]),
                 "area": float(d["bbox"][2] * d["bbox"][3]), "iscrowd": 0} for k, d in enumerate(kept)]
        return {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in cats]}

    def _map(self, results: list[dict], n_batches: int | None) -> float:
        """mAP of COCO ``results`` against the ground truth on the first ``n_batches`` (all: None)."""
        truth = self.truth
        if n_batches is not None:
            ids = {i for m in self.extras[:n_batches] for i in m.image_ids}
            truth = {**truth, "images": [im for im in truth["images"] if im["id"] in ids],
                     "annotations": [a for a in truth["annotations"] if a["image_id"] in ids]}
            results = [r for r in results if r["image_id"] in ids]
        return float(evaluate_coco(results, truth)[self.kind])

    def ann_score(self, n_batches: int | None = None) -> float:
        """The ANN's own score on the same samples (the denominator of quality)."""
        if n_batches not in self._ann_cache:
            if self.postprocess is not None:
                self._ann_cache[n_batches] = self._map(self.ann_results, n_batches)
            else:
                m = Classification(has_reference=False)
                for ref, y in list(zip(self.reference, self.extras))[:n_batches]:
                    m.add(m.summarize(ref, None, y))
                self._ann_cache[n_batches] = m.result()["top1"]
        return self._ann_cache[n_batches]

    def measure(self, snn, checkpoints: Sequence[int], stop=None) -> tuple[dict[int, dict], bool]:
        """One run of ``snn`` per batch to the largest checkpoint: ({T: {quality, energy_ratio,
        energy_pj, synops}}, complete), energy as :func:`onnx2snn.verify` estimates it.
        ``stop(partial)``, called once on the first quarter's results, may end the run there
        (then ``complete`` is False and the results are that quarter's)."""
        cps = sorted(set(int(t) for t in checkpoints))
        snn.eval()
        monitor = LayerMonitor(snn, cps)
        if self.postprocess is not None:
            metric = {t: Detection(self.postprocess, has_reference=True) for t in cps}
        elif self.kind in ("agreement", "top1"):
            metric = {t: Classification(has_reference=True) for t in cps}
        else:
            metric = {t: RelativeL2() for t in cps}
        with torch.no_grad(), monitor.attached():
            for j, (xb, ref, extra) in enumerate(zip(self.batches, self.reference, self.extras)):
                snn.ann(xb)  # hooks: fan-out per layer (for SynOps) and each activation (per-layer error)
                outs = snn.run_timesteps(xb, checkpoints=cps)
                for t, o in zip(cps, outs):
                    o = _as_list(o)
                    if self.postprocess is not None or self.kind in ("agreement", "top1"):
                        metric[t].add(metric[t].summarize(o, ref, extra))  # BatchMeta, labels or None
                    else:
                        metric[t].update(o, ref)
                monitor.batch_done(len(xb))
                probe = max(1, len(self.batches) // PROBE_PARTS)
                if stop is not None and j + 1 == probe < len(self.batches):
                    partial = self._results(metric, monitor, cps, probe)
                    if stop(partial):
                        return partial, False
        return self._results(metric, monitor, cps, None), True

    def _results(self, metric: dict, monitor: LayerMonitor, cps: list[int], n_batches: int | None) -> dict:
        ops = monitor.results()["ops"]
        out = {}
        for t in cps:
            if self.postprocess is not None:
                q = self._map(metric[t].results, n_batches) / max(self.ann_score(n_batches), 1e-12)
            elif self.kind == "agreement":
                q = metric[t].result()["agreement"]
            elif self.kind == "top1":
                q = metric[t].result()["top1"] / max(self.ann_score(n_batches), 1e-12)
            else:
                q = max(0.0, 1.0 - metric[t].value())
            o = ops["snn"][t]
            out[t] = {"quality": float(q), "energy_ratio": float(o["energy_ratio_vs_ann"]),
                      "energy_pj": float(o["energy_pj"]), "synops": float(o["synops"])}
        return out


__all__ = ["Validation", "QUALITY_KINDS", "GT_CONFIDENCE", "PROBE_PARTS"]

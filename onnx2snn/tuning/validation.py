"""The held-out part of the calibration data, and what one candidate SNN scores on it.

Quality is measured against the ANN itself (no labels needed): the share of samples where
the SNN's top-1 equals the ANN's (classifiers), the mAP of the SNN's detections with the
ANN's confident detections as ground truth (detectors, divided by the ANN's own score on
that ground truth), or one minus the relative L2 error of the outputs (anything else).
Energy per T is what :func:`onnx2snn.verify` reports: the same :class:`LayerMonitor` hooks.
A run can be cut short after its first quarter of the samples (``stop``): the search drops a
candidate that is clearly below the target or dearer than a point it already has.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import DataError
from ..verification.data import BatchMeta
from ..verification.metrics import Classification, Detection, RelativeL2, resolve_postprocess
from ..verification.monitor import LayerMonitor

QUALITY_KINDS = ("agreement", "mAP50", "mAP50_95", "output")
# the ANN's detections at or above this score are the ground truth: borderline ones (0.25 - 0.5)
# come and go with tiny score changes and would count as the SNN's misses where the real
# metric barely moves
GT_CONFIDENCE = 0.5
PROBE_PARTS = 4  # a run may stop after its first 1 / PROBE_PARTS of the held-out samples


def _as_list(out) -> list[torch.Tensor]:
    return [o.float() for o in out] if isinstance(out, (tuple, list)) else [out.float()]


class Validation:
    """Held-out inputs, the ANN's outputs on them (computed once) and the quality measure.

    ``postprocess`` (a decoder name or callable, as :func:`onnx2snn.verify` takes it) makes it a
    detector: quality is ``metric`` (``"mAP50"`` or ``"mAP50_95"``) of the SNN against the ANN's
    detections scored at least ``gt_confidence``."""

    def __init__(self, twin, x: torch.Tensor, batch_size: int = 64, postprocess: Any = None,
                 category_ids: Sequence[int] | None = None, metric: str | None = None,
                 gt_confidence: float = GT_CONFIDENCE):
        self.twin = twin
        batch_size = min(batch_size, max(8, -(-len(x) // PROBE_PARTS)))  # a first quarter to stop after
        self.batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
        self.n = len(x)
        with torch.no_grad():
            self.reference = [_as_list(twin(xb)) for xb in self.batches]
        self.postprocess = None
        if postprocess is not None:
            self.postprocess, self.post_desc = resolve_postprocess(postprocess, category_ids)
            self.kind = metric or "mAP50"
            if self.kind not in ("mAP50", "mAP50_95"):
                raise DataError(f"a detector's search quality is 'mAP50' or 'mAP50_95', not {self.kind!r}")
            self._detection_truth(gt_confidence)
        else:
            first = self.reference[0][0]
            self.kind = metric or ("agreement" if first.dim() == 2 and first.shape[1] > 1 else "output")

    @property
    def description(self) -> str:
        return {"agreement": "top-1 agreement with the ANN",
                "mAP50": "mAP@0.5 against the ANN's detections (/ the ANN's own)",
                "mAP50_95": "mAP@0.5:0.95 against the ANN's detections (/ the ANN's own)",
                "output": "1 - relative L2 error of the outputs vs the ANN"}[self.kind]

    def _metas(self) -> list[BatchMeta]:
        out, k = [], 1
        for xb in self.batches:
            size = tuple(int(s) for s in xb.shape[-2:])
            out.append(BatchMeta(list(range(k, k + len(xb))), [size] * len(xb), size))
            k += len(xb)
        return out

    def _detection_truth(self, conf: float) -> None:
        self.metas = self._metas()
        det = Detection(self.postprocess, has_reference=False)
        for ref, meta in zip(self.reference, self.metas):
            det.add(det.summarize(ref, None, meta))
        kept = [d for d in det.results if d["score"] >= conf]
        if not kept:
            raise DataError(f"the ANN detects nothing with a score >= {conf:g} on the {self.n} held-out samples: "
                            "there is no ground truth to keep. Check postprocess= and the calibration data")
        cats = sorted({int(d["category_id"]) for d in det.results})
        images = [{"id": i, "height": m.sizes[j][0], "width": m.sizes[j][1]}
                  for m in self.metas for j, i in enumerate(m.image_ids)]
        anns = [{"id": k + 1, "image_id": d["image_id"], "category_id": d["category_id"], "bbox": list(d["bbox"]),
                 "area": float(d["bbox"][2] * d["bbox"][3]), "iscrowd": 0} for k, d in enumerate(kept)]
        self.truth = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in cats]}
        self.gt_objects = len(anns)
        self.ann_self = self._map(det.results, None)  # the ANN against its own detections (about 1)

    def _map(self, results: list[dict], n_batches: int | None) -> float:
        """mAP of COCO ``results`` against the ANN's detections on the first ``n_batches`` (all: None)."""
        from ..zoo import evaluate_coco

        truth = self.truth
        if n_batches is not None:
            ids = {i for m in self.metas[:n_batches] for i in m.image_ids}
            truth = {**truth, "images": [im for im in truth["images"] if im["id"] in ids],
                     "annotations": [a for a in truth["annotations"] if a["image_id"] in ids]}
            results = [r for r in results if r["image_id"] in ids]
        return float(evaluate_coco(results, truth)[self.kind])

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
        elif self.kind == "agreement":
            metric = {t: Classification(has_reference=True) for t in cps}
        else:
            metric = {t: RelativeL2() for t in cps}
        with torch.no_grad(), monitor.attached():
            for j, (xb, ref) in enumerate(zip(self.batches, self.reference)):
                snn.ann(xb)  # hooks: fan-out per layer (for SynOps) and each activation (per-layer error)
                outs = snn.run_timesteps(xb, checkpoints=cps)
                for t, o in zip(cps, outs):
                    o = _as_list(o)
                    if self.postprocess is not None:
                        metric[t].add(metric[t].summarize(o, ref, self.metas[j]))
                    elif self.kind == "agreement":
                        metric[t].add(metric[t].summarize(o, ref, None))
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
                q = self._map(metric[t].results, n_batches) / max(self.ann_self, 1e-12)
            elif self.kind == "agreement":
                q = metric[t].result()["agreement"]
            else:
                q = max(0.0, 1.0 - metric[t].value())
            o = ops["snn"][t]
            out[t] = {"quality": float(q), "energy_ratio": float(o["energy_ratio_vs_ann"]),
                      "energy_pj": float(o["energy_pj"]), "synops": float(o["synops"])}
        return out


__all__ = ["Validation", "QUALITY_KINDS", "GT_CONFIDENCE", "PROBE_PARTS"]

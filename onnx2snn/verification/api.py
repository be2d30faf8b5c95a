"""``onnx2snn.verify``: the SNN against onnxruntime on the source file, at every T of a
sweep from one run per batch, with per-layer error, firing rates, SynOps and energy."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from typing import Any, Sequence

import torch

from ..snn.network import SpikingNetwork
from ..snn.serialize import load
from .. import checks
from .. import distributed as dist
from ..data.batches import check_preprocess, progress_samples, resolve_preprocess
from ..data.evaluation import classification_batches, detection_batches
from ..distributed import init as init_distributed
from ..errors import ConfigError, DataError, Onnx2SnnWarning
from ..snn import guard
from .metrics import Classification, Detection, RelativeL2, resolve_postprocess
from .monitor import LayerMonitor
from .reference import Reference
from .report import VerifyReport
from ..task import detection_data, resolve_task

DEFAULT_TIMESTEPS = (1, 2, 4, 8, 16, 32, 64, 128)
TASKS = ("classification", "detection")


def _as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _device(snn: SpikingNetwork) -> torch.device:
    for t in list(snn.parameters()) + list(snn.buffers()):
        return t.device
    return torch.device("cpu")


def _describe(data: Any) -> str:
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    if isinstance(data, (tuple, list)) and data and hasattr(data[0], "shape"):
        return f"({type(data[0]).__name__} {list(data[0].shape)}, labels)"
    if hasattr(data, "shape"):
        return f"{type(data).__name__} {list(data.shape)}"
    return type(data).__name__


def verify(snn: "SpikingNetwork | str | os.PathLike", reference: Any = None, data: Any = None,
           timesteps: Sequence[int] = DEFAULT_TIMESTEPS, task: str | None = None, postprocess=None,
           annotations: Any = None, batch_size: int = 32, limit: int | None = None, preprocess=None,
           category_ids: Sequence[int] | None = None, layers: bool = True, tolerance: float | None = None,
           progress: bool = True, return_outputs: bool = False, seed: int = 0,
           distributed: "bool | None" = None) -> VerifyReport:
    """Measure how close a spiking network stays to its source ONNX model, vs timesteps.

    Args:
        snn: a :class:`SpikingNetwork` (or the path of one written by ``snn.save``).
        reference: the ONNX model to compare with (path, bytes or ModelProto), run by
            onnxruntime with Pad_Fusion disabled. None: the ONNX file stored in the SNN.
        data: evaluation data. Classification: a tensor / array, ``(x, y)``, a DataLoader
            or Dataset of ``(x, y)``, an ``.npz`` with ``x`` (and ``y``), an image folder.
            Detection: a COCO json (images in ``<json dir>/images``), an image folder with
            ``annotations=``, YOLO-format data (``data.yaml``: its val images; a folder with
            ``images/`` + ``labels/``), a ``zoo.CocoImages``, the zoo's digit scenes, or a
            tensor with ``annotations=``.
        timesteps: the sweep; the SNN runs once per batch to the largest T.
        task: ``"classification"`` (top-1 / top-5 with labels, agreement, rel. L2) or
            ``"detection"`` (COCO mAP@0.5 and mAP@0.5:0.95, AP per class). None (default): what the
            files say (:func:`onnx2snn.task.resolve_task`): ``task='detect'`` in the ONNX metadata,
            detection data (a YOLO ``data.yaml`` / folder: its val split; a COCO json), a
            ``postprocess``, or one YOLOv8-style output ``[B, 4 + nc, anchors]`` make it detection
            with the ``"yolov8"`` decoder and the metadata's (or data.yaml's) class names; else
            classification. What was inferred is printed once and kept in
            ``report.config["inferred"]``; a conflict (a postprocess or detection data with
            ``task="classification"``, a ``classify`` model on detection data) is a ConfigError.
        postprocess: detection decoding: ``"tiny-yolo"``, ``"yolo_relu"``, ``"yolov8"``
            (Ultralytics exports) or a callable ``(outputs, batch_meta) -> COCO detections``
            (``batch_meta``: :class:`onnx2snn.verification.BatchMeta`); the same for reference and SNN.
            None: inferred for detectors (above).
        annotations: COCO json (path or dict) for detection data that is not a json itself.
        preprocess: ``zoo.Preprocess`` for image files; default: resize to the model's input
            size (letterboxed for YOLO-format data, as Ultralytics validates), pixels in [0, 1].
        category_ids: label index -> COCO category id for the built-in decoders.
        layers: per-layer error, firing rates, SynOps and energy (hooks; costs one ANN
            forward per batch).
        tolerance: what the summary calls a match (accuracy: absolute, mAP: relative).
        return_outputs: keep every output in ``report.outputs`` (reference and each T).
        distributed: under ``torchrun`` (default None: when it started this process) or with
            True, batch k is run by rank ``k % world_size`` (no sample twice, no padding); what
            each batch adds to the metrics is gathered and added in batch order, so every rank
            returns the report one process gets (plus ``world_size`` and the samples per rank).
    """
    t0 = time.time()
    task = None if task is None else checks.choice("task", task, TASKS)
    ts = checks.timesteps_list(timesteps)
    batch_size, limit = checks.integer("batch_size", batch_size, 1), checks.optional_integer("limit", limit, 1)
    tolerance = checks.optional_real("tolerance", tolerance, 0.0, 1.0)
    layers, progress = checks.boolean("layers", layers), checks.boolean("progress", progress)
    check_preprocess(preprocess)
    if data is None:
        raise DataError("verify needs data= (test inputs, with labels or COCO annotations)")
    if isinstance(snn, (str, os.PathLike)):
        snn = load(snn)
    # a network read back from NIR (onnx2snn.import_nir) runs the same interface; its layers
    # are NIR nodes, so the per-layer measurements (hooks on the twin's modules) are skipped
    nir_net = not isinstance(snn, SpikingNetwork) and callable(getattr(snn, "run_timesteps", None)) and \
        bool(getattr(snn, "config", {}).get("nir"))
    if not isinstance(snn, SpikingNetwork) and not nir_net:
        raise ConfigError(f"verify needs a SpikingNetwork (from onnx2snn.convert or onnx2snn.load) or a "
                          f"network from onnx2snn.import_nir, got {type(snn).__name__}", "snn")
    torch.manual_seed(seed)
    snn.eval()
    device = _device(snn)
    ref = Reference.open(reference, snn)
    if ref.mismatch:
        warnings.warn(f"verify: {ref.mismatch}", Onnx2SnnWarning, stacklevel=2)
    input_shape = next(iter(snn.ann.onnx_info.input_shapes.values()), None)
    info = resolve_task(snn, data, annotations, task, postprocess, reference=reference,
                        stored=(getattr(snn, "config", None) or {}).get("inferred"))
    task, postprocess = info.task or "classification", info.postprocess
    if task == "detection" and "task" in info.inferred and detection_data(data, annotations) is None:
        raise DataError(f"verify takes the model for a detector ({info.inferred['task'].split(' (', 1)[1][:-1]}), "
                        f"but data= ({_describe(data)}) has no ground truth: pass a YOLO data.yaml, a COCO json or "
                        "annotations=, or task='classification' to compare the raw outputs")
    info.announce("verify", progress)
    preprocess = resolve_preprocess(data, preprocess, snn.ann.onnx_info.input_shapes)
    post_desc = None
    gt = None
    if task == "classification":
        batches, total = classification_batches(data, batch_size, limit, preprocess)
        ref_metric = Classification(has_reference=False)
        snn_metric = {t: Classification(has_reference=True) for t in ts}
    else:
        pp, post_desc = resolve_postprocess(postprocess, category_ids)
        dd = detection_batches(data, annotations, batch_size, limit, preprocess)
        batches, total, gt = dd.batches, dd.n, dd.ground_truth
        if not gt.get("annotations"):
            raise DataError(f"the COCO ground truth of the {dd.n} evaluated images has no annotations: mAP is "
                            "undefined. Check that annotations= belongs to these images.")
        ref_metric = Detection(pp, has_reference=False)
        snn_metric = {t: Detection(pp, has_reference=True) for t in ts}
    shard = init_distributed(distributed, device)
    if shard.active:
        if total is not None:
            total = shard.samples(total, batch_size)
        batches = (b for k, b in enumerate(batches) if shard.owns(k))
    if not nir_net:  # refuse before the first batch what cannot fit (each batch's run checks itself)
        B = min(batch_size, total or batch_size)
        guard.check_memory(snn, ts[-1], B, snn.chunk_length(ts[-1], B), device, warn=False)
    monitor = LayerMonitor(snn, ts) if layers and not nir_net else None
    twin_l2 = RelativeL2()
    kept: list[tuple[int, dict]] = []
    summaries: list[tuple[int, dict]] = []  # what each batch adds to the metrics, by batch index
    n = 0
    hooks = monitor.attached() if monitor else contextlib.nullcontext()
    with torch.no_grad(), hooks:
        for j, (xb, extra) in enumerate(progress_samples(batches, total, "verify", progress and shard.rank == 0)):
            k = shard.rank + j * shard.world  # the batch's index in the one-process stream
            ref.check_input(xb, input_shape)
            ref_out = [torch.from_numpy(a) for a in ref.run(xb)]
            x = xb.to(device)
            if monitor:
                twin_out = [o.float().cpu() for o in _as_list(snn.ann(x))]
            outs = [[o.float().cpu() for o in _as_list(o_t)] for o_t in snn.run_timesteps(x, checkpoints=ts)]
            if j == 0:
                ref.check_outputs(ref_out, outs[0])
            summaries.append((k, {"ref": ref_metric.summarize(ref_out, None, extra),
                                  "snn": [snn_metric[t].summarize(o, ref_out, extra) for t, o in zip(ts, outs)],
                                  "twin": RelativeL2.terms(twin_out, ref_out) if monitor else [], "n": len(xb)}))
            if monitor:
                monitor.batch_done(len(xb), k)
            if return_outputs:
                kept.append((k, {key: o for key, o in [("reference", ref_out)] + list(zip(ts, outs))}))
            n += len(xb)
    samples_per_rank = dist.all_gather(n, shard)
    if monitor:
        monitor.merge_ranks(shard)
    for b in dist.gather_batches(summaries, shard):  # in batch order, on every rank
        ref_metric.add(b["ref"])
        for t, part in zip(ts, b["snn"]):
            snn_metric[t].add(part)
        twin_l2.add(b["twin"])
    n = sum(samples_per_rank)
    if n == 0:
        raise DataError("data: empty (no samples)")

    classes = None
    if task == "classification":
        metrics = {"reference": ref_metric.result(), "snn": {t: snn_metric[t].result() for t in ts}}
    else:
        metrics = {"reference": ref_metric.result(gt, per_class=True),
                   "snn": {t: snn_metric[t].result(gt, per_class=True) for t in ts}}
        classes = per_class_table(metrics, gt, info.names, category_ids)
    ref_info = ref.describe()
    if monitor:
        ref_info["ann_twin_rel_l2"] = twin_l2.value()
    config = {"task": task, "timesteps": ts, "batch_size": int(batch_size), "limit": limit, "device": str(device),
              "seed": seed, "data": _describe(data), "postprocess": post_desc,
              "preprocess": preprocess.to_dict() if preprocess is not None and hasattr(preprocess, "to_dict") else None,
              "snn": dict(snn.config), "neurons": len(snn.neurons()), "one_run_per_batch": True,
              "world_size": shard.world, "samples_per_rank": samples_per_rank, "inferred": info.to_dict()}
    outputs = None
    if return_outputs:
        per_batch = dist.gather_batches(kept, shard)
        outputs = {key: [torch.cat(parts) for parts in zip(*[b[key] for b in per_batch])] for key in per_batch[0]}
    return VerifyReport(task=task, timesteps=ts, n_samples=n, metrics=metrics, reference=ref_info, config=config,
                        layers=monitor.results() if monitor else None, seconds=round(time.time() - t0, 2),
                        tolerance=tolerance, outputs=outputs, classes=classes)


def per_class_table(metrics: dict, gt: dict, names: Sequence[str] | None,
                    category_ids: Sequence[int] | None) -> dict:
    """AP per class of the reference and of the SNN at each T, taken out of ``metrics`` (which
    keep the means), with the class names: {"names": {id: name}, "objects": {id: n},
    "reference": {id: {"AP50", "AP50_95"}}, "snn": {T: {id: ...}}}."""
    ref = metrics["reference"].pop("per_class")
    snn = {t: m.pop("per_class") for t, m in metrics["snn"].items()}
    label = {}
    if names:
        ids = list(category_ids) if category_ids is not None else list(range(len(names)))
        label = {int(c): str(n) for c, n in zip(ids, names)}
    from_gt = {int(c["id"]): str(c.get("name", c["id"])) for c in gt.get("categories", [])}
    strip = lambda d: {c: {k: v for k, v in a.items() if k != "objects"} for c, a in d.items()}  # noqa: E731
    return {"names": {c: label.get(c, from_gt.get(c, str(c))) for c in ref},
            "objects": {c: a["objects"] for c, a in ref.items()},
            "reference": strip(ref), "snn": {t: strip(d) for t, d in snn.items()}}


__all__ = ["verify", "DEFAULT_TIMESTEPS", "per_class_table"]

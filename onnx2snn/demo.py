"""`onnx2snn demo`: the whole path on built-in trained models, in a few minutes on a CPU.

Digits ResNet (classification) and tiny-YOLO on digit scenes (detection): export to
ONNX, calibrate on training samples, convert, then accuracy / mAP of the SNN at each T
next to the ANN run by onnxruntime on the same file. Writes report.json and demo.png.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from . import onnx_io, zoo
from .api import convert
from .export import export_zoo_model
from .table import format_table

TIMESTEPS = [1, 2, 4, 8, 16, 32, 64]


def _ort_outputs(path: str, x: torch.Tensor, batch: int = 128) -> list[np.ndarray]:
    sess = onnx_io.ort_session(path)
    outs = None
    for i in range(0, len(x), batch):
        o = onnx_io.run_onnxruntime(path, x[i:i + batch].numpy(), session=sess)
        outs = [[a] for a in o] if outs is None else [acc + [a] for acc, a in zip(outs, o)]
    return [np.concatenate(o) for o in outs]


def _in_batches(snn, x: torch.Tensor, timesteps: list[int], batch: int = 128):
    """SNN outputs at every T (one run per batch), concatenated over batches."""
    per_t: list[list] = [[] for _ in timesteps]
    with torch.no_grad():
        for i in range(0, len(x), batch):
            for k, o in enumerate(snn.run_timesteps(x[i:i + batch], checkpoints=timesteps)):
                per_t[k].append(o)
    out = []
    for chunks in per_t:
        out.append(torch.cat(chunks) if isinstance(chunks[0], torch.Tensor)
                   else tuple(torch.cat(c) for c in zip(*chunks)))
    return out


def classification(out_dir: str, progress: bool) -> dict:
    path = export_zoo_model("digits_resnet", os.path.join(out_dir, "digits_resnet.onnx"))
    xtr, _ = (torch.as_tensor(a) for a in zoo.load_digits(16, "train"))
    xte, yte = (torch.as_tensor(a) for a in zoo.load_digits(16, "test"))
    ann = float((torch.from_numpy(_ort_outputs(path, xte)[0]).argmax(1) == yte).float().mean())
    res = {"model": "digits_resnet", "onnx": path, "ann_accuracy": ann, "n_test": len(yte), "snn": {}}
    for norm in ("layer", "channel"):
        snn = convert(path, xtr, timesteps=max(TIMESTEPS), normalization=norm, progress=progress)
        outs = _in_batches(snn, xte, TIMESTEPS)
        res["snn"][norm] = {T: float((o.argmax(1) == yte).float().mean()) for T, o in zip(TIMESTEPS, outs)}
    return res


def detection(out_dir: str, progress: bool, n_val: int = 200, n_calib: int = 256) -> dict:
    path = export_zoo_model("tiny_yolo", os.path.join(out_dir, "tiny_yolo.onnx"))
    val = zoo.digit_scenes("val", n=n_val)
    calib, _ = zoo.scenes_to_tensors(zoo.digit_scenes("train", n=n_calib))
    x, _ = zoo.scenes_to_tensors(val)
    gt = zoo.coco_dict(val)
    ids = [s.image_id for s in val]

    def mAP(outputs) -> dict:
        dets = zoo.tiny_yolo_decode(tuple(torch.as_tensor(o) for o in outputs))
        return zoo.evaluate_coco(zoo.to_coco_detections(dets, ids), gt)

    res = {"model": "tiny_yolo", "onnx": path, "ann": mAP(_ort_outputs(path, x)), "n_val": n_val, "snn": {}}
    snn = convert(path, calib, timesteps=max(TIMESTEPS), progress=progress)
    for T, outs in zip(TIMESTEPS, _in_batches(snn, x, TIMESTEPS)):
        res["snn"][T] = mAP(outs)
    return res


def plot(report: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    c = report["classification"]
    ax = axes[0]
    for norm, curve in c["snn"].items():
        ax.plot(list(curve), [100 * v for v in curve.values()], "o-", label=f"SNN ({norm}-wise)")
    ax.axhline(100 * c["ann_accuracy"], color="k", ls="--", label="ANN (onnxruntime)")
    ax.set(xscale="log", xlabel="timesteps T", ylabel="top-1 accuracy (%)", title="digits ResNet")
    ax.set_xticks(TIMESTEPS, [str(t) for t in TIMESTEPS])
    ax.legend()
    d = report["detection"]
    ax = axes[1]
    for key, name in (("mAP50", "mAP@0.5"), ("mAP50_95", "mAP@0.5:0.95")):
        line, = ax.plot(list(d["snn"]), [v[key] for v in d["snn"].values()], "o-", label=f"SNN {name}")
        ax.axhline(d["ann"][key], color=line.get_color(), ls="--", label=f"ANN {name}")
    ax.set(xscale="log", xlabel="timesteps T", ylabel="mAP", title="tiny-YOLO on digit scenes (IBT neurons)")
    ax.set_xticks(TIMESTEPS, [str(t) for t in TIMESTEPS])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tables(report: dict) -> str:
    c, d = report["classification"], report["detection"]
    rows = [["ANN (onnxruntime)", f"{100 * c['ann_accuracy']:.2f}", f"{100 * c['ann_accuracy']:.2f}"]]
    rows += [[f"SNN T={T}", f"{100 * c['snn']['layer'][T]:.2f}", f"{100 * c['snn']['channel'][T]:.2f}"]
             for T in TIMESTEPS]
    out = [f"## Classification: digits ResNet, {c['n_test']} test images, top-1 accuracy (%)",
           format_table(["", "layer-wise", "channel-wise"], rows), ""]
    rows = [["ANN (onnxruntime)", f"{d['ann']['mAP50']:.4f}", f"{d['ann']['mAP50_95']:.4f}"]]
    rows += [[f"SNN T={T}", f"{v['mAP50']:.4f}", f"{v['mAP50_95']:.4f}"] for T, v in d["snn"].items()]
    out += [f"## Detection: tiny-YOLO (LeakyReLU -> IBT neurons), {d['n_val']} val scenes, channel-wise",
            format_table(["", "mAP@0.5", "mAP@0.5:0.95"], rows)]
    return "\n".join(out)


def run_demo(out_dir: str = "onnx2snn-report", progress: bool = True) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    t0 = time.time()
    report = {"classification": classification(out_dir, progress), "detection": detection(out_dir, progress)}
    report["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    report["plot"] = plot(report, os.path.join(out_dir, "demo.png"))
    return report

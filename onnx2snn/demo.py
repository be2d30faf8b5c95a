"""`onnx2snn demo`: the whole path on built-in trained models, in a few minutes on a CPU.

Digits ResNet (classification), tiny-YOLO on digit scenes (detection) and a SiLU YOLOv8
converted as it is (SiLU as time-averaged operators, no retraining): export to ONNX,
calibrate on training samples, convert, then accuracy / mAP of the SNN at each T next to
the ANN run by onnxruntime on the same file (measured with onnx2snn.verify).
Writes report.json and demo.png.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import torch

from . import zoo
from .api import convert
from .export import export_zoo_model
from .table import format_table
from .verification import verify

TIMESTEPS = [1, 2, 4, 8, 16, 32, 64]


def _export(name: str, out_dir: str) -> str:
    """Export a zoo model; torch's exporter warnings (tracer, deprecations) are not the user's business here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_zoo_model(name, os.path.join(out_dir, f"{name}.onnx"))


def classification(out_dir: str, progress: bool) -> dict:
    path = _export("digits_resnet", out_dir)
    xtr, _ = zoo.load_digits(16, "train")
    test = zoo.load_digits(16, "test")
    res = {"model": "digits_resnet", "onnx": path, "n_test": len(test[1]), "snn": {}}
    for norm in ("layer", "channel"):
        snn = convert(path, xtr, timesteps=max(TIMESTEPS), normalization=norm, progress=progress)
        r = verify(snn, path, data=test, timesteps=TIMESTEPS, batch_size=128, layers=False, progress=progress)
        res["ann_accuracy"] = r.metrics["reference"]["top1"]
        res["snn"][norm] = {T: r.metrics["snn"][T]["top1"] for T in TIMESTEPS}
    return res


def detection(out_dir: str, progress: bool, n_val: int = 200, n_calib: int = 256) -> dict:
    path = _export("tiny_yolo", out_dir)
    val = zoo.digit_scenes("val", n=n_val)
    calib, _ = zoo.scenes_to_tensors(zoo.digit_scenes("train", n=n_calib))
    snn = convert(path, calib, timesteps=max(TIMESTEPS), progress=progress)
    r = verify(snn, path, data=val, task="detection", postprocess="tiny-yolo", timesteps=TIMESTEPS, batch_size=64,
               layers=False, progress=progress)
    maps = lambda m: {k: m[k] for k in ("mAP50", "mAP50_95")}  # noqa: E731
    return {"model": "tiny_yolo", "onnx": path, "ann": maps(r.metrics["reference"]), "n_val": n_val,
            "snn": {T: maps(r.metrics["snn"][T]) for T in TIMESTEPS}}


SILU_TIMESTEPS = [1, 2, 4, 8, 16]


def silu_detection(out_dir: str, progress: bool, n_val: int = 200, n_calib: int = 256, timesteps: int = 4) -> dict:
    """yolov8_silu, thresholds for T=``timesteps``: every SiLU a time-averaged operator."""
    path = _export("yolov8_silu", out_dir)
    val = zoo.digit_scenes("val", n=n_val)
    calib, _ = zoo.scenes_to_tensors(zoo.digit_scenes("train", n=n_calib))
    snn = convert(path, calib, timesteps=timesteps, progress=progress)
    r = verify(snn, path, data=val, task="detection", postprocess="yolov8", timesteps=SILU_TIMESTEPS, batch_size=64,
               progress=progress)
    maps = lambda m: {k: m[k] for k in ("mAP50", "mAP50_95")}  # noqa: E731
    ops = r.layers["ops"]["snn"]
    return {"model": "yolov8_silu", "onnx": path, "ann": maps(r.metrics["reference"]), "n_val": n_val,
            "timesteps": timesteps, "averaged_ops": len(snn.averaged_ops()),
            "snn": {T: {**maps(r.metrics["snn"][T]), "energy_ratio": ops[T]["energy_ratio_vs_ann"]}
                    for T in SILU_TIMESTEPS}}


def _map_panel(ax, d: dict, timesteps: list[int], title: str) -> None:
    """mAP@0.5 and mAP@0.5:0.95 of the SNN vs T, the ANN's as dashed lines."""
    for key, name in (("mAP50", "mAP@0.5"), ("mAP50_95", "mAP@0.5:0.95")):
        line, = ax.plot(list(d["snn"]), [v[key] for v in d["snn"].values()], "o-", label=f"SNN {name}")
        ax.axhline(d["ann"][key], color=line.get_color(), ls="--", label=f"ANN {name}")
    ax.set(xscale="log", xlabel="timesteps T", ylabel="mAP", title=title)
    ax.set_xticks(timesteps, [str(t) for t in timesteps])
    ax.legend(fontsize=8)


def plot(report: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    c = report["classification"]
    ax = axes[0]
    for norm, curve in c["snn"].items():
        ax.plot(list(curve), [100 * v for v in curve.values()], "o-", label=f"SNN ({norm}-wise)")
    ax.axhline(100 * c["ann_accuracy"], color="k", ls="--", label="ANN (onnxruntime)")
    ax.set(xscale="log", xlabel="timesteps T", ylabel="top-1 accuracy (%)", title="digits ResNet")
    ax.set_xticks(TIMESTEPS, [str(t) for t in TIMESTEPS])
    ax.legend()
    _map_panel(axes[1], report["detection"], TIMESTEPS, "tiny-YOLO on digit scenes (IBT neurons)")
    _map_panel(axes[2], report["silu_detection"], SILU_TIMESTEPS, "SiLU YOLOv8 as it is (time-averaged SiLU)")
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
            format_table(["", "mAP@0.5", "mAP@0.5:0.95"], rows), ""]
    s = report["silu_detection"]
    rows = [["ANN (onnxruntime)", f"{s['ann']['mAP50']:.4f}", f"{s['ann']['mAP50_95']:.4f}", "1"]]
    rows += [[f"SNN T={T}", f"{v['mAP50']:.4f}", f"{v['mAP50_95']:.4f}", f"{v['energy_ratio']:.2f}"]
             for T, v in s["snn"].items()]
    out += [f"## Detection: SiLU YOLOv8 converted as it is ({s['averaged_ops']} time-averaged operators, no "
            f"retraining; thresholds for T={s['timesteps']}), {s['n_val']} val scenes",
            format_table(["", "mAP@0.5", "mAP@0.5:0.95", "energy vs ANN (float work included)"], rows)]
    return "\n".join(out)


def run_demo(out_dir: str = "onnx2snn-report", progress: bool = True) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    t0 = time.time()
    report = {"classification": classification(out_dir, progress), "detection": detection(out_dir, progress),
              "silu_detection": silu_detection(out_dir, progress)}
    report["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    report["plot"] = plot(report, os.path.join(out_dir, "demo.png"))
    return report

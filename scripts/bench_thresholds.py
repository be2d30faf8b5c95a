"""Post-training thresholds: the 99.99th percentile with one spike per step (the old
defaults) against the least-squared-error threshold ("mse") of a neuron firing one spike per
step and of one firing up to two (levels=2, theta searched for it: the defaults), and the same
with ``mse_tolerance=0.25`` (the largest theta within 25 % of the least error: fewer spikes).

Each model is converted for each T (512 calibration inputs) and scored at that T: share of
the ANN's mAP@0.5 / mAP@0.5:0.95 on digit-scene val for the detectors, top-1 on the digits
test set for the classifiers, and the energy ratio vs the ANN that ``onnx2snn.verify``
estimates. Prints a markdown table, writes <out>/bench_thresholds.json, .md and .png.
Usage: python scripts/bench_thresholds.py [--out bench-out] [--models ...] [--n-val 300]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnx2snn  # noqa: E402
from onnx2snn import zoo  # noqa: E402
from onnx2snn.graph.source import to_twin  # noqa: E402
from onnx2snn.table import format_table  # noqa: E402
from bench_distill import energy_ratio, evaluate_at  # noqa: E402
from _train_common import bench_start, write_outputs  # noqa: E402

METHODS = {"p99.99, 1 spike/step (old default)": dict(threshold=99.99, levels=1),
           "mse, 1 spike/step": dict(threshold="mse", levels=1),
           "mse, levels=2 (default)": dict(threshold="mse", levels=2),
           "mse, levels=2, mse_tolerance=0.25": dict(threshold="mse", levels=2, mse_tolerance=0.25)}
POST = {"tiny_yolo_decode": "tiny-yolo", "yolo_relu_decode": "yolo_relu", "decode_ultralytics": "yolov8"}


def detector(name: str, out: Path, Ts, n_val: int) -> dict:
    preset = zoo.get_preset(name)
    decode = zoo.get_decoder(preset.decoder)
    val = zoo.digit_scenes("val", n=n_val)
    calib, _ = zoo.scenes_to_tensors(zoo.make_scenes(512, "train", seed=12345))
    path = onnx2snn.export_zoo_model(name, out / f"{name}.onnx")
    twin = to_twin(path)
    ann = evaluate_at(twin, decode, val)[None]
    res = {"model": name, "ann": ann, "methods": {}}
    for label, kw in METHODS.items():
        rows = res["methods"][label] = {}
        for T in Ts:
            t0 = time.time()
            snn = onnx2snn.convert(twin, calib, timesteps=T, progress=False, **kw)
            secs = time.time() - t0
            m = evaluate_at(snn, decode, val, [T])[T]
            rows[T] = {"mAP50": m["mAP50"], "mAP50_95": m["mAP50_95"], "convert_s": round(secs, 1),
                       "of_ann_50": m["mAP50"] / ann["mAP50"], "of_ann_50_95": m["mAP50_95"] / ann["mAP50_95"],
                       "energy_ratio": energy_ratio(snn, path, val[:100], T, POST[preset.decoder])}
            print(f"{name} {label} T={T}: {100 * rows[T]['of_ann_50']:.1f} / {100 * rows[T]['of_ann_50_95']:.1f} % "
                  f"of the ANN, energy {rows[T]['energy_ratio']:.3f}", flush=True)
    return res


def classifier(name: str, out: Path, Ts) -> dict:
    xtr, _ = zoo.load_digits(16, "train")
    xte, yte = (torch.as_tensor(a) for a in zoo.load_digits(16, "test"))
    path = onnx2snn.export_zoo_model(name, out / f"{name}.onnx")
    twin = to_twin(path)
    with torch.no_grad():
        ann = float((twin(xte).argmax(1) == yte).float().mean())
    res = {"model": name, "ann": {"top1": ann}, "methods": {}}
    for label, kw in METHODS.items():
        rows = res["methods"][label] = {}
        for T in Ts:
            snn = onnx2snn.convert(twin, xtr[:512], timesteps=T, progress=False, **kw)
            rep = onnx2snn.verify(snn, path, data=(xte, yte), timesteps=[T], progress=False)
            rows[T] = {"top1": rep.metrics["snn"][T]["top1"],
                       "energy_ratio": rep.layers["ops"]["snn"][T]["energy_ratio_vs_ann"]}
            print(f"{name} {label} T={T}: top-1 {100 * rows[T]['top1']:.2f} %, energy {rows[T]['energy_ratio']:.3f}",
                  flush=True)
    return res


def tables(report: dict) -> str:
    text = []
    for r in report["models"]:
        Ts = sorted({int(t) for rows in r["methods"].values() for t in rows})
        det = "mAP50" in r["ann"]
        head = f"{r['model']} (ANN " + (f"{r['ann']['mAP50']:.3f} / {r['ann']['mAP50_95']:.3f})" if det
                                         else f"top-1 {100 * r['ann']['top1']:.2f} %)")
        rows = []
        for label, per_t in r["methods"].items():
            cells = []
            for T in Ts:
                m = per_t.get(T, per_t.get(str(T)))
                cells.append(f"{100 * m['of_ann_50']:.1f} / {100 * m['of_ann_50_95']:.1f} ({m['energy_ratio']:.2f}x)"
                             if det else f"{100 * m['top1']:.2f} ({m['energy_ratio']:.2f}x)")
            rows.append([label] + cells)
        unit = "% of the ANN's mAP@0.5 / mAP@0.5:0.95 (energy vs ANN)" if det else "top-1 % (energy vs ANN)"
        text.append(f"### {head}: {unit}\n\n" + format_table(["thresholds"] + [f"T={T}" for T in Ts], rows) + "\n")
    return "\n".join(text)


README_MODELS = ("yolov8_relu", "tiny_yolo")  # the detectors README's threshold text quotes


def readme_table(report: dict) -> str:
    """The docs' thresholds table (docs/hooks.py renders it from the JSON): per
    method, for each detector of ``README_MODELS``, % of the ANN's mAP@0.5 / mAP@0.5:0.95
    and the energy vs the ANN at each T."""
    models = [r for name in README_MODELS for r in report["models"] if r["model"] == name]
    Ts = sorted({int(t) for r in models for rows in r["methods"].values() for t in rows})
    rows = ["| model (ANN mAP@0.5 / @0.5:0.95) | thresholds | " + " | ".join(f"T={T}" for T in Ts) + " |",
            "|---|---|" + "---|" * len(Ts)]
    for r in models:
        name = f"{r['model']} ({r['ann']['mAP50']:.3f} / {r['ann']['mAP50_95']:.3f})"
        for i, (label, per_t) in enumerate(r["methods"].items()):
            cells = [per_t.get(T, per_t.get(str(T))) for T in Ts]
            cells = [m and f"{100 * m['of_ann_50']:.1f} / {100 * m['of_ann_50_95']:.1f} ({m['energy_ratio']:.2f}x)"
                     for m in cells]
            rows.append("|" + "|".join(f" {c} " if c else " " for c in [name if i == 0 else "", label] + cells) + "|")
    return "\n".join(rows)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = report["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.4), squeeze=False)
    for ax, r in zip(axes[0], models):
        det = "mAP50" in r["ann"]
        for label, per_t in r["methods"].items():
            Ts = sorted(int(t) for t in per_t)
            key = "of_ann_50_95" if det else "top1"
            ax.plot(Ts, [100 * per_t.get(t, per_t.get(str(t)))[key] for t in Ts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_title(r["model"])
        ax.set_xlabel("T")
        ax.set_ylabel("% of ANN mAP@0.5:0.95" if det else "top-1 %")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--models", nargs="*", default=["yolov8_relu", "yolo_relu", "tiny_yolo", "digits_resnet",
                                                     "digits_vgg"])
    ap.add_argument("--timesteps", type=int, nargs="*", default=[2, 4, 8, 16])
    ap.add_argument("--n-val", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    bench_start(args)
    t0 = time.time()
    report = {"torch": torch.__version__, "threads": args.threads, "n_val": args.n_val, "models": []}
    for name in args.models:
        task = zoo.get_preset(name).task
        report["models"].append(detector(name, args.out, args.timesteps, args.n_val) if task == "detection"
                                else classifier(name, args.out, args.timesteps))
    report["seconds"] = round(time.time() - t0, 1)
    text = tables(report) + f"\nrun time {report['seconds']:.0f} s on {args.threads} thread(s)\n"
    if any(r["model"] in README_MODELS for r in report["models"]):
        print("\nREADME:\n" + readme_table(report))
    write_outputs(args.out, "bench_thresholds", text, report, plot)


if __name__ == "__main__":
    main()

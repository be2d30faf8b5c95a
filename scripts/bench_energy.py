"""The energy count, before and after issue #29, on the zoo's models: quality and energy vs the
ANN at T = 2 / 4 / 8, the float share of the SNN's energy, and the deployable comparison
(integer SNN vs INT8 ANN).

Each model is converted once with the default settings (256 calibration inputs, timesteps=4) and
verified once per batch up to T=8 (classifiers: the first ``--n-cls`` digits of the test set;
detectors: ``--n-det`` digit-scene val images). ``--code DIR`` imports onnx2snn from DIR (run it
with an older checkout to measure the old count); ``--before JSON`` adds that run's energy ratios
as the "before" column. Writes <out>/bench_energy.json, .md and .png.
Usage: python scripts/bench_energy.py [--out docs/examples/energy] [--models ...] [--before old.json]
       [--code /path/to/older/checkout] [--measured earlier_run.json]
The published run: ``git archive 1842e9c | tar -x -C /tmp/base`` (main before the new count),
``--code /tmp/base --out /tmp/before``, then ``--before /tmp/before/bench_energy.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TS = (2, 4, 8)
CLASSIFIERS = ("digits_resnet", "digits_vgg", "digits_vit", "digits_mobilenetv3", "digits_convnext")
DETECTORS = ("tiny_yolo", "yolo_relu", "yolov8_relu", "yolov8_silu", "yolo11_silu")
POST = {"tiny_yolo_decode": "tiny-yolo", "yolo_relu_decode": "yolo_relu", "decode_ultralytics": "yolov8"}


def convert_and_verify(name: str, out: Path, n_cls: int, n_det: int, ts, settings: "dict | None" = None):
    """The zoo model ``name`` exported to ``out``, converted (256 calibration inputs,
    ``timesteps=4``, ``settings`` on top of the defaults) and verified at ``ts`` (classifiers:
    the first ``n_cls`` test digits; detectors: ``n_det`` digit-scene val images):
    (preset, report, its quality metric)."""
    import torch
    import onnx2snn
    from onnx2snn import zoo

    preset = zoo.get_preset(name)
    path = str(onnx2snn.export_zoo_model(name, out / f"{name}.onnx"))
    if preset.task == "classification":
        xtr, _ = zoo.load_digits(16, "train")
        xte, yte = (torch.as_tensor(a) for a in zoo.load_digits(16, "test"))
        snn = onnx2snn.convert(path, xtr[:256], timesteps=4, progress=False, **(settings or {}))
        return preset, onnx2snn.verify(snn, path, data=(xte[:n_cls], yte[:n_cls]), timesteps=list(ts),
                                       progress=False), "top1"
    calib, _ = zoo.scenes_to_tensors(zoo.make_scenes(256, "train", seed=12345))
    snn = onnx2snn.convert(path, calib, timesteps=4, progress=False, **(settings or {}))
    return preset, onnx2snn.verify(snn, path, data=zoo.digit_scenes("val", n=n_det), timesteps=list(ts),
                                   task="detection", postprocess=POST[preset.decoder], progress=False), "mAP50"


def measure(name: str, out: Path, n_cls: int, n_det: int) -> dict:
    t0 = time.time()
    preset, rep, metric = convert_and_verify(name, out, n_cls, n_det, TS)
    ref = rep.metrics["reference"]
    quality = {T: rep.metrics["snn"][T][metric] / ref[metric] for T in TS}
    ann = {"top1": ref["top1"]} if metric == "top1" else {"mAP50": ref["mAP50"], "mAP50_95": ref["mAP50_95"]}
    ops = rep.layers["ops"]
    res = {"model": name, "task": preset.task, "samples": rep.n_samples, "ann": ann, "seconds": round(time.time() - t0, 1),
           "T": {}}
    for T in TS:
        o = ops["snn"][T]
        row = {"quality_of_ann": quality[T], "energy_ratio": o["energy_ratio_vs_ann"]}
        if "counts" in o:  # the new count
            row.update({"float_share": o["float_share"], "energy_ratio_int8": o["energy_ratio_vs_int8_ann"],
                        "energy_pj": o["energy_pj"], "energy_int8_pj": o["energy_int8_pj"], "counts": o["counts"]})
        res["T"][T] = row
    if "ann_counts" in ops:
        res["ann_counts"] = ops["ann_counts"]
        res["ann_energy_pj"], res["ann_energy_int8_pj"] = ops["ann_energy_pj"], ops["ann_energy_int8_pj"]
    print(f"{name}: " + ", ".join(f"T={T} {100 * r['quality_of_ann']:.1f} % {r['energy_ratio']:.2f}x"
                                  for T, r in res["T"].items()), flush=True)
    return res


def _t(per_t: dict, T: int) -> dict:
    return per_t.get(T, per_t.get(str(T)))


def readme_table(report: dict) -> str:
    """The docs' energy table (docs/hooks.py renders it from the JSON): per model,
    quality (% of the ANN's top-1 / mAP@0.5), energy vs the FP32 ANN by the old count and the new
    one, the float share of the new count's energy, and integer SNN vs INT8 ANN, at T = 2 / 4 / 8."""
    rows = ["| model | quality, % of ANN (T=2 / 4 / 8) | energy vs ANN, old count | FP32 SNN vs FP32 ANN, new count "
            "| float share of the energy | integer SNN vs INT8 ANN |", "|---|---|---|---|---|---|"]
    for r in report["models"]:
        per_t = r["T"]
        cells = [" / ".join(f"{100 * _t(per_t, T)['quality_of_ann']:.1f}" for T in TS),
                 " / ".join(f"{_t(per_t, T)['before']:.2f}x" if "before" in _t(per_t, T) else "-" for T in TS),
                 " / ".join(f"{_t(per_t, T)['energy_ratio']:.2f}x" for T in TS),
                 " / ".join(f"{100 * _t(per_t, T)['float_share']:.0f} %" for T in TS),
                 " / ".join(f"{_t(per_t, T)['energy_ratio_int8']:.2f}x" for T in TS)]
        rows.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(models)), 4))
    w = 0.27
    x = list(range(len(models)))
    T = 4
    for i, (key, label) in enumerate((("before", "old count (FP32)"), ("energy_ratio", "new count, FP32 vs FP32"),
                                      ("energy_ratio_int8", "new count, integer SNN vs INT8 ANN"))):
        vals = [_t(r["T"], T).get(key, 0.0) for r in models]
        ax.bar([j + (i - 1) * w for j in x], vals, w, label=label)
    ax.axhline(1.0, color="black", ls="--", lw=1, label="ANN")
    ax.set_xticks(x, [r["model"] for r in models], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel=f"SNN energy / ANN energy at T={T}", title="energy vs the ANN, before and after issue #29")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--models", nargs="*", default=list(CLASSIFIERS + DETECTORS))
    ap.add_argument("--n-cls", type=int, default=200)
    ap.add_argument("--n-det", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--before", type=Path, default=None, help="JSON of a run with the old count")
    ap.add_argument("--measured", type=Path, default=None,
                    help="reuse the measurements of an earlier run's JSON (to add --before to it)")
    ap.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the checkout whose onnx2snn is measured (default: this one)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.code))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _train_common import bench_start, write_outputs

    bench_start(args)
    import onnx2snn
    if args.measured is not None:
        report = json.loads(args.measured.read_text())
    else:
        report = {"settings": {"timesteps": list(TS), "n_cls": args.n_cls, "n_det": args.n_det, "calibration": 256,
                               "conversion": "defaults, timesteps=4", "code": str(Path(onnx2snn.__file__).parent)},
                  "models": [measure(m, args.out, args.n_cls, args.n_det) for m in args.models]}
    if args.before is not None:
        before = json.loads(args.before.read_text())
        report["settings"]["before"] = {"code": before["settings"]["code"], "json": str(args.before)}
        old = {r["model"]: r for r in before["models"]}
        for r in report["models"]:
            if r["model"] in old:
                for T in TS:
                    _t(r["T"], T)["before"] = _t(old[r["model"]]["T"], T)["energy_ratio"]
                    _t(r["T"], T)["before_quality_of_ann"] = _t(old[r["model"]]["T"], T)["quality_of_ann"]
    if all("float_share" in _t(r["T"], 4) for r in report["models"]):
        text = readme_table(report)
    else:
        text = json.dumps({r["model"]: {T: _t(r["T"], T)["energy_ratio"] for T in TS} for r in report["models"]})
    write_outputs(args.out, "bench_energy", text, report,
                  plot if all("float_share" in _t(r["T"], 4) for r in report["models"]) else (lambda r, p: None))


if __name__ == "__main__":
    main()

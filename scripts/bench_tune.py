"""The settings search (``convert(..., target=0.99)``) on zoo models, checked on data it did not see.

For each model: the search on 512 calibration inputs (a quarter held out, against the ANN
itself), then ``onnx2snn.verify`` of the chosen SNN on the test split (digits test set for the
classifiers: top-1; digit-scene val for the detectors: mAP@0.5 with the real boxes), against
the default conversion at T=8 on the same data, and the search time against one verify sweep
of the default conversion (T = 1 ... 128, the verify default). Writes <out>/bench_tune.md,
.json and per model the frontier plot tune_<model>.png (and its report tune_<model>.md/.json).
Rows of models already in <out>/bench_tune.json and not benched this time are kept.
Usage: python scripts/bench_tune.py [--out docs/examples/tune] [--models ...] [--target 0.99] [--n-val 300]
"""
from __future__ import annotations

import argparse
import json
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
from _train_common import bench_start, write_outputs  # noqa: E402

POST = {"tiny_yolo_decode": "tiny-yolo", "yolo_relu_decode": "yolo_relu", "decode_ultralytics": "yolov8"}


def data_for(name: str, n_val: int):
    """(calibration inputs, test data, verify keyword arguments, metric name)."""
    preset = zoo.get_preset(name)
    if preset.task == "detection":
        calib, _ = zoo.scenes_to_tensors(zoo.make_scenes(512, "train", seed=12345))
        test = zoo.digit_scenes("val", n=n_val)
        return calib, test, {"task": "detection", "postprocess": POST[preset.decoder]}, "mAP50"
    x, _ = zoo.load_digits(16, "train")
    xte, yte = (torch.as_tensor(a) for a in zoo.load_digits(16, "test"))
    return torch.as_tensor(x[:512]), (xte, yte), {}, "top1"


def bench(name: str, out: Path, target: float, n_val: int) -> dict:
    path = onnx2snn.export_zoo_model(name, out / f"{name}.onnx")
    twin = to_twin(path)
    calib, test, vkw, metric = data_for(name, n_val)
    options = {"postprocess": vkw["postprocess"]} if "postprocess" in vkw else None
    t0 = time.time()
    snn = onnx2snn.convert(twin, calib, target=target, progress=False, tune_options=options)
    search_s = time.time() - t0
    r = snn.tune_report
    r.write(out, f"tune_{name}")
    r.plot(out / f"tune_{name}.png", title=f"{name}: settings search for {100 * target:g} % of the ANN")
    T = snn.config["timesteps"]
    rep = onnx2snn.verify(snn, path, data=test, timesteps=[T], progress=False, **vkw)
    ann = rep.metrics["reference"][metric]
    chosen = {"T": T, metric: rep.metrics["snn"][T][metric], "of_ann": rep.metrics["snn"][T][metric] / ann,
              "energy_ratio": rep.layers["ops"]["snn"][T]["energy_ratio_vs_ann"],
              "held_out_quality": r.points[r.chosen]["quality"], "setting": snn.config["tune"]["chosen"]}
    default = onnx2snn.convert(twin, calib, timesteps=8, progress=False)
    sweep = onnx2snn.verify(default, path, data=test, progress=False, **vkw)  # T = 1 ... 128
    d8 = {metric: sweep.metrics["snn"][8][metric], "of_ann": sweep.metrics["snn"][8][metric] / ann,
          "energy_ratio": sweep.layers["ops"]["snn"][8]["energy_ratio_vs_ann"]}
    res = {"model": name, "target": target, "metric": metric, "ann": ann, "chosen": chosen, "default_t8": d8,
           "energy_vs_default_t8": chosen["energy_ratio"] / d8["energy_ratio"], "search_s": round(search_s, 1),
           "verify_sweep_s": sweep.seconds, "search_vs_sweep": search_s / sweep.seconds,
           "runs": len(r.candidates), "reason": r.reason, "promise_held": chosen["of_ann"] >= target}
    print(f"{name}: {res}", flush=True)
    return res


def table(report: dict) -> str:
    rows = []
    for r in report["models"]:
        c, d = r["chosen"], r["default_t8"]
        s = c["setting"]
        test = f"mAP@0.5, {r.get('n_test')} val scenes" if r["metric"] == "mAP50" else "top-1"
        rows.append([f"{r['model']} ({test})", f"{r['target']:g}",
                     f"{100 * c['of_ann']:.1f} (held out: {100 * c['held_out_quality']:.1f})",
                     f"{r['energy_vs_default_t8']:.2f}x ({c['energy_ratio']:.3f} vs {d['energy_ratio']:.3f} of the ANN; "
                     f"default T=8: {100 * d['of_ann']:.1f} %)",
                     f"{r['search_s']:.0f} s = {r['search_vs_sweep']:.2f}x one verify sweep ({r['verify_sweep_s']:.0f} s); "
                     f"{r['runs']} runs",
                     f"T={c['T']}, {s['percentile']}, levels={s['levels']}, tol={s['mse_tolerance']:g}" +
                     (f", reencode={s['reencode_levels']}" if "reencode_levels" in s else "")])
    held = sum(r["promise_held"] for r in report["models"])
    return ("### Settings search (`convert(..., target=0.99)`), checked on test data the search did not see\n\n" +
            format_table(["model", "target", "quality on the test set (% of ANN)", "energy vs the default conversion "
                          "at T=8", "search time", "chosen"], rows) +
            f"\n\nThe held-out promise held on the test set for {held} of {len(report['models'])} models.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/examples/tune"))
    ap.add_argument("--models", nargs="*", default=["digits_resnet", "digits_vgg", "tiny_yolo", "yolov8_relu"])
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--n-val", type=int, default=300, help="detection test scenes")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    bench_start(args)
    report = {"torch": torch.__version__, "threads": args.threads, "models": []}
    old = args.out / "bench_tune.json"
    if old.is_file():  # rows of models not benched this time are kept
        report["models"] = [m for m in json.loads(old.read_text())["models"] if m["model"] not in args.models]
    t0 = time.time()
    for name in args.models:
        res = bench(name, args.out, args.target, args.n_val)
        res["n_test"] = args.n_val if res["metric"] == "mAP50" else None
        report["models"].append(res)
        for f in args.out.glob(f"{name}.onnx"):
            f.unlink()
    report["seconds"] = round(time.time() - t0, 1)
    text = table(report) + f"\nlast run ({', '.join(args.models)}) {report['seconds']:.0f} s on {args.threads} thread(s)\n"
    write_outputs(args.out, "bench_tune", text, report, lambda rep, p: None)


if __name__ == "__main__":
    main()

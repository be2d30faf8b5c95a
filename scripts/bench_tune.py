"""The settings search (``convert(..., target=0.99)``) on zoo models, checked on data it did not see.

For each model: the search on 512 calibration inputs (a quarter held out, against the ANN
itself), then ``onnx2snn.verify`` of the chosen SNN on the test split (digits test set for the
classifiers: top-1; digit-scene val for the detectors: mAP@0.5 with the real boxes), against
the default conversion at T=8 on the same data, and the search time against one verify sweep
of the default conversion (T = 1 ... 128, the verify default). Writes <out>/bench_tune.md,
.json and per model the frontier plot tune_<model>.png (and its report tune_<model>.md/.json).
Rows (model, validation mode) already in <out>/bench_tune.json and not benched this time are kept.
Several --targets give one row each: how often the promise holds on the test data. --labeled
validates on labeled data apart from the calibration and test data (96 val scenes of another
seed; the first half of the digits test split, the test set then its second half) instead of a
held-out quarter; bench_tune.png plots the
validation quality at the chosen point against the test set's.
Usage: python scripts/bench_tune.py [--out docs/examples/tune] [--models ...] [--targets 0.99 0.98]
       [--labeled] [--n-test 300] [--n-sweep 100]
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


def data_for(name: str, n_test: int, n_sweep: int, labeled: bool):
    """(calibration inputs, labeled validation data, test data, sweep data, verify keyword
    arguments, metric name). Calibration data comes from the training split, as users have it;
    labeled validation data from the held-back split the test data comes from (what the ANN
    was not trained on), never the test samples themselves: 96 val scenes of another seed, or
    the first half of the digits test split (the test set is then the second half)."""
    preset = zoo.get_preset(name)
    if preset.task == "detection":
        calib, _ = zoo.scenes_to_tensors(zoo.make_scenes(512, "train", seed=12345))
        val = zoo.digit_scenes("val", n=96, seed=777)
        test = zoo.digit_scenes("val", n=n_test)
        sweep = zoo.digit_scenes("val", n=n_sweep)
        return calib, val, test, sweep, {"task": "detection", "postprocess": POST[preset.decoder]}, "mAP50"
    x, y = (torch.as_tensor(a) for a in zoo.load_digits(16, "train"))
    xte, yte = (torch.as_tensor(a) for a in zoo.load_digits(16, "test"))
    test = (xte[180:], yte[180:]) if labeled else (xte, yte)
    return x[:512], (xte[:180], yte[:180]), test, test, {}, "top1"


def bench(name: str, out: Path, targets: list[float], n_test: int, n_sweep: int, labeled: bool) -> list[dict]:
    """One row per target: the search (validated on a held-out part of the calibration data,
    or with ``labeled`` on labeled data apart from it), its choice verified on the test data,
    against the default conversion at T=8 on the same data and one verify sweep of it (the
    time unit)."""
    path = onnx2snn.export_zoo_model(name, out / f"{name}.onnx")
    twin = to_twin(path)
    calib, val, test, sweep_data, vkw, metric = data_for(name, n_test, n_sweep, labeled)
    default = onnx2snn.convert(twin, calib, timesteps=8, progress=False)
    rep8 = onnx2snn.verify(default, path, data=test, timesteps=[8], progress=False, **vkw)
    ann = rep8.metrics["reference"][metric]
    d8 = {metric: rep8.metrics["snn"][8][metric], "of_ann": rep8.metrics["snn"][8][metric] / ann,
          "energy_ratio": rep8.layers["ops"]["snn"][8]["energy_ratio_vs_ann"]}
    sweep = onnx2snn.verify(default, path, data=sweep_data, progress=False, **vkw)  # T = 1 ... 128
    rows = []
    for target in targets:
        options = {"postprocess": vkw["postprocess"]} if "postprocess" in vkw else {}
        if labeled:
            options["validation"] = val
        t0 = time.time()
        snn = onnx2snn.convert(twin, calib, target=target, progress=False, search=options)
        search_s = time.time() - t0
        r = snn.tune_report
        tag = f"tune_{name}" + ("" if target == 0.99 else f"_{round(1000 * target)}") + ("_labeled" if labeled else "")
        if target == max(targets):  # the frontier plot for the highest target; the others as md / json
            r.write(out, tag)
            r.plot(out / f"{tag}.png", title=f"{name}: settings search for {100 * target:g} % of the ANN")
        else:
            r.to_json(out / f"{tag}.json")
            (out / f"{tag}.md").write_text(r.table() + "\n")
        T = snn.config["timesteps"]
        rep = onnx2snn.verify(snn, path, data=test, timesteps=[T], progress=False, **vkw)
        chosen = {"T": T, metric: rep.metrics["snn"][T][metric], "of_ann": rep.metrics["snn"][T][metric] / ann,
                  "energy_ratio": rep.layers["ops"]["snn"][T]["energy_ratio_vs_ann"],
                  "held_out_quality": r.points[r.chosen]["quality"], "setting": snn.config["tune"]["chosen"]}
        res = {"model": name, "target": target, "validation": "labeled" if labeled else "held-out", "metric": metric,
               "ann": ann, "chosen": chosen, "default_t8": d8,
               "margin": r.margin, "held_out_units": r.units,
               "energy_vs_default_t8": chosen["energy_ratio"] / d8["energy_ratio"], "search_s": round(search_s, 1),
               "verify_sweep_s": sweep.seconds, "search_vs_sweep": search_s / sweep.seconds,
               "runs": len(r.candidates), "reason": r.reason, "promise_held": chosen["of_ann"] >= target,
               "n_test": n_test if metric == "mAP50" else None, "n_sweep": n_sweep if metric == "mAP50" else None,
               "n_test_digits": None if metric == "mAP50" else len(test[0])}
        print(f"{name}: {res}", flush=True)
        rows.append(res)
    return rows


def _by_mode(report: dict) -> list[dict]:
    """The rows, held-out ones first (stable within a mode)."""
    return sorted(report["models"], key=lambda r: r.get("validation", "held-out") != "held-out")


def _promises(report: dict) -> dict[str, tuple[int, int]]:
    """Per validation mode: (searches whose choice kept the target on the test set, searches)."""
    modes = [r.get("validation", "held-out") for r in report["models"]]
    return {m: (sum(r["promise_held"] for r, k in zip(report["models"], modes) if k == m), modes.count(m))
            for m in ("held-out", "labeled")}


def table(report: dict) -> str:
    rows = []
    for r in _by_mode(report):
        c, d = r["chosen"], r["default_t8"]
        s = c["setting"]
        test = f"mAP@0.5, {r.get('n_test')} val scenes" if r["metric"] == "mAP50" else \
            f"top-1, {r.get('n_test_digits', 360)} test digits"
        margin = f"; margin {100 * r['margin']:.2g}" if r.get("margin") else ""
        mode = r.get("validation", "held-out")
        rows.append([f"{r['model']} ({test})", f"{r['target']:g}", mode,
                     f"{100 * c['of_ann']:.1f} ({mode}: {100 * c['held_out_quality']:.1f}{margin})",
                     f"{r['energy_vs_default_t8']:.2f}x ({c['energy_ratio']:.3f} vs {d['energy_ratio']:.3f} of the ANN; "
                     f"default T=8: {100 * d['of_ann']:.1f} %)",
                     f"{r['search_s']:.0f} s = {r['search_vs_sweep']:.2f}x one verify sweep ({r['verify_sweep_s']:.0f} s); "
                     f"{r['runs']} runs",
                     f"T={c['T']}, {s.get('threshold', s.get('percentile'))}, levels={s['levels']}, tol={s['mse_tolerance']:g}" +
                     (f", reencode={s['reencode_levels']}" if "reencode_levels" in s else "")])
    rate = _promises(report)
    return ("### Settings search (`convert(..., target=...)`), checked on test data the search did not see\n\n" +
            format_table(["model", "target", "validated on", "quality on the test set (% of ANN)",
                          "energy vs the default conversion at T=8", "search time", "chosen"], rows) +
            "\n\nThe promise held on the test set for " +
            "; ".join(f"{k} of {n} searches validated on {m} data" for m, (k, n) in rate.items() if n) + ". Held-out: "
            "a quarter of the calibration data, quality against the ANN's own outputs (no labels); labeled: "
            "labeled data apart from the calibration and test data (`search['validation']`), the real metric. Margin: "
            "points of validation quality a point needs above the target (one standard error on the validation "
            "samples / objects, `search['margin']`). Test sets: 300 val scenes; the 360 digits of the test "
            "split (held-out rows), its second half (labeled rows). Verify sweep: the default conversion at T = 1 ... 128 "
            "on the digits test set or the first `n_sweep` val scenes.\n")


def readme_table(report: dict) -> str:
    """The docs' table: per model and validation mode, the test-set quality (% of the ANN) of the
    point chosen for each target, its T and energy vs the default conversion at T=8 (x: the
    promise missed), and the search time at the highest target."""
    rows_by = {}
    for r in _by_mode(report):
        rows_by.setdefault((r["model"], r.get("validation", "held-out")), []).append(r)
    targets = sorted({r["target"] for r in report["models"]}, reverse=True)
    rows = []
    for (model, mode), rs in rows_by.items():
        by_t = {r["target"]: r for r in rs}
        cells = []
        for t in targets:
            r = by_t.get(t)
            cells.append("-" if r is None else
                         f"{100 * r['chosen']['of_ann']:.1f}{'' if r['promise_held'] else ' (x)'} "
                         f"(T={r['chosen']['T']}, {r['energy_vs_default_t8']:.2f}x)")
        top = by_t[max(by_t)]
        rows.append([model, mode] + cells + [f"{top['search_s']:.0f} s = {top['search_vs_sweep']:.2f}x"])
    held = _promises(report)
    return (format_table(["model", "validated on"] + [f"target {t:g}" for t in targets] +
                         [f"search time ({max(targets):g}) vs a verify sweep"], rows) +
            "\n\nPromise held: " + ", ".join(f"{k} of {n} ({m})" for m, (k, n) in held.items() if n) + ".")


def plot(report: dict, path: Path) -> None:
    """Held-out quality (what the search promised) against the test set's, per search."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.6))
    models = list(dict.fromkeys(r["model"] for r in report["models"]))
    for k, m in enumerate(models):
        rs = [r for r in report["models"] if r["model"] == m]
        for mode, marker in (("held-out", "o"), ("labeled", "^")):
            rm = [r for r in rs if r.get("validation", "held-out") == mode]
            if rm:
                ax.scatter([100 * r["chosen"]["held_out_quality"] for r in rm], [100 * r["chosen"]["of_ann"] for r in rm],
                           color=plt.get_cmap("tab10")(k), marker=marker, label=f"{m} ({mode})")
        for r in rs:
            ax.annotate(f"{100 * r['target']:g}", (100 * r["chosen"]["held_out_quality"], 100 * r["chosen"]["of_ann"]),
                        fontsize=6, xytext=(3, -8), textcoords="offset points")
    lo = min([100 * r["chosen"]["of_ann"] for r in report["models"]] + [100 * r["target"] for r in report["models"]])
    ax.plot([lo - 0.5, 101], [lo - 0.5, 101], color="grey", lw=0.8, ls="--", label="test = validation")
    ax.set(xlabel="validation quality at the chosen point (% of ANN)", ylabel="test-set quality (% of ANN)",
           title="settings search: promise vs unseen data (labels: target %)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/examples/tune"))
    ap.add_argument("--models", nargs="*", default=["digits_resnet", "digits_vgg", "tiny_yolo", "yolov8_relu"])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.99])
    ap.add_argument("--labeled", action="store_true", help="validate on labeled data apart from the calibration "
                                                            "data (the real metric), not on a held-out part")
    ap.add_argument("--n-test", type=int, default=300, help="detection test scenes (val split)")
    ap.add_argument("--n-sweep", type=int, default=100, help="val scenes of the verify sweep the search time is "
                                                              "measured against")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    bench_start(args)
    report = {"torch": torch.__version__, "threads": args.threads, "models": []}
    t0 = time.time()
    for name in args.models:
        report["models"] += bench(name, args.out, args.targets, args.n_test, args.n_sweep, args.labeled)
        for f in args.out.glob(f"{name}.onnx"):
            f.unlink()
    old = args.out / "bench_tune.json"
    if old.is_file():  # rows (model, validation mode) not benched this time are kept, read at the end
        mode = "labeled" if args.labeled else "held-out"
        report["models"] = [m for m in json.loads(old.read_text())["models"]
                            if m["model"] not in args.models or m.get("validation", "held-out") != mode] + \
            report["models"]
    report["seconds"] = round(time.time() - t0, 1)
    text = table(report) + f"\nlast run ({', '.join(args.models)}) {report['seconds']:.0f} s on {args.threads} thread(s)\n"
    write_outputs(args.out, "bench_tune", text, report, plot)


if __name__ == "__main__":
    main()

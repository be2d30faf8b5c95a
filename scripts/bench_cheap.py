"""Cheaper than the ANN (issue #32): quality and energy of the zoo's models at T = 1 / 2 / 3 / 4 / 8,
before and after the cheaper operators, and the smallest T that keeps 99 % of the ANN's quality.

Each model is converted once per variant (256 calibration inputs, ``timesteps=4``) and verified
at every T (classifiers: the first ``--n-cls`` test digits; detectors: ``--n-det`` digit-scene
val images), with verify's honest count (``verification/energy.py``): energy vs the FP32 ANN,
the float share of the SNN's energy, integer SNN vs INT8 ANN, and energy by op kind.

Variants: ``after`` is today's defaults; ``--variant NAME='{"setting": value}'`` adds one (e.g.
an approximation that is off by default); ``--before JSON`` reads the "before" column from a run
of this script (or of bench_energy.py) made on an older checkout (``--code DIR`` imports
onnx2snn from DIR). Writes <out>/bench_cheap.json, .md (the README's table) and .png.
Usage: python scripts/bench_cheap.py [--out docs/examples/cheap] [--models ...] [--before old.json]
The published run: ``git archive 7cee304 | tar -x -C /tmp/base`` (main before #32),
``--code /tmp/base --out /tmp/before``, then ``--before /tmp/before/bench_cheap.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TS = (1, 2, 3, 4, 8)
KEEP = 0.99
CLASSIFIERS = ("digits_vit", "digits_mobilenetv3", "digits_convnext", "digits_resnet")
DETECTORS = ("yolov8_silu", "yolo11_silu", "yolov8_relu")
# the targets: energy vs the FP32 ANN at the smallest T keeping 99 % of its quality
TARGET = {"classification": 0.40, "detection": 0.30}
FLOAT_TARGET = 0.20


def measure(name: str, out: Path, n_cls: int, n_det: int, settings: dict) -> dict:
    """One model, one variant: convert with ``settings`` (on top of the defaults), verify at TS."""
    from bench_energy import convert_and_verify

    t0 = time.time()
    preset, rep, metric = convert_and_verify(name, out, n_cls, n_det, TS, settings)
    ref = rep.metrics["reference"][metric]
    ops = rep.layers["ops"]
    res = {"model": name, "task": preset.task, "metric": metric, "ann": ref, "settings": settings,
           "samples": rep.n_samples, "seconds": round(time.time() - t0, 1), "T": {},
           "ann_energy_pj": ops["ann_energy_pj"], "ann_counts": ops["ann_counts"]}
    for T in TS:
        o = ops["snn"][T]
        res["T"][str(T)] = {"quality_of_ann": rep.metrics["snn"][T][metric] / ref,
                            "energy_ratio": o["energy_ratio_vs_ann"], "float_share": o["float_share"],
                            "energy_ratio_int8": o["energy_ratio_vs_int8_ann"], "counts": o["counts"],
                            "by_kind_of_ann": {k: v / ops["ann_energy_pj"] for k, v in o["energy_by_kind_pj"].items()}}
    res["smallest_t"] = smallest_t(res)
    print(f"{name} {settings or ''}: " + ", ".join(
        f"T={T} {100 * r['quality_of_ann']:.1f} % {r['energy_ratio']:.2f}x" for T, r in res["T"].items()), flush=True)
    return res


def smallest_t(res: dict) -> "int | None":
    """The smallest measured T whose quality is at least KEEP of the ANN's."""
    ok = [int(T) for T, r in res["T"].items() if r["quality_of_ann"] >= KEEP]
    return min(ok) if ok else None


def _at(res: dict, T) -> dict:
    return res["T"][str(T)]


def _cell_keep(res: "dict | None") -> str:
    if res is None:
        return "-"
    T = res.get("smallest_t", smallest_t(res))
    if T is None:
        return f"not kept (best {100 * max(r['quality_of_ann'] for r in res['T'].values()):.1f} %)"
    r = _at(res, T)
    return f"T={T}: {r['energy_ratio']:.2f}x, float {100 * r['float_share']:.0f} %, INT8 {r['energy_ratio_int8']:.2f}x"


def readme_table(report: dict) -> str:
    """The README's table: per model, the smallest T keeping 99 % and its energy before / after
    (and per variant), against the issue's target."""
    return tables(report).split("\n\n", 1)[0]


def tables(report: dict) -> str:
    """The headline table (see :func:`readme_table`), then quality / energy at every T."""
    before = {r["model"]: r for r in report.get("before", [])}
    names = [v for v in report["variants"] if v != "after"]
    head = ["| model | target | before (main 7cee304) | after (defaults) |" + "".join(f" {v} |" for v in names),
            "|---|---|---|---|" + "---|" * len(names)]
    rows = []
    for model, by in report["models"].items():
        task = by["after"]["task"]
        rows.append(f"| {model} | <= {TARGET[task]:.2f}x | {_cell_keep(before.get(model))} | {_cell_keep(by['after'])} |"
                    + "".join(f" {_cell_keep(by.get(v))} |" for v in names))
    ts = " / ".join(str(T) for T in TS)
    detail = ["", f"Quality (% of the ANN's top-1 / mAP@0.5) and energy vs the FP32 ANN at T = {ts}:", "",
              "| model | variant | quality | energy | float share | INT8 SNN vs INT8 ANN |", "|---|---|---|---|---|---|"]
    for model, by in report["models"].items():
        runs = ([("before", before[model])] if model in before else []) + list(by.items())
        for v, res in runs:
            cells = [" / ".join(f"{100 * _at(res, T)['quality_of_ann']:.1f}" if str(T) in res["T"] else "-" for T in TS),
                     " / ".join(f"{_at(res, T)['energy_ratio']:.2f}x" if str(T) in res["T"] else "-" for T in TS),
                     " / ".join(f"{100 * _at(res, T)['float_share']:.0f} %" if str(T) in res["T"] else "-" for T in TS),
                     " / ".join(f"{_at(res, T)['energy_ratio_int8']:.2f}x" if str(T) in res["T"] else "-" for T in TS)]
            detail.append(f"| {model} | {v} | " + " | ".join(cells) + " |")
    return "\n".join(head + rows + detail)


def by_kind(report: dict) -> str:
    """Energy by op kind (share of the FP32 ANN's energy) at each model's smallest T keeping 99 %
    after: what holds each model back."""
    kinds = ["ac", "mac", "add", "mul", "cmp", "exp", "div", "sqrt", "neuron"]
    rows = ["| model | T | " + " | ".join(kinds) + " | total |", "|---|---|" + "---|" * (len(kinds) + 1)]
    for model, by in report["models"].items():
        res = by["after"]
        T = res["smallest_t"] or max(TS)
        k = _at(res, T)["by_kind_of_ann"]
        rows.append(f"| {model} | {T} | " + " | ".join(f"{k.get(x, 0):.3f}" for x in kinds)
                    + f" | {_at(res, T)['energy_ratio']:.2f}x |")
    return "\n".join(rows)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(report["models"])
    before = {r["model"]: r for r in report.get("before", [])}
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(models)), 4))
    x = list(range(len(models)))
    w = 0.38

    def at_keep(res):
        if res is None or (res.get("smallest_t") or smallest_t(res)) is None:
            return 0.0
        return _at(res, res.get("smallest_t") or smallest_t(res))["energy_ratio"]
    ax.bar([j - w / 2 for j in x], [at_keep(before.get(m)) for m in models], w, label="before")
    ax.bar([j + w / 2 for j in x], [at_keep(report["models"][m]["after"]) for m in models], w, label="after")
    for j, m in enumerate(models):
        t = TARGET[report["models"][m]["after"]["task"]]
        ax.plot([j - w, j + w], [t, t], color="red", lw=1.5, label="target" if j == 0 else None)
    ax.axhline(1.0, color="black", ls="--", lw=1, label="ANN")
    ax.set_xticks(x, models, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="SNN energy / FP32 ANN energy", title=f"at the smallest T keeping {100 * KEEP:.0f} % of the ANN")
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
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help="an extra variant: convert settings as a JSON object")
    ap.add_argument("--before", type=Path, default=None, help="this script's JSON from the older checkout")
    ap.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the checkout whose onnx2snn is measured (default: this one)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.code))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _train_common import bench_start, write_outputs

    bench_start(args)
    import onnx2snn
    variants = {"after": {}}
    for v in args.variant:
        name, _, text = v.partition("=")
        variants[name] = json.loads(text)
    report = {"settings": {"timesteps": list(TS), "keep": KEEP, "n_cls": args.n_cls, "n_det": args.n_det,
                           "calibration": 256, "conversion": "timesteps=4 plus each variant's settings",
                           "code": str(Path(onnx2snn.__file__).parent), "targets": TARGET,
                           "float_target": FLOAT_TARGET},
              "variants": variants,
              "models": {m: {v: measure(m, args.out, args.n_cls, args.n_det, s) for v, s in variants.items()}
                         for m in args.models}}
    if args.before is not None:
        old = json.loads(args.before.read_text())
        report["before"] = [by["after"] for by in old["models"].values()]
        report["settings"]["before"] = {"code": old["settings"]["code"], "json": str(args.before)}
    text = tables(report) + "\n\nEnergy by op kind, share of the FP32 ANN's energy, after:\n\n" + by_kind(report)
    write_outputs(args.out, "bench_cheap", text, report, plot)


if __name__ == "__main__":
    main()

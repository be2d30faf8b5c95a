"""Post-training conversion of models with SiLU, GELU, HardSwish, gates, softmax attention and
norms (time-averaged operators, no activation replaced, no fine-tuning), per T.

Uses the measurement of ``scripts/bench_thresholds.py`` (512 calibration inputs, each model
converted for each T and scored at that T: share of the ANN's mAP@0.5 / mAP@0.5:0.95 on
digit-scene val for detectors, top-1 on the digits test set for classifiers, energy vs the
ANN from ``onnx2snn.verify``, which counts the operators' float work) for the default
settings and, as an ablation, the spikes per step of the re-encoding neurons
(``reencode_levels``). Writes
<out>/bench_averaged.json, .md and .png.
Usage: python scripts/bench_averaged.py [--out bench-out] [--models yolov8_silu ...] [--n-val 300]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_thresholds as bt  # noqa: E402
from _train_common import bench_start, write_outputs  # noqa: E402

METHODS = {"defaults (reencode_levels=7, binary)": {}, "reencode_levels=3": dict(reencode_levels=3),
           "reencode_levels=7, unit events": dict(reencode_coding="unit"),
           "reencode_levels=2": dict(reencode_levels=2), "reencode_levels=1": dict(reencode_levels=1)}


README_BOLD_T = ("4", "8")  # the few-step settings the README's text compares


def readme_table(averaged: dict, levels_1_3: dict, levels_2: dict, coding: dict, distill: dict) -> str:
    """The docs' yolov8_silu table (docs/hooks.py renders it from the JSON), one
    row per run: the defaults (``averaged``: this script's bench_averaged.json); the re-encoding
    ablations, measured with unit events (ablation_levels_1_3.json, ablation_levels_2.json: an
    earlier run of this script with ``levels=k``, which on this all-SiLU network sets only the
    re-encoding neurons; ablation_coding.json: the defaults' spikes sent as unit events); and, for
    comparison, SiLU -> ReLU without and with distillation (``distill``: scripts/bench_distill.py's
    JSON). Cells: % of the ANN's mAP@0.5 / mAP@0.5:0.95 (energy vs the ANN where measured)."""
    def pct(m, ann):
        return f"{100 * m['mAP50'] / ann['mAP50']:.1f} / {100 * m['mAP50_95'] / ann['mAP50_95']:.1f}"

    def cell(m, ann, energy, bold=False) -> str:
        if m is None:
            return ""
        text = pct(m, ann)
        return (f"**{text}**" if bold else text) + f" ({energy:.2f}x)"

    def rows_of(report: dict, method: str, Ts, bold=()) -> list[str]:
        r = next(r for r in report["models"] if r["model"] == "yolov8_silu")
        per_t = r["methods"][method]
        return [cell(per_t.get(T), r["ann"], per_t.get(T, {}).get("energy_ratio", 0.0), T in bold) for T in Ts]

    ann = next(r for r in averaged["models"] if r["model"] == "yolov8_silu")["ann"]
    Ts = sorted({t for r in averaged["models"] for rows in r["methods"].values() for t in rows}, key=int)
    d = next(d for d in distill["detectors"] if d["model"] == "yolov8_silu")
    trained = next(iter(d["distill"]))
    at_t = {trained: d["distill"][trained], **d["distill"][trained]["at_other_T"]}
    unit7 = [cell(coding.get(f"L=7 T={T}"), ann, coding.get(f"L=7 T={T}", {}).get("energy_unit", 0.0)) for T in Ts]
    rows = {"time-averaged, defaults (7 spikes per step, binary-weighted)":
            rows_of(averaged, next(iter(next(r for r in averaged["models"]
                                                if r["model"] == "yolov8_silu")["methods"])), Ts, README_BOLD_T),
            "the same, sent as unit events": unit7,
            "3 spikes per step (unit events)": rows_of(levels_1_3, "levels=3", Ts),
            "2 spikes per step (unit events)": rows_of(levels_2, "defaults (levels=2)", Ts),
            "1 spike per step": rows_of(levels_1_3, "levels=1", Ts),
            "SiLU -> ReLU, no fine-tuning (earlier table)": [pct(d["plain"][T], d["ann"]) for T in Ts],
            f"SiLU -> ReLU + distillation, {d['epochs']} epochs at T={trained} (earlier table)":
            [pct(at_t[T], d["ann"]) for T in Ts]}
    lines = [f"| yolov8_silu (ANN {ann['mAP50']:.3f} / {ann['mAP50_95']:.3f}) | " + " | ".join(f"T={T}" for T in Ts)
             + " |", "|---" * (len(Ts) + 1) + "|"]
    lines += ["|" + "|".join(f" {c} " if c else " " for c in [label] + cells) + "|" for label, cells in rows.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--models", nargs="*", default=["yolov8_silu"])
    ap.add_argument("--timesteps", type=int, nargs="*", default=[2, 4, 8, 16])
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--n-val", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    bench_start(args)
    bt.METHODS = {k: METHODS[k] for k in args.methods}
    t0 = time.time()
    report = {"torch": torch.__version__, "threads": args.threads, "n_val": args.n_val, "models": []}
    for name in args.models:
        task = bt.zoo.get_preset(name).task
        report["models"].append(bt.detector(name, args.out, args.timesteps, args.n_val) if task == "detection"
                                else bt.classifier(name, args.out, args.timesteps))
    report["seconds"] = round(time.time() - t0, 1)
    text = bt.tables(report) + f"\nrun time {report['seconds']:.0f} s on {args.threads} thread(s)\n"
    write_outputs(args.out, "bench_averaged", text, report, bt.plot)


if __name__ == "__main__":
    main()

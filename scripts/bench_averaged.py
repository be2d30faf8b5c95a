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
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_thresholds as bt  # noqa: E402
from _train_common import write_outputs  # noqa: E402

METHODS = {"defaults (reencode_levels=7, binary)": {}, "reencode_levels=3": dict(reencode_levels=3),
           "reencode_levels=7, unit events": dict(reencode_coding="unit"),
           "reencode_levels=2": dict(reencode_levels=2), "reencode_levels=1": dict(reencode_levels=1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--models", nargs="*", default=["yolov8_silu"])
    ap.add_argument("--timesteps", type=int, nargs="*", default=[2, 4, 8, 16])
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--n-val", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
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

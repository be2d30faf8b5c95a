"""Which axis per-channel thresholds should follow in token layouts: the feature axis (the
default: the last axis after a Linear / LayerNorm, dim 1 after a convolution, followed through
transposes and reshapes; onnx2snn.graph.layout.channel_axes) against dim 1 whatever the layout
(the rule before: one threshold per token in [B, N, D], per row in a channels-last [B, H, W, C]).

Post-training conversion of the zoo's token-layout classifiers (digits_vit: [B, N, D] blocks;
digits_convnext: channels-last LayerNorm / Linear / GELU), 512 calibration digits, the default
settings otherwise, top-1 on the 360 test digits at each T (converted for that T) and the
relative error of the logits against the ANN's (in brackets in the table: less noisy than
top-1 on 360 digits, where one digit is 0.3 points).
Writes <out>/bench_layout.json, .md and .png.
Usage: python scripts/bench_layout.py [--out docs/examples/layout] [--timesteps 2 4 8]
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_common import bench_start, write_outputs  # noqa: E402

import onnx2snn  # noqa: E402
from onnx2snn.calibration import observers  # noqa: E402
from onnx2snn.snn import network  # noqa: E402

RULES = ("feature axis (default)", "dim 1 (before)")


@contextmanager
def dim1_rule():
    """Thresholds along dim 1 of every activation's input, as before the feature axis was followed."""
    saved = observers.channel_axes, network.find_channel_axes

    def dim1(gm, names):
        return {n: 1 for n in names}
    observers.channel_axes = network.find_channel_axes = dim1
    try:
        yield
    finally:
        observers.channel_axes, network.find_channel_axes = saved


def scores(snn, x, y, T, ann_out) -> dict:
    """Top-1 and the relative error of the outputs (logits) against the ANN's."""
    with torch.no_grad():
        out = torch.cat([snn(x[i:i + 120], timesteps=T) for i in range(0, len(x), 120)])
    return {"top1": float((out.argmax(1) == y).float().mean()),
            "output_error": float((out - ann_out).norm() / ann_out.norm())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/examples/layout"))
    ap.add_argument("--models", nargs="*", default=["digits_vit", "digits_convnext"])
    ap.add_argument("--timesteps", type=int, nargs="*", default=[2, 4, 8])
    ap.add_argument("--n-calib", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    bench_start(args)
    xtr, _ = (torch.as_tensor(a) for a in onnx2snn.zoo.load_digits(16, "train"))
    xte, yte = (torch.as_tensor(a) for a in onnx2snn.zoo.load_digits(16, "test"))
    calib = xtr[:args.n_calib]
    report = {"timesteps": args.timesteps, "calibration": len(calib), "test": len(xte), "models": []}
    start = time.time()
    jobs = [(m, r, T) for m in args.models for r in RULES for T in args.timesteps]
    rows: dict = {}
    ann_outs: dict = {}
    for model, rule, T in tqdm(jobs, desc="converting", unit="model"):
        path = str(args.out / f"{model}.onnx")
        if model not in rows:
            onnx2snn.export_zoo_model(model, path)
            twin = onnx2snn.import_onnx(path)
            with torch.no_grad():
                ann_outs[model] = twin(xte)
            ann = float((ann_outs[model].argmax(1) == yte).float().mean())
            rows[model] = {"model": model, "ann_top1": ann, "rules": {r: {} for r in RULES}}
        if rule == RULES[1]:
            with dim1_rule():
                snn = onnx2snn.convert(path, calib, timesteps=T, progress=False)
        else:
            snn = onnx2snn.convert(path, calib, timesteps=T, progress=False)
        axes = sorted({str(m.channel_axis) for m in snn.neurons().values()})
        rows[model]["rules"][rule][T] = {**scores(snn, xte, yte, T, ann_outs[model]), "channel_axes": axes,
                                         "thresholds": int(sum(m.theta.numel() for m in snn.neurons().values()))}
    for model in rows:
        (args.out / f"{model}.onnx").unlink()
    report["models"] = list(rows.values())
    report["seconds"] = round(time.time() - start, 1)
    write_outputs(args.out, "bench_layout", table(report), report, plot)


def table(report: dict) -> str:
    Ts = report["timesteps"]
    lines = ["| model (ANN top-1) | thresholds along | " + " | ".join(f"T={T}" for T in Ts) + " |",
             "|---" * (len(Ts) + 2) + "|"]
    for r in report["models"]:
        for i, rule in enumerate(RULES):
            cells = [f"{100 * r['rules'][rule][T]['top1']:.1f} ({r['rules'][rule][T]['output_error']:.3f})"
                     for T in Ts]
            head = f"{r['model']} ({100 * r['ann_top1']:.1f})" if i == 0 else ""
            lines.append(f"| {head} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Top-1 (top row) and the logits' error against the ANN (bottom row) vs T, per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(report["models"])
    fig, axes = plt.subplots(2, n, figsize=(5 * n, 6.4), squeeze=False)
    for col, r in enumerate(report["models"]):
        for rule, style in zip(RULES, ("-o", "--s")):
            Ts = sorted(int(t) for t in r["rules"][rule])
            rows = [r["rules"][rule].get(T, r["rules"][rule].get(str(T))) for T in Ts]
            axes[0][col].plot(Ts, [100 * v["top1"] for v in rows], style, label=rule)
            axes[1][col].plot(Ts, [v["output_error"] for v in rows], style, label=rule)
        axes[0][col].axhline(100 * r["ann_top1"], color="gray", lw=0.8, label="ANN")
        axes[0][col].set_title(r["model"])
        axes[0][col].set_ylabel("top-1 on test digits (%)")
        axes[1][col].set_ylabel("logits' error vs the ANN")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("timesteps T")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

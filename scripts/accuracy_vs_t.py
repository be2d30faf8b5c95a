"""Accuracy vs timesteps of converted digits classifiers, one column per conversion setting.

For each setting the model is converted once (calibrated on the train split) and run once
to the largest T on the test split (every smaller T is read from the same run). The ANN
column is onnxruntime on the same ONNX file. Prints a markdown table, writes JSON and a
plot.

    OMP_WAIT_POLICY=PASSIVE python scripts/accuracy_vs_t.py [--model digits_resnet] [--out acc_vs_t]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import onnx2snn  # noqa: E402
from onnx2snn import onnx_io  # noqa: E402
from onnx2snn.progress import bar as progress_bar, log_to_stderr  # noqa: E402
from onnx2snn.table import format_table  # noqa: E402

TIMESTEPS = [1, 2, 4, 8, 16, 32, 64, 128]
SETTINGS = {
    "layer, IF": dict(normalization="layer", signed_relu=False),
    "channel, IF": dict(signed_relu=False),
    "channel max, IF": dict(threshold="max", signed_relu=False),
    "channel, 2-level IF": dict(levels=2, signed_relu=False),
    "channel, IF, Poisson input": dict(encoding="poisson", signed_relu=False),
    "layer, signed IF": dict(normalization="layer"),
    "channel, signed IF (default)": dict(),
    "channel, signed IF, folded": dict(fold=True),
}


def main() -> None:
    log_to_stderr()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits_resnet", choices=["digits_resnet", "digits_vgg"])
    ap.add_argument("--out", default="acc_vs_t")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    xtr = torch.as_tensor(onnx2snn.zoo.load_digits(16, "train")[0])
    xte, yte = (torch.as_tensor(a) for a in onnx2snn.zoo.load_digits(16, "test"))
    with tempfile.TemporaryDirectory() as tmp:
        path = onnx2snn.export_zoo_model(args.model, os.path.join(tmp, "m.onnx"))
        ref = onnx_io.run_onnxruntime(path, xte.numpy())[0]
        ann = float((np.argmax(ref, 1) == yte.numpy()).mean() * 100)
        results = {}
        for name, opts in progress_bar(SETTINGS.items(), total=len(SETTINGS), desc="settings", unit="setting"):
            opts = dict(opts)
            fold = opts.pop("fold", False)
            snn = onnx2snn.convert(path, xtr, progress=False, **opts)
            if fold:
                snn = onnx2snn.fold_thresholds(snn)
            with torch.no_grad():
                outs = snn.run_timesteps(xte, checkpoints=TIMESTEPS)
            results[name] = {T: float((o.argmax(1) == yte).float().mean() * 100) for T, o in zip(TIMESTEPS, outs)}
    rows = [[T, f"{ann:.2f}"] + [f"{results[s][T]:.2f}" for s in SETTINGS] for T in TIMESTEPS]
    table = format_table(["T", "ANN (ort)"] + list(SETTINGS), rows)
    print(f"{args.model}: test accuracy (%) on {len(yte)} real digits vs T\n")
    print(table)
    with open(os.path.join(args.out, "accuracy_vs_t.json"), "w") as f:
        json.dump({"model": args.model, "n_test": len(yte), "ann": ann, "timesteps": TIMESTEPS,
                   "settings": {k: {**v} for k, v in SETTINGS.items()}, "accuracy": results}, f, indent=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in SETTINGS:
        ax.plot(TIMESTEPS, [results[name][T] for T in TIMESTEPS], marker="o", label=name)
    ax.axhline(ann, color="k", ls="--", label="ANN (onnxruntime)")
    ax.set(xscale="log", xlabel="timesteps T", ylabel="test accuracy (%)", title=f"{args.model}: SNN vs T")
    ax.set_xticks(TIMESTEPS, [str(t) for t in TIMESTEPS])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "accuracy_vs_t.png"), dpi=120)


if __name__ == "__main__":
    main()

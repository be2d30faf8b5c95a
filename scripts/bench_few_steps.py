"""Few-timestep benchmark: plain conversion, post-conversion calibration and fine-tuning.

(a) digits_resnet: ANN (onnxruntime and twin), plain conversion at T = 4, 8, 16, plain +
    ``onnx2snn.correct`` at the same T, fine-tuned for T = 4 and T = 8.
(b) noise model sweep (none / gaussian / uniform, several scales) at T = 4 on digits_resnet
    and digits_vgg: the SNN's test accuracy and NLL after fine-tuning.
(c) tiny_yolo (LeakyReLU -> IBT) and yolo_relu, fine-tuned for T = 8: mAP@0.5 vs the ANN.
(d) fine-tune time per epoch vs training the SNN directly with surrogate gradients
    through T steps (BPTT), from the same start and for the same epochs.

Prints markdown tables, writes <out>/bench_few_steps.json, .md and .png.
Usage: python scripts/bench_few_steps.py [--out bench-out] [--quick]
Run time: about 15 minutes on 2 shared CPU cores (measured: (a) 124 s, (b) ~7 min, (c) ~6 min,
(d) ~1.5 min; --quick: about 4).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import onnx2snn  # noqa: E402
from onnx2snn import zoo  # noqa: E402
from onnx2snn.calibration.thresholds import calibrate_thresholds  # noqa: E402
from onnx2snn.graph.source import to_twin  # noqa: E402
from onnx2snn.calibration.finetune import core_activations  # noqa: E402
from onnx2snn.onnx_io import run_onnxruntime  # noqa: E402
from onnx2snn.export import export_zoo_model  # noqa: E402
from onnx2snn.table import format_table  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_common import write_outputs  # noqa: E402


def acc(model, x, y, T=None) -> float:
    with torch.no_grad():
        out = model(x) if T is None else model(x, timesteps=T)
    return 100.0 * float((out.argmax(1) == y).float().mean())


def nll(model, x, y) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def digits():
    xtr, ytr = (torch.as_tensor(a) for a in zoo.load_digits(16, "train"))
    xte, yte = (torch.as_tensor(a) for a in zoo.load_digits(16, "test"))
    return xtr, ytr, xte, yte


# -- (a) classification ------------------------------------------------------------------
def classification(out: Path, epochs: int, seeds=(0, 1, 2)) -> dict:
    xtr, ytr, xte, yte = digits()
    path = export_zoo_model("digits_resnet", str(out / "digits_resnet.onnx"))
    twin = onnx2snn.import_onnx(path)
    ort = 100.0 * float((torch.from_numpy(run_onnxruntime(path, xte.numpy())[0]).argmax(1) == yte).float().mean())
    res = {"model": "digits_resnet", "n_test": len(yte), "ann_onnxruntime": ort, "ann_twin": acc(twin, xte, yte),
           "plain": {}, "calibrated": {}, "signed": {}, "signed_calibrated": {}, "finetuned": {},
           "finetuned_plain_if": {}, "calibrate_s": {}}
    # "plain" = conversion with one-sign IF neurons (the baseline); "signed" = the
    # default neurons since they were measured (signed IF takes back over-firing)
    for kind, signed in (("plain", False), ("signed", True)):
        snn = onnx2snn.convert(twin, xtr, timesteps=16, progress=False, signed_relu=signed)
        with torch.no_grad():
            outs = snn.run_timesteps(xte, checkpoints=[4, 8, 16])
        cal = "calibrated" if kind == "plain" else "signed_calibrated"
        for T, o in zip([4, 8, 16], outs):
            res[kind][T] = 100.0 * float((o.argmax(1) == yte).float().mean())
            snn = onnx2snn.convert(twin, xtr, timesteps=T, progress=False, signed_relu=signed)
            t0 = time.perf_counter()
            onnx2snn.correct(snn, xtr, timesteps=T, limit=512, progress=False)
            res["calibrate_s"][T] = round(time.perf_counter() - t0, 1)
            res[cal][T] = acc(snn, xte, yte)
            print(f"  {kind} T={T}: converted {res[kind][T]:.2f}, calibrated {res[cal][T]:.2f}", flush=True)
    res["finetuned_calibrated"], res["finetuned_seeds"] = {}, {}
    for T in (4, 8):  # mean over seeds: one test digit is 0.28 points
        runs = {"finetuned": [], "finetuned_plain_if": [], "finetuned_calibrated": []}
        for seed in seeds:
            ft = onnx2snn.finetune(twin, (xtr, ytr), timesteps=T, epochs=epochs, seed=seed, progress=False,
                                   loss="cross_entropy")
            snn = onnx2snn.convert(ft, timesteps=T, progress=False)
            runs["finetuned"].append(acc(snn, xte, yte))
            onnx2snn.correct(snn, xtr, timesteps=T, limit=512, progress=False)
            runs["finetuned_calibrated"].append(acc(snn, xte, yte))
            runs["finetuned_plain_if"].append(acc(onnx2snn.convert(ft, timesteps=T, signed_relu=False, progress=False),
                                                  xte, yte))
            res.setdefault("finetune_s", {})[T] = ft.finetune_info["seconds"]
        for k, v in runs.items():
            res[k][T] = sum(v) / len(v)
        res["finetuned_seeds"][T] = runs
        print(f"  fine-tuned T={T}: {runs}", flush=True)
    res["epochs"], res["seeds"] = epochs, list(seeds)
    ann = res["ann_twin"]
    res["goals"] = {
        "finetune_T4_within_0.5": ann - max(res["finetuned"][4], res["finetuned_calibrated"][4]) <= 0.5 + 1e-9,
        "finetune_T8_within_0.1": ann - max(res["finetuned"][8], res["finetuned_calibrated"][8]) <= 0.1 + 1e-9,
        "calibrate_halves_drop_T16": (ann - res["calibrated"][16]) <= 0.5 * (ann - res["plain"][16]) + 1e-9,
    }
    return res


# -- (b) noise sweep ---------------------------------------------------------------------
NOISES = [(None, 0.0), ("gaussian", 0.1), ("gaussian", 0.25), ("gaussian", 0.5), ("gaussian", 1.0),
          ("uniform", 0.1), ("uniform", 0.25), ("uniform", 0.5), ("uniform", 1.0)]


def noise_sweep(epochs: int, T: int = 4, models=("digits_resnet", "digits_vgg"), seeds=(0, 1)) -> dict:
    xtr, ytr, xte, yte = digits()
    res = {"T": T, "epochs": epochs, "seeds": list(seeds), "rows": []}
    for name in models:
        twin = to_twin(zoo.build_model(name), xtr[:1])
        for noise, scale in NOISES:
            accs, nlls = [], []
            for seed in seeds:
                ft = onnx2snn.finetune(twin, (xtr, ytr), timesteps=T, epochs=epochs, noise=noise, noise_scale=scale,
                                       loss="cross_entropy",
                                       seed=seed, progress=False)
                snn = onnx2snn.convert(ft, timesteps=T, progress=False)
                accs.append(acc(snn, xte, yte))
                nlls.append(nll(snn, xte, yte))
            row = {"model": name, "noise": noise, "scale": scale, "acc": sum(accs) / len(accs),
                   "nll": sum(nlls) / len(nlls)}
            res["rows"].append(row)
            print(f"  {name} {noise} {scale}: acc {row['acc']:.2f} nll {row['nll']:.4f}", flush=True)
    agg = {}
    for r in res["rows"]:
        agg.setdefault((r["noise"], r["scale"]), []).append(r["nll"])
    best = min(agg, key=lambda k: sum(agg[k]) / len(agg[k]))
    res["best_by_mean_nll"] = {"noise": best[0], "scale": best[1]}
    return res


# -- (c) detection -----------------------------------------------------------------------
def detection(name: str, T: int, epochs: int, per_epoch: int, n_val: int, lr: float) -> dict:
    preset = zoo.get_preset(name)
    decode = zoo.get_decoder(preset.decoder)
    val = zoo.digit_scenes("val", n=n_val)
    calib, _ = zoo.scenes_to_tensors(zoo.digit_scenes("train", n=256))
    twin = to_twin(zoo.build_model(name), calib[:1])
    ann = zoo.evaluate_detector(twin, decode, val)
    plain = zoo.evaluate_detector(onnx2snn.convert(twin, calib, timesteps=T, progress=False), decode, val)

    def scenes(epoch):  # fresh train scenes every epoch, as the zoo detectors were trained
        sc = zoo.make_scenes(per_epoch, "train", seed=7 + 1000 * epoch)
        for i in range(0, len(sc), 32):
            yield zoo.scenes_to_tensors(sc[i:i + 32])

    ft = onnx2snn.finetune(twin, scenes, timesteps=T, epochs=epochs, loss=name, lr=lr, calibration_data=calib,
                           progress=False)
    snn = onnx2snn.convert(ft, timesteps=T, progress=False)
    tuned = zoo.evaluate_detector(snn, decode, val)
    onnx2snn.correct(snn, calib, timesteps=T, progress=False)
    tuned_cal = zoo.evaluate_detector(snn, decode, val)
    res = {"model": name, "T": T, "n_val": n_val, "ann": ann, "plain": plain, "finetuned": tuned,
           "finetuned_calibrated": tuned_cal, "epochs": epochs, "scenes_per_epoch": per_epoch, "lr": lr,
           "finetune_s": ft.finetune_info["seconds"]}
    best = max(tuned["mAP50"], tuned_cal["mAP50"])
    res["ratio_mAP50"] = best / ann["mAP50"]
    res["goal_99pct"] = res["ratio_mAP50"] >= 0.99
    print(f"  {name}: ANN {ann['mAP50']:.4f}, plain {plain['mAP50']:.4f}, fine-tuned {tuned['mAP50']:.4f}, "
          f"+calibrate {tuned_cal['mAP50']:.4f}", flush=True)
    return res


# -- (d) BPTT baseline -------------------------------------------------------------------
class _Spike(torch.autograd.Function):
    """Heaviside forward, rectangular surrogate gradient (width one threshold) backward."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return (u >= 0).to(u)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * (u.abs() < 0.5).to(grad)


class SurrogateIF(nn.Module):
    """IF neuron for training through time: [T*B, ...] in, T steps, reset by subtraction,
    v0 = theta / 2, trainable per-channel theta (BPTT baseline only)."""

    def __init__(self, theta: torch.Tensor, T: int):
        super().__init__()
        self.theta = nn.Parameter(theta.clone().float())
        self.T = T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.reshape((self.T, -1) + tuple(x.shape[1:]))
        th = self.theta.clamp_min(1e-3).reshape((1, -1) + (1,) * (x.dim() - 2))
        v = 0.5 * th
        outs = []
        for t in range(self.T):
            v = v + xs[t]
            s = _Spike.apply((v - th) / th) * th
            v = v - s
            outs.append(s)
        return torch.stack(outs).reshape(x.shape)


def bptt(twin, xtr, ytr, T: int, epochs: int, lr: float = 1e-3, batch: int = 64, seed: int = 0):
    """Train the twin as a T-step SNN with surrogate gradients; return (twin, thresholds, s/epoch)."""
    import copy

    torch.manual_seed(seed)
    net = copy.deepcopy(twin)
    net.onnx_info = twin.onnx_info
    thresholds, _ = calibrate_thresholds(net, xtr, progress=False)
    acts = {}
    for target in core_activations(net):
        parent, _, attr = target.rpartition(".")
        acts[target] = net.get_submodule(target)
        setattr(net.get_submodule(parent) if parent else net, attr, SurrogateIF(thresholds[target], T))
    net.recompile()
    net.eval()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * -(-len(xtr) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            xb = xtr[idx]
            xt = xb.unsqueeze(0).expand((T,) + tuple(xb.shape)).reshape((T * len(xb),) + tuple(xb.shape[1:]))
            out = net(xt).reshape(T, len(xb), -1).mean(0)
            loss = F.cross_entropy(out, ytr[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            sched.step()
    per_epoch = (time.perf_counter() - t0) / epochs
    learned = {}
    for target, act in acts.items():
        learned[target] = net.get_submodule(target).theta.detach().clamp_min(1e-3).clone()
        parent, _, attr = target.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, act)
    net.recompile()
    net.learned_thresholds = learned
    return net, per_epoch


def timing(epochs: int) -> dict:
    xtr, ytr, xte, yte = digits()
    twin = to_twin(zoo.build_model("digits_resnet"), xtr[:1])
    res = {"model": "digits_resnet", "epochs": epochs, "batch": 64, "threads": torch.get_num_threads(), "rows": {}}
    for T in (4, 8):
        t0 = time.perf_counter()
        ft = onnx2snn.finetune(twin, (xtr, ytr), timesteps=T, epochs=epochs, progress=False, loss="cross_entropy")
        total_ft = time.perf_counter() - t0
        ft_epoch = ft.finetune_info["history"][-1]["time_s"] / epochs
        net, bp_epoch = bptt(twin, xtr, ytr, T, epochs)
        row = {"finetune_s_per_epoch": ft_epoch, "finetune_total_s": total_ft, "bptt_s_per_epoch": bp_epoch,
               "saving_pct": 100.0 * (1 - ft_epoch / bp_epoch),
               "finetune_acc": acc(onnx2snn.convert(ft, timesteps=T, progress=False), xte, yte),
               "bptt_acc": acc(onnx2snn.convert(net, timesteps=T, signed_relu=False, progress=False), xte, yte)}
        res["rows"][T] = row
        print(f"  T={T}: fine-tune {ft_epoch:.2f} s/epoch, BPTT {bp_epoch:.2f} s/epoch "
              f"({row['saving_pct']:.0f}% less)", flush=True)
    return res


# -- report ------------------------------------------------------------------------------
def tables(r: dict) -> str:
    c = r["classification"]
    ann = c["ann_twin"]
    lines = [f"## (a) digits_resnet, {c['n_test']} test digits, top-1 accuracy (%)",
             f"ANN: onnxruntime {c['ann_onnxruntime']:.2f}, twin {ann:.2f}. Fine-tune: {c['epochs']} epochs on the "
             f"1437 train digits, mean of seeds {c['seeds']} (one test digit = 0.28 points); calibrate: 512 train "
             "samples, bias + potential correction.", ""]
    rows = []
    for T in (4, 8, 16):
        ft = c["finetuned"].get(T)
        rows.append([f"T={T}", f"{c['plain'][T]:.2f} ({c['plain'][T] - ann:+.2f})",
                     f"{c['calibrated'][T]:.2f} ({c['calibrated'][T] - ann:+.2f})",
                     f"{c['signed'][T]:.2f} ({c['signed'][T] - ann:+.2f})",
                     f"{c['signed_calibrated'][T]:.2f} ({c['signed_calibrated'][T] - ann:+.2f})",
                     "-" if ft is None else f"{ft:.2f} ({ft - ann:+.2f})",
                     "-" if ft is None else f"{c['finetuned_calibrated'][T]:.2f} ({c['finetuned_calibrated'][T] - ann:+.2f})",
                     "-" if ft is None else f"{c['finetuned_plain_if'][T]:.2f}"])
    lines += [format_table(["", "conversion, IF", "IF + calibrate", "conversion, signed IF (default)",
                            "signed + calibrate", "fine-tuned for T (signed IF)",
                            "fine-tuned + calibrate", "fine-tuned, plain IF"], rows), ""]
    lines += [f"- goal fine-tuned T=4 within 0.5 of ANN: {'MET' if c['goals']['finetune_T4_within_0.5'] else 'NOT MET'}",
              f"- goal fine-tuned T=8 within 0.1 of ANN: {'MET' if c['goals']['finetune_T8_within_0.1'] else 'NOT MET'}",
              f"- goal calibration halves the drop at T=16: "
              f"{'MET' if c['goals']['calibrate_halves_drop_T16'] else 'NOT MET'} "
              f"(drop {ann - c['plain'][16]:.2f} -> {ann - c['calibrated'][16]:.2f})", ""]
    if "noise" in r:
        n = r["noise"]
        lines += [f"## (b) noise model, fine-tuned for T={n['T']} ({n['epochs']} epochs, mean of seeds {n['seeds']}): "
                  "SNN test accuracy (%) / NLL", ""]
        models = sorted({x["model"] for x in n["rows"]})
        keyed = {(x["model"], x["noise"], x["scale"]): x for x in n["rows"]}
        rows = [[str(k), f"{s:g}"] + [f"{keyed[(m, k, s)]['acc']:.2f} / {keyed[(m, k, s)]['nll']:.4f}" for m in models]
                for k, s in NOISES]
        lines += [format_table(["noise", "std (spikes)"] + models, rows), "",
                  f"best by mean NLL: {n['best_by_mean_nll']}", ""]
    if "detection" in r:
        lines += ["## (c) detection at T=8, digit scenes val, mAP@0.5 (mAP@0.5:0.95)", ""]
        rows = []
        for d in r["detection"]:
            def f(m):
                return f"{m['mAP50']:.4f} ({m['mAP50_95']:.4f})"
            rows.append([d["model"], str(d["n_val"]), f(d["ann"]), f(d["plain"]), f(d["finetuned"]),
                         f(d["finetuned_calibrated"]), f"{100 * d['ratio_mAP50']:.1f}%",
                         "MET" if d["goal_99pct"] else "NOT MET"])
        lines += [format_table(["model", "n", "ANN", "converted T=8 (default neurons)", "fine-tuned T=8", "fine-tuned + calibrate",
                                "best / ANN", ">= 99%"], rows), ""]
        lines += ["fine-tune: " + "; ".join(f"{d['model']} {d['epochs']} epochs x {d['scenes_per_epoch']} scenes, "
                                            f"lr {d['lr']:g}, {d['finetune_s']:.0f} s" for d in r["detection"]), ""]
    if "timing" in r:
        t = r["timing"]
        lines += [f"## (d) training time per epoch, digits_resnet, {t['epochs']} epochs, batch {t['batch']}, "
                  f"{t['threads']} thread(s)", ""]
        rows = [[f"T={T}", f"{v['finetune_s_per_epoch']:.2f}", f"{v['bptt_s_per_epoch']:.2f}",
                 f"{v['saving_pct']:.0f}%", f"{v['finetune_acc']:.2f}", f"{v['bptt_acc']:.2f}"]
                for T, v in t["rows"].items()]
        lines += [format_table(["", "fine-tune s/epoch", "BPTT s/epoch", "time saved", "fine-tune SNN acc",
                                "BPTT SNN acc"], rows), ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = r["classification"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    Ts = [4, 8, 16]
    ax.plot(Ts, [c["plain"][T] for T in Ts], "o-", label="conversion, IF")
    ax.plot(Ts, [c["calibrated"][T] for T in Ts], "s-", label="IF + calibrate")
    if "signed" in c:
        ax.plot(Ts, [c["signed"][T] for T in Ts], "o--", label="conversion, signed IF")
        ax.plot(Ts, [c["signed_calibrated"][T] for T in Ts], "s--", label="signed + calibrate")
    ax.plot(list(c["finetuned"]), list(c["finetuned"].values()), "^-", label="fine-tuned for T")
    ax.axhline(c["ann_twin"], color="k", ls="--", label="ANN")
    ax.set(xscale="log", xlabel="timesteps T", ylabel="top-1 accuracy (%)", title="digits_resnet")
    ax.set_xticks(Ts, [str(T) for T in Ts])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--quick", action="store_true", help="fewer epochs, no noise sweep, smaller detection runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["classification", "noise", "detection", "timing"])
    ap.add_argument("--reuse", type=Path, default=None, help="earlier JSON: skipped sections are copied from it")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    report = {"torch": torch.__version__, "threads": args.threads, "quick": args.quick}
    print("(a) classification", flush=True)
    old = {}
    if args.reuse and args.reuse.exists():  # sections skipped now are taken from an earlier run
        old = json.loads(args.reuse.read_text(), object_hook=lambda d: {int(k) if k.isdigit() else k: v
                                                                      for k, v in d.items()})
        report.update({k: v for k, v in old.items() if k in args.skip})
        report["reused_from"] = str(args.reuse)
    if "classification" not in args.skip:
        report["classification"] = classification(args.out, epochs=2)
    if "noise" not in args.skip and not args.quick:
        print("(b) noise sweep", flush=True)
        report["noise"] = noise_sweep(epochs=2)
    if "detection" not in args.skip:
        print("(c) detection", flush=True)
        per, ep = (640, 2) if args.quick else (1280, 8)
        report["detection"] = [detection(name, 8, ep, per, 200, 1e-3) for name in ("tiny_yolo", "yolo_relu")]
    if "timing" not in args.skip:
        print("(d) fine-tune vs BPTT time", flush=True)
        report["timing"] = timing(epochs=1 if args.quick else 2)
    report["seconds"] = round(time.time() - t0, 1)
    text = tables(report) + f"\nrun time {report['seconds']:.0f} s on {args.threads} thread(s)\n"
    write_outputs(args.out, "bench_few_steps", text, report, plot)


if __name__ == "__main__":
    main()

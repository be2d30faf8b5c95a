"""NIR export: agreement of the reloaded network with ours, and what other toolkits read.

    python scripts/nir_agreement.py --out nir-agreement            # shared venv (nir >= 1.0.6)
    /work/venvs/sinabs/bin/python scripts/nir_agreement.py --out nir-agreement --sinabs

The first run converts digits_resnet and digits_vgg (max-pools replaced by average pools,
fine-tuned 6 epochs) with NIR-compatible settings (signed_relu=False), exports them (NIR
files in --out), reads them back with onnx2snn.import_nir and compares every neuron's
spike at every step (T = 64) and the accuracy at every T = 1..64 on the 360 test digits;
then nirtorch's executor (step-wise, our node map) and snnTorch's importer at T=32. The
second run (a venv with sinabs, which pins nir <= 1.0.4) reads the same files with nir
1.0.4, runs import_nir and sinabs' from_nir at T=32. Both print a table and update
``report.json`` (and ``accuracy.png``) in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import onnx2snn
from onnx2snn import onnx_io

T_MAX = 64


def _acc(out, y) -> float:
    return float((out.argmax(1).numpy() == y).mean())


def _ann_acc(path, x, y) -> float:
    return float((onnx_io.run_onnxruntime(path, x.numpy())[0].argmax(1) == y).mean())


def build(out: str) -> dict:
    xtr, ytr = onnx2snn.zoo.load_digits(16, "train")
    res = onnx2snn.export_zoo_model("digits_resnet", os.path.join(out, "digits_resnet.onnx"))
    vgg = onnx2snn.export_zoo_model("digits_vgg", os.path.join(out, "digits_vgg.onnx"))
    avg = onnx2snn.replace_maxpool(vgg, os.path.join(out, "digits_vgg_avg.onnx"))
    twin = onnx2snn.finetune(avg, (xtr, ytr), timesteps=32, epochs=6, lr=3e-3, levels=1, progress=False)
    return {"digits_resnet": (res, onnx2snn.convert(res, xtr, signed_relu=False, levels=1, progress=False)),
            "digits_vgg": (vgg, onnx2snn.convert(twin, timesteps=32, signed_relu=False, levels=1, progress=False))}


def main_run(out: str) -> dict:
    import nir

    x, y = (torch.as_tensor(a) for a in onnx2snn.zoo.load_digits(16, "test"))
    y = y.numpy()
    report = {"nir_version": nir.version, "n_test": len(y), "models": {}}
    ts = list(range(1, T_MAX + 1))
    for name, (onnx_path, snn) in build(out).items():
        t0 = time.time()
        folded = onnx2snn.fold_thresholds(snn)
        path = os.path.join(out, f"{name}.nir")
        onnx2snn.export_nir(snn, path)
        onnx2snn.export_nir(snn, os.path.join(out, f"{name}_sum.nir"), pool="sum")
        net = onnx2snn.import_nir(path)
        ours, theirs, hooks = {}, {}, []
        for store, mods in ((ours, folded.neurons()), (theirs, net.neurons())):
            for k, m in mods.items():
                hooks.append(m.register_forward_hook(lambda mod, i, o, k=k, s=store: s.__setitem__(k, o.clone())))
        with torch.no_grad():
            a = folded.run_timesteps(x, checkpoints=ts)
            b = net.run_timesteps(x, checkpoints=ts)
        for h in hooks:
            h.remove()
        names = {n.target: n.name for n in folded.rewritten.graph.nodes if n.op == "call_module"}
        mism = sum(int((s != theirs[names[k]]).sum()) for k, s in ours.items())
        total = sum(s.numel() for s in ours.values())
        spikes = sum(int(s.sum()) for s in ours.values())
        row = {"file": path, "file_kib": round(os.path.getsize(path) / 1024),
               "nodes": len(net.graph.nodes), "edges": len(net.graph.edges),
               "ann_source_onnx": _ann_acc(onnx_path, x, y),
               "spike_decisions_compared": total, "spikes": spikes, "spike_mismatches": mism,
               "acc_ours": {t: _acc(o, y) for t, o in zip(ts, a)},
               "acc_nir": {t: _acc(o, y) for t, o in zip(ts, b)},
               "max_abs_output_diff": max(float((u - v).abs().max()) for u, v in zip(a, b))}
        if name == "digits_vgg":
            row["ann_avgpool_finetuned"] = float((snn.ann(x).argmax(1).numpy() == y).mean())
        row["acc_equal_every_t"] = row["acc_ours"] == row["acc_nir"]
        row["nirtorch_t32"] = nirtorch_check(path, x, y)
        row["snntorch"] = snntorch_check(path)
        row["seconds"] = round(time.time() - t0, 1)
        report["models"][name] = row
    return report


def nirtorch_check(path, x, y):
    try:
        import nir
        import nirtorch
        from onnx2snn.deploy.nir_import import nirtorch_node_map
    except ImportError as e:
        return f"not installed ({e})"

    gm = nirtorch.nir_to_torch(nir.read(path), nirtorch_node_map(nir))
    state, acc = None, 0
    with torch.no_grad():
        for _ in range(32):
            o, state = gm(x, state)
            acc = acc + o
    return {"accuracy": _acc(acc / 32, y), "version": nirtorch.__version__}


def snntorch_check(path):
    try:
        import nir
        import snntorch
        from snntorch.import_nir import import_from_nir
    except ImportError as e:
        return f"not installed ({e})"
    try:
        gm = import_from_nir(nir.read(path))
        leaky = [float(m.beta) for m in gm.modules() if isinstance(m, snntorch.Leaky)]
        gm(torch.zeros(2, 1, 16, 16))
        return {"version": snntorch.__version__, "ran": True, "leaky_betas": leaky}
    except Exception as e:  # noqa: BLE001 - we record what the other toolkit does
        return {"version": snntorch.__version__, "ran": False, "error": f"{type(e).__name__}: {str(e)[:160]}"}


def sinabs_run(out: str, report: dict) -> dict:
    import nir
    import sinabs
    from sinabs import from_nir

    x, y = (torch.as_tensor(a) for a in onnx2snn.zoo.load_digits(16, "test"))
    y = y.numpy()
    B, T = len(x), 32
    res = {"nir_version": getattr(nir, "version", ""), "sinabs_version": sinabs.__version__}
    for name in report.get("models", {}) or ("digits_resnet", "digits_vgg"):
        row = {}
        for kind in ("", "_sum"):
            path = os.path.join(out, f"{name}{kind}.nir")
            net = onnx2snn.import_nir(path)  # nir 1.0.4 reading files written by the newer nir
            with torch.no_grad():
                row[f"import_nir{kind or '_avg'}_t32"] = _acc(net(x, timesteps=T), y)
        try:
            sn = from_nir(nir.read(os.path.join(out, f"{name}_sum.nir")), batch_size=B)
            xin = x.unsqueeze(1).expand(B, T, *x.shape[1:]).reshape(B * T, *x.shape[1:])
            with torch.no_grad():
                o = sn(xin)
            o = (o[0] if isinstance(o, tuple) else o).reshape(B, T, -1).mean(1)
            row["sinabs_sum_t32"] = _acc(o, y)
        except Exception as e:  # noqa: BLE001
            row["sinabs_sum_t32"] = f"{type(e).__name__}: {str(e)[:160]}"
        res[name] = row
    report["sinabs"] = res
    return report


def table(report: dict) -> str:
    lines = ["| model | T | ANN | ours | NIR reloaded | nirtorch | sinabs |", "|---|---|---|---|---|---|---|"]
    for name, r in report.get("models", {}).items():
        for t in (1, 2, 4, 8, 16, 32, 64):
            nt = r["nirtorch_t32"]["accuracy"] if t == 32 and isinstance(r["nirtorch_t32"], dict) else ""
            sb = report.get("sinabs", {}).get(name, {}).get("sinabs_sum_t32", "") if t == 32 else ""
            lines.append(f"| {name} | {t} | {r['ann_source_onnx']:.4f} | {r['acc_ours'][t]:.4f} | "
                         f"{r['acc_nir'][t]:.4f} | {nt if isinstance(nt, str) else f'{nt:.4f}'} | "
                         f"{sb if isinstance(sb, str) else f'{sb:.4f}'} |")
    for name, r in report.get("models", {}).items():
        lines.append(f"\n{name}: {r['spike_mismatches']} of {r['spike_decisions_compared']} spike decisions differ "
                     f"({r['spikes']} spikes, T={T_MAX}); accuracy equal at every T=1..{T_MAX}: "
                     f"{r['acc_equal_every_t']}; max |output diff| {r['max_abs_output_diff']:.2e}; "
                     f"snnTorch: {r['snntorch']}")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in report["models"].items():
        ts = sorted(int(t) for t in r["acc_ours"])
        ax.plot(ts, [r["acc_ours"][t] for t in ts], label=f"{name} ours")
        ax.plot(ts, [r["acc_nir"][t] for t in ts], "--", label=f"{name} NIR reloaded")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("top-1 (360 test digits)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="nir-agreement")
    p.add_argument("--sinabs", action="store_true", help="read the files of an earlier run with sinabs (its venv)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    rpath = os.path.join(args.out, "report.json")
    if args.sinabs:
        with open(rpath) as f:
            report = json.load(f)
        for r in report["models"].values():
            for k in ("acc_ours", "acc_nir"):
                r[k] = {int(t): v for t, v in r[k].items()}
        report = sinabs_run(args.out, report)
    else:
        report = main_run(args.out)
        plot(report, os.path.join(args.out, "accuracy.png"))
    with open(rpath, "w") as f:
        json.dump(report, f, indent=1)
    print(table(report))
    if "sinabs" in report:
        print("\nsinabs venv:", json.dumps(report["sinabs"], indent=1))


if __name__ == "__main__":
    main()

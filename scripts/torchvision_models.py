"""Every classification model of torchvision.models through both torch exporters and import_onnx.

    nice -n 10 python scripts/torchvision_models.py                      # all 80, both exporters
    python scripts/torchvision_models.py --models resnet18 swin_t --exporters dynamo
    python scripts/torchvision_models.py --resume --out torchvision_models.json

Random weights (seeded; BatchNorm statistics randomized so BN is really tested), a small
input (64x64 unless the architecture needs more), batch 2. Each (model, exporter) runs in its
own process with a timeout. Per row: export (torch), import (onnx2snn), the relative error
max |twin - onnxruntime| / max(1, max |ref|) (target <= 1e-4), the seconds of each step, and
what `inspect` says blocks spiking conversion. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
TOL = 1e-4

# input size (and builder kwargs) where the default 64x64 does not fit the architecture
SIZES = {"inception_v3": 96, "maxvit_t": 224, "vit_h_14": 56}
KWARGS = {"vit_b_16": {"image_size": 64}, "vit_b_32": {"image_size": 64}, "vit_l_16": {"image_size": 64},
          "vit_l_32": {"image_size": 64}, "vit_h_14": {"image_size": 56}, "googlenet": {"init_weights": True},
          "inception_v3": {"init_weights": True}}


def build(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **KWARGS.get(name, {}))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # torchvision starts some weights at 0 (ViT's head): the outputs would be 0
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0, 0.2, generator=g)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    model.eval()
    last = [x for x in model.modules() if isinstance(x, torch.nn.Linear)][-1]
    with torch.no_grad():  # logits of std 1: the error bound max(1, max |ref|) is then a relative one
        size = SIZES.get(name, 64)
        std = float(model(torch.randn(2, 3, size, size, generator=g)).std())
        last.weight.div_(std)
        if last.bias is not None:
            last.bias.div_(std)
    return model


def run_one(name: str, exporter: str) -> dict:
    """Export, import, compare one model (in this process)."""
    import warnings

    import numpy as np
    import torch

    import onnx2snn
    from onnx2snn import onnx_io
    from onnx2snn.graph.analysis import analyze

    warnings.simplefilter("ignore")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    size = SIZES.get(name, 64)
    row = {"model": name, "exporter": exporter, "size": size}
    model = build(name)
    row["params"] = sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        t0 = time.perf_counter()
        row["file_batch"] = "dynamic"
        try:
            try:
                # the whole batch of 2: torch.export specializes a batch-1 example to batch 1
                onnx2snn.export_onnx(model, x, path, opset=18 if exporter == "dynamo" else 17,
                                     dynamo=exporter == "dynamo")
            except Exception:  # noqa: BLE001 - torch.export often fails on a dynamic batch: try a static one
                row["file_batch"] = "static"
                onnx2snn.export_onnx(model, x[:1], path, opset=18 if exporter == "dynamo" else 17,
                                     dynamo=exporter == "dynamo", dynamic_batch=False)
        except Exception as e:  # noqa: BLE001 - torch could not export it: recorded, not ours
            cause = e.__cause__ or e
            row.update(status="export failed", detail=f"{type(cause).__name__}: {_line(cause)}")
            return row
        row["export_s"] = round(time.perf_counter() - t0, 1)
        import onnx

        dim0 = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
        row["file_batch"] = "dynamic" if dim0.dim_param else "static"  # torch.export may fix it silently
        t0 = time.perf_counter()
        try:
            twin = onnx2snn.import_onnx(path)
        except onnx2snn.Onnx2SnnError as e:
            row.update(status="refused", detail=f"{type(e).__name__}: {_line(e)}")
            return row
        except Exception as e:  # noqa: BLE001
            row.update(status="CRASH", detail=f"{type(e).__name__}: {_line(e)}")
            return row
        row["import_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        sess = onnx_io.ort_session(path)  # per sample: the file may fix the batch at 1
        ref = np.concatenate([onnx_io.run_onnxruntime(path, x[i:i + 1].numpy(), session=sess)[0]
                              for i in range(len(x))])
        row["twin_batch"] = "any" if twin.onnx_info.batch_flexible else "1 only"
        try:
            with torch.no_grad():
                if twin.onnx_info.batch_flexible:
                    out = twin(x)
                    out = (out[0] if isinstance(out, tuple) else out).numpy()
                else:  # the file ties its shapes to batch 1: the twin says so; compare sample by sample
                    out = np.concatenate([(lambda o: (o[0] if isinstance(o, tuple) else o).numpy())(
                        twin(x[i:i + 1])) for i in range(len(x))])
        except Exception as e:  # noqa: BLE001
            row.update(status="CRASH", detail=f"twin at batch {len(x)}: {type(e).__name__}: {_line(e)}")
            return row
        row["run_s"] = round(time.perf_counter() - t0, 1)
    err = float(np.abs(out - ref).max() / max(1.0, float(np.abs(ref).max())))
    row.update(status="exact" if err <= TOL else "WRONG", err=err, max_ref=float(np.abs(ref).max()),
               ref_std=float(ref.std()))
    acts, ops, _ = analyze(twin).blockers()
    row["blockers"] = {k: len(v) for k, v in list(acts.items()) + list(ops.items())}
    return row


def _line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="default: every classification model in torchvision.models")
    ap.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"], choices=["torchscript", "dynamo"])
    ap.add_argument("--out", default="torchvision_models.json")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per model and exporter")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "EXPORTER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print("ROW " + json.dumps(run_one(*args.one)), flush=True)
        return 0

    import torchvision

    models = args.models or torchvision.models.list_models(module=torchvision.models)
    rows: list[dict] = []
    if args.resume and os.path.isfile(args.out):
        with open(args.out) as f:
            rows = json.load(f)["rows"]
    done = {(r["model"], r["exporter"]) for r in rows}
    from onnx2snn.progress import bar, log_to_stderr

    log_to_stderr()
    todo = [(m, e) for m in models for e in args.exporters if (m, e) not in done]
    for name, exporter in bar(todo, unit="model", desc="torchvision"):
        t0 = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, __file__, "--one", name, exporter], capture_output=True, text=True,
                               timeout=args.timeout, env={**os.environ, "PYTHONPATH": ROOT})
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("ROW ")]
            row = json.loads(line[-1][4:]) if line else {
                "model": name, "exporter": exporter, "status": "CRASH",
                "detail": f"exit code {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1][:300]}"}
        except subprocess.TimeoutExpired:
            row = {"model": name, "exporter": exporter, "status": "timeout", "detail": f"> {args.timeout:g} s"}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        with open(args.out, "w") as f:
            json.dump({"tolerance": TOL, "rows": rows}, f, indent=1)
    print_table(rows)
    print(f"wrote {args.out}")
    return 0


def print_table(rows: list[dict]) -> None:
    by_model: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["exporter"]] = r

    def cell(r):
        if r is None:
            return "-"
        if r["status"] in ("exact", "WRONG"):
            return f"{r['status']} {r['err']:.1e}" + (" (batch 1)" if r.get("twin_batch") == "1 only" else "")
        return r["status"]

    head = ["model", "params (M)", "size", "TorchScript", "dynamo", "blocks spiking conversion"]
    table = []
    for m, d in by_model.items():
        any_row = next(iter(d.values()))
        blockers = next((r.get("blockers") for r in d.values() if r.get("blockers") is not None), None)
        table.append([m, f"{any_row.get('params', 0) / 1e6:.1f}", any_row.get("size", ""),
                      cell(d.get("torchscript")), cell(d.get("dynamo")),
                      "-" if blockers is None else ", ".join(f"{k} ({v})" for k, v in blockers.items()) or "nothing"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for t in table:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(t, widths)) + " |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[f"{r['exporter']} {r['status']}"] = counts.get(f"{r['exporter']} {r['status']}", 0) + 1
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for r in rows:
        if r["status"] not in ("exact",):
            print(f"  {r['model']} [{r['exporter']}] {r['status']}: {r.get('detail', '')}")


if __name__ == "__main__":
    sys.exit(main())

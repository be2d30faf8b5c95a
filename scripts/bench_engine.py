"""Benchmark of the multi-step engine: SNN at T steps vs the ANN on a batch T times larger.

Prints a table: for each model and T, median time of the SNN forward (T steps, batch B)
divided by the median time of the ANN twin on a batch of T*B, measured interleaved in
one run, for the eager engine and the torch.compile engine (``snn.compile()``; its
one-off compile time is a column of its own), and peak memory of each (CUDA only:
torch's allocator statistics). Target: ratio <= 1.3 on the CPU. Writes JSON too.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_engine.py [--device cuda] [--json out.json]

``--compare PATH`` measures another checkout (e.g. ``/work/main``) side by side: rounds of
one child process on PATH and one on this tree, alternating, each measuring its own
SNN / ANN ratios interleaved; the table gives the median ratio of each (eager engine).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402

import onnx2snn  # noqa: E402
from onnx2snn.table import format_table  # noqa: E402


def models(tmp: str):
    yield "digits_resnet", onnx2snn.export_zoo_model("digits_resnet", os.path.join(tmp, "r.onnx")), (1, 16, 16), 32
    yield "digits_vgg", onnx2snn.export_zoo_model("digits_vgg", os.path.join(tmp, "v.onnx")), (1, 16, 16), 32
    torch.manual_seed(0)
    r18 = torchvision.models.resnet18().eval()
    path = onnx2snn.export_onnx(r18, torch.randn(1, 3, 64, 64), os.path.join(tmp, "r18.onnx"))
    yield "resnet18@64x64", path, (3, 64, 64), 4


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def peak(fn, device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def compare(args) -> None:
    """Alternate child processes on ``args.compare`` (before) and this tree (after)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs: dict[tuple, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for label, path in (("before", args.compare), ("after", here)):
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([path] + [p for p in os.environ.get(
                "PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != here]))
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--no-compile", "--repeats",
                   str(args.repeats), "--timesteps", args.timesteps, "--device", args.device]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            recs = [json.loads(ln[7:]) for ln in out.stdout.splitlines() if ln.startswith("RECORD ")]
            if out.returncode or not recs:
                raise SystemExit(f"{label} child failed: {out.stderr[-2000:]}")
            for r in recs:
                runs.setdefault((r["model"], r["T"], r["batch"]), {}).setdefault(label, []).append(r["ratio_eager"])
            print(label, [(r["model"], r["T"], round(r["ratio_eager"], 3)) for r in recs], flush=True)
    rows, records = [], []
    for (model, T, B), v in runs.items():
        b, a = statistics.median(v["before"]), statistics.median(v["after"])
        bmin, amin = min(v["before"]), min(v["after"])
        rows.append([model, T, B, f"{b:.2f}", f"{a:.2f}", f"{a / b:.2f}", f"{bmin:.2f}", f"{amin:.2f}"])
        records.append({"model": model, "T": T, "batch": B, "ratio_before": v["before"], "ratio_after": v["after"],
                        "median_before": b, "median_after": a, "min_before": bmin, "min_after": amin})
    print(format_table(["model", "T", "B", "SNN/ANN before", "SNN/ANN after", "after / before", "best before",
                        "best after"], rows))
    with open(args.json, "w") as f:
        json.dump({"compare": args.compare, "rounds": args.rounds, "load_avg": os.getloadavg(),
                   "records": records}, f, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--timesteps", default="8,32")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile engine")
    ap.add_argument("--compare", help="another checkout to measure side by side (rounds of child processes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default="bench_engine.json")
    args = ap.parse_args()
    if args.compare:
        return compare(args)
    device = torch.device(args.device)
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name, path, shape, batch in models(tmp):
            g = torch.Generator().manual_seed(0)
            calib = torch.rand(64, *shape, generator=g)
            snn = onnx2snn.convert(path, calib, progress=False).to(device)
            twin = onnx2snn.import_onnx(path).to(device)
            x = torch.rand(batch, *shape, generator=g).to(device)
            for T in [int(t) for t in args.timesteps.split(",")]:
                big = x.repeat(T, *([1] * (x.dim() - 1)))
                runs = {"eager": lambda: snn.compile(False)(x, timesteps=T), "ann": lambda: twin(big)}
                compile_s = None
                if not args.no_compile:
                    runs["compiled"] = lambda: snn.compile(True)(x, timesteps=T)
                    t0 = time.perf_counter()
                    runs["compiled"]()  # compiles for this T
                    compile_s = time.perf_counter() - t0
                for fn in runs.values():  # warm-up
                    fn()
                times = {k: [] for k in runs}
                for _ in range(args.repeats):  # interleaved
                    for k, fn in runs.items():
                        times[k].append(timed(fn, device))
                med = {k: statistics.median(v) for k, v in times.items()}
                mem = {k: peak(fn, device) for k, fn in runs.items()}
                rec = {"model": name, "T": T, "batch": batch, "device": str(device),
                       **{f"{k}_ms": 1e3 * v for k, v in med.items()},
                       **{f"{k}_peak_mib": v for k, v in mem.items()},
                       "ratio_eager": med["eager"] / med["ann"], "compile_s": compile_s}
                if "compiled" in med:
                    rec["ratio_compiled"] = med["compiled"] / med["ann"]
                records.append(rec)
                if args.child:
                    print("RECORD " + json.dumps(rec), flush=True)
                fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
                rows.append([name, T, batch, f"{1e3 * med['ann']:.1f}", f"{1e3 * med['eager']:.1f}",
                             f"{rec['ratio_eager']:.2f}",
                             "-" if "compiled" not in med else f"{1e3 * med['compiled']:.1f}",
                             "-" if "compiled" not in med else f"{rec['ratio_compiled']:.2f}",
                             "-" if compile_s is None else f"{compile_s:.0f}",
                             fmt(mem["ann"]), fmt(mem["eager"]), fmt(mem.get("compiled"))])
                if not args.child:
                    print(rows[-1], flush=True)
    if args.child:
        return
    print(format_table(["model", "T", "B", "ANN ms (batch T*B)", "SNN eager ms", "ratio eager",
                        "SNN compiled ms", "ratio compiled", "compile s", "ANN peak MiB", "eager peak MiB",
                        "compiled peak MiB"], rows))
    with open(args.json, "w") as f:
        json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()

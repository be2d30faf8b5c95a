"""Real sizes, measured: convert time, SNN time at T = 4 / 8 against the ANN twin on a T-times
batch and against onnxruntime on the same batch, and peak memory against the twin's at the same
batch, for a YOLOv8n-shaped detector at 640 x 640 (80 classes, Ultralytics' metadata keys in the
file: convert and verify read the task, names and size from it), torchvision ResNet-50 and
ViT-B/16 at 224 (random weights: time and memory do not depend on them).

Per model, one process converts (from the ONNX file: import, calibration, build) and times; then
each peak memory is measured in a fresh process that loads the saved SNN and makes that one call
(the process's high-water mark, reset through ``/proc/self/clear_refs`` just before the call,
minus what it held before, after ``malloc_trim``: the weights are not counted, the activations and
states are). Times are medians of
``--repeats`` interleaved runs (SNN, twin, onnxruntime, in turn) after a warm-up, all with the
same threads; OMP_WAIT_POLICY=PASSIVE is set before torch starts. A profile of one SNN run at the
smallest T and one twin run on its batch says where the time goes (the notes, where the SNN misses
1.3x the twin at T=4 or 2x its memory). Prints a table, writes JSON.

    python scripts/bench_sizes.py                      # docs/examples/scale/bench_sizes.json
    python scripts/bench_sizes.py --models resnet50 --repeats 5
    python scripts/bench_sizes.py --render    # the table of the saved JSON (as the docs show it)

It is a script, not a test: about 5 minutes on 2 busy cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts (here and in the children)
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx2snn.table import format_table  # noqa: E402

MODELS = {"yolov8n": 640, "resnet50": 224, "vit_b_16": 224}
LABELS = {"yolov8n": "YOLOv8n-shaped detector (SiLU, 80 classes)", "resnet50": "ResNet-50", "vit_b_16": "ViT-B/16"}
GOAL_TWIN, GOAL_MEMORY = 1.3, 2.0
OUT = ROOT / "docs" / "examples" / "scale" / "bench_sizes.json"
# ops that hold the weights (the work the twin does too); the rest is neurons, time-averaged ops, copies
WEIGHT_OPS = ("convolution", "addmm", "aten::mm", "bmm", "matmul", "aten::linear", "scaled_dot_product", "baddbmm")


def export(name: str, folder: str) -> str:
    """The model as ONNX; the detector with the metadata an Ultralytics export carries."""
    import onnx
    import torch
    import torchvision

    import onnx2snn
    from onnx2snn.graph.metadata import set_metadata

    torch.manual_seed(0)
    size = MODELS[name]
    if name == "yolov8n":
        from bench_scale import yolov8n

        model = yolov8n(80)
    else:
        model = getattr(torchvision.models, name)()
    path = onnx2snn.export_onnx(model.eval(), torch.randn(1, 3, size, size), os.path.join(folder, f"{name}.onnx"))
    if name == "yolov8n":
        proto = onnx.load(path)
        set_metadata(proto, {"task": "detect", "imgsz": [size, size], "stride": 32, "batch": 1, "channels": 3,
                             "end2end": False, "names": {i: f"class{i}" for i in range(80)},
                             "description": "YOLOv8n-shaped detector, random weights (bench_sizes.py)"})
        onnx.save(proto, path)
    return path


# -- the child: one model -------------------------------------------------------------------
def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _peak_mib(fn) -> float | None:
    """Peak resident memory of ``fn()`` above what the process held before (MiB)."""
    import ctypes
    import gc

    gc.collect()
    try:  # free heap pages back to the system: a call must not hide in memory an earlier step freed
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the high-water mark (VmHWM) back to the current RSS
    except OSError:
        return None
    before = _kib("VmRSS")
    fn()
    return (_kib("VmHWM") - before) / 1024


def _inputs(name: str, n: int, seed: int):
    import torch

    size = MODELS[name]
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _session(path: str, threads: int):
    import onnxruntime as ort

    from onnx2snn.onnx_io import DISABLED_ORT_OPTIMIZERS

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=DISABLED_ORT_OPTIMIZERS)


def child(args: dict) -> dict:
    """``args["task"]``: "time" (convert, then SNN / twin / onnxruntime side by side; saves the
    SNN) or "memory" (load the saved SNN, measure one call's peak: ``args["what"]``)."""
    import torch

    import onnx2snn

    name, path, B = args["model"], args["path"], args["batch"]
    threads = torch.get_num_threads()
    x = _inputs(name, B, 2)
    if args["task"] == "memory":
        snn = onnx2snn.load(args["snn"])
        what = args["what"]
        with torch.no_grad():
            if what.startswith("snn_T"):
                T = int(what[5:])
                return {"peak_mib": _peak_mib(lambda: snn(x, timesteps=T))}
            if what == "twin":
                return {"peak_mib": _peak_mib(lambda: snn.ann(x))}
            if what.startswith("twin_x"):
                big = x.repeat(int(what[6:]), 1, 1, 1)
                return {"peak_mib": _peak_mib(lambda: snn.ann(big))}
        raise ValueError(what)
    calib = _inputs(name, args["calib"], 0)
    t0 = time.perf_counter()
    onnx2snn.import_onnx(path)
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    snn = onnx2snn.convert(path, calib, timesteps=max(args["timesteps"]), progress=False)
    convert_s = time.perf_counter() - t0
    snn.save(args["snn"])
    twin = snn.ann
    sess = _session(path, threads)
    feed_name = sess.get_inputs()[0].name
    out = {"model": name, "label": LABELS[name], "size": MODELS[name], "batch": B, "threads": threads,
           "calibration_images": args["calib"], "import_s": import_s, "convert_s": convert_s,
           "neurons": len(snn.neurons()), "averaged_ops": len(snn.averaged_ops()) if hasattr(snn, "averaged_ops") else 0,
           "inferred": snn.config.get("inferred", {}).get("said", {}), "speed": []}
    with torch.no_grad():
        for T in args["timesteps"]:
            big = x.repeat(T, 1, 1, 1)
            feed = {feed_name: big.numpy()}
            runs = {"snn": lambda: snn(x, timesteps=T), "twin": lambda: twin(big),
                    "onnxruntime": lambda: sess.run(None, feed)}
            times = {k: [] for k in runs}
            for fn in runs.values():
                fn()
            for _ in range(args["repeats"]):
                for k, fn in runs.items():
                    t1 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t1)
            med = {k: statistics.median(v) for k, v in times.items()}
            out["speed"].append({"T": T, "snn_s": med["snn"], "twin_s": med["twin"], "onnxruntime_s": med["onnxruntime"],
                                 "vs_twin": med["snn"] / med["twin"], "vs_onnxruntime": med["snn"] / med["onnxruntime"],
                                 "chunk": snn.chunk_length(T, B), "all_s": times})
            print(name, "speed", {k: v for k, v in out["speed"][-1].items() if k != "all_s"}, file=sys.stderr,
                  flush=True)
        T = min(args["timesteps"])  # where the time goes: the SNN at the smallest T against the twin
        out["profile"] = profile(snn, x, T)
        out["profile_twin"] = profile(twin, x.repeat(T, 1, 1, 1), None)
    return out


def profile(model, x, T: int | None, top: int = 8) -> dict:
    """Which ops take the time (the SNN at T, or the twin with T None): self CPU time per op
    (one run after a warm-up), the top ones."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    run = (lambda: model(x)) if T is None else (lambda: model(x, timesteps=T))
    run()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    weights = sum(e.self_cpu_time_total for e in rows if any(w in e.key for w in WEIGHT_OPS))
    return {"T": T, "total_ms": total / 1000, "weight_ops_ms": weights / 1000, "other_ms": (total - weights) / 1000,
            "top": [{"op": e.key, "share": e.self_cpu_time_total / total, "ms": e.self_cpu_time_total / 1000,
                     "calls": e.count} for e in rows[:top]]}


# -- the table -----------------------------------------------------------------------------------
def readme_table(record: dict) -> str:
    """The docs' table: per model, convert time, SNN time at each T against the twin on a T-times
    batch and onnxruntime on the same batch, and peak memory against the twin's at the same batch."""
    rows = []
    for name, m in record["models"].items():
        if "error" in m:
            rows.append([LABELS.get(name, name), "error"] + ["-"] * 4)
            continue
        speed = {s["T"]: s for s in m["speed"]}
        cells = [f"{speed[T]['snn_s']:.2f} s: {speed[T]['vs_twin']:.2f}x / {speed[T]['vs_onnxruntime']:.2f}x"
                 for T in record["timesteps"]]
        mem, T = m.get("memory", {}), min(record["timesteps"])
        snn_m, same, one = mem.get(f"snn_T{T}"), mem.get(f"twin_x{T}"), mem.get("twin")
        mem_cell = f"{snn_m:.0f} MiB: {snn_m / same:.2f}x / {snn_m / one:.1f}x" if snn_m and same and one else "-"
        rows.append([f"{LABELS[name]}, {m['size']} px",
                     f"{m['convert_s']:.0f} s (import {m['import_s']:.0f} s; {m['calibration_images']} images)"]
                    + cells + [mem_cell])
    B, T = record["batch"], min(record["timesteps"])
    heads = ["model", "convert"] + [f"SNN T={t}, B={B}: vs twin / onnxruntime (batch {t * B})"
                                    for t in record["timesteps"]] + \
        [f"peak memory, SNN T={T}: vs twin at batch {T * B} / at batch {B}"]
    ns = notes(record)
    return "\n".join([format_table(heads, rows)] + ([""] if ns else []) + [f"- {n}" for n in ns])


def notes(record: dict) -> list[str]:
    """Where a goal is missed: what costs the time (the profile's top ops)."""
    out = []
    for name, m in record["models"].items():
        if "error" in m:
            continue
        s4 = min(m["speed"], key=lambda s: s["T"])
        mem = m.get("memory", {})
        snn_m, same = mem.get(f"snn_T{s4['T']}"), mem.get(f"twin_x{s4['T']}")
        miss = []
        if s4["vs_twin"] > GOAL_TWIN:
            miss.append(f"T={s4['T']} at {s4['vs_twin']:.2f}x the twin (goal {GOAL_TWIN}x)")
        if snn_m and same and snn_m / same > GOAL_MEMORY:
            miss.append(f"memory {snn_m / same:.1f}x the twin's at batch {s4['T'] * m['batch']} (goal {GOAL_MEMORY}x)")
        p, q = m.get("profile"), m.get("profile_twin")
        if miss and p and q:
            rest = [t for t in p["top"] if not any(w in t["op"] for w in WEIGHT_OPS)][:5]
            out.append(f"{LABELS[name]}: {'; '.join(miss)}. Profile at T={p['T']}: the weight ops (conv / matmul) "
                       f"take {p['weight_ops_ms']:.0f} ms in the SNN and {q['weight_ops_ms']:.0f} ms in the twin; the "
                       f"rest {p['other_ms']:.0f} ms against {q['other_ms']:.0f} ms, most in "
                       + ", ".join(f"{t['op']} {t['ms']:.0f} ms ({t['calls']} calls)" for t in rest))
        elif miss:
            out.append(f"{LABELS[name]}: {'; '.join(miss)}")
    return out


def run_child(args: dict) -> dict:
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(args)],
                       capture_output=True, text=True, env=dict(os.environ))
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode == 0 and lines:
        return json.loads(lines[-1][7:])
    print(args["model"], args["task"], (r.stderr or r.stdout)[-800:], file=sys.stderr)
    return {"error": (r.stderr or r.stdout)[-800:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--timesteps", default="4,8")
    ap.add_argument("--batch", type=int, default=1, help="SNN batch B (the twin and onnxruntime get T*B)")
    ap.add_argument("--calib", type=int, default=16, help="calibration images (random)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=str(OUT))
    ap.add_argument("--render", action="store_true", help="print the table of --json and stop")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.render:
        record = json.loads(Path(a.json).read_text())
        print(readme_table(record))
        return
    if a.child:
        print("RESULT " + json.dumps(child(json.loads(a.child))), flush=True)
        return
    names = [m for m in a.models.split(",") if m]
    ts = [int(t) for t in a.timesteps.split(",")]
    record = {"settings": {k: v for k, v in vars(a).items() if k != "child"}, "timesteps": ts, "batch": a.batch,
              "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "models": {}}
    t_start = time.time()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    with tempfile.TemporaryDirectory() as tmp:
        it = tqdm(names, desc="bench_sizes", unit="model") if tqdm else names
        for name in it:
            path = export(name, tmp)
            args = {"model": name, "path": path, "batch": a.batch, "timesteps": ts, "calib": a.calib,
                    "repeats": a.repeats, "snn": os.path.join(tmp, f"{name}.snn.pt")}
            res = record["models"][name] = run_child(dict(args, task="time"))
            if "error" in res:
                continue
            res["memory"] = {}
            for what in [f"snn_T{T}" for T in ts] + ["twin"] + [f"twin_x{T}" for T in ts]:
                m = run_child(dict(args, task="memory", what=what))
                res["memory"][what] = m.get("peak_mib")
            print(name, "memory", res["memory"], file=sys.stderr, flush=True)
    record["seconds"] = round(time.time() - t_start, 1)
    record["load_avg_end"] = os.getloadavg()
    record["notes"] = notes(record)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(record, f, indent=1)
    print(readme_table(record))
    print(f"wrote {a.json} ({record['seconds']} s)")


if __name__ == "__main__":
    main()

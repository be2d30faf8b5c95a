"""Real-size benchmark: torchvision ResNet-18 / ResNet-50 at 224 px and a YOLOv8n-structured
detector at 640 px (random weights: the cost does not depend on them).

For each model:

- calibration: threshold calibration (``onnx2snn.calibrate_thresholds``) over N images
  (batches generated on the fly), images/s and peak memory;
- conversion: ONNX import time and graph-rewrite time (``build_spiking``);
- speed: SNN time at T = 8, 32, 128 (batch B) against the ANN twin on a batch of T*B,
  measured interleaved, median of ``--repeats`` runs after a warm-up;
- memory vs T: peak resident memory of ``snn(x, timesteps=T)`` (default chunking), and of
  the one-shot run (``chunk=T``) where it fits.

Every measurement runs in a subprocess of its own (a fresh allocator; peak memory is the
process's high-water mark, reset just before the measured call through
``/proc/self/clear_refs``, minus the memory it held before). Prints a table, writes JSON.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python scripts/bench_scale.py --images 200
    python scripts/bench_scale.py --models resnet18 --only memory --memory-timesteps 16,64,256

A child runs with whatever ``onnx2snn`` is on its PYTHONPATH, so the same script measures an
older checkout too (``--pythonpath /path/to/checkout``; calls it lacks are skipped).
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

MODELS = {"resnet18": 224, "resnet50": 224, "yolov8n": 640}


# -- the YOLOv8n-structured detector (the zoo's YOLOv8 forward and blocks, the layer shapes of yolov8n)
def yolov8n(num_classes: int = 80):
    from torch import nn

    from onnx2snn.zoo.models.yolo_blocks import C2f, SPPF, Conv, Detect
    from onnx2snn.zoo.models.yolov8 import YOLOv8

    class YoloV8n(YOLOv8):
        """yolov8n's widths (16 .. 256) and depths, strides 8, 16, 32; YOLOv8's PAN forward."""

        def __init__(self):
            nn.Module.__init__(self)
            self.stem = nn.Sequential(Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), C2f(32, 32, 1, True),
                                      Conv(32, 64, 3, 2), C2f(64, 64, 2, True))
            self.stage4 = nn.Sequential(Conv(64, 128, 3, 2), C2f(128, 128, 2, True))
            self.stage5 = nn.Sequential(Conv(128, 256, 3, 2), C2f(256, 256, 1, True), SPPF(256, 256))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.top4, self.top3 = C2f(384, 128), C2f(192, 64)
            self.down3, self.bottom4 = Conv(64, 64, 3, 2), C2f(192, 128)
            self.down4, self.bottom5 = Conv(128, 128, 3, 2), C2f(384, 256)
            self.detect = Detect(num_classes, (64, 128, 256), (8, 16, 32))

    return YoloV8n()


def export_models(names, folder: str) -> dict[str, str]:
    import torch
    import torchvision

    import onnx2snn

    paths = {}
    for name in names:
        torch.manual_seed(0)
        model = yolov8n() if name == "yolov8n" else getattr(torchvision.models, name)()
        size = MODELS[name]
        paths[name] = onnx2snn.export_onnx(model.eval(), torch.randn(1, 3, size, size),
                                           os.path.join(folder, f"{name}.onnx"))
    return paths


# -- children: one measurement each ----------------------------------------------------------
def _mem_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _peak_of(fn):
    """(result, seconds, peak MiB above the memory held before, peak MiB of the process)."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark (VmHWM) to the current RSS
        resettable = True
    except OSError:
        resettable = False
    before = _mem_kib("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = _mem_kib("VmHWM")
    return out, dt, ((peak - before) / 1024 if resettable else None), peak / 1024


def _load(path: str, name: str, calib: int = 8):
    import torch

    import onnx2snn

    replace = {"SiLU": "ReLU"} if name == "yolov8n" else None
    twin = onnx2snn.replace_activations(onnx2snn.import_onnx(path), replace) if replace else onnx2snn.import_onnx(path)
    size = MODELS[name]
    g = torch.Generator().manual_seed(0)
    snn = onnx2snn.convert(twin, torch.rand(calib, 3, size, size, generator=g), timesteps=8, progress=False)
    return twin, snn


def child(task: str, args: dict) -> dict:
    import torch

    import onnx2snn

    torch.manual_seed(0)
    name, path, size = args["model"], args["path"], MODELS[args["model"]]
    if task == "calibration":
        from onnx2snn.calibration.thresholds import calibrate_thresholds

        twin = onnx2snn.import_onnx(path)
        if name == "yolov8n":
            twin = onnx2snn.replace_activations(twin, {"SiLU": "ReLU"})
        n, bs = args["images"], args["calib_batch"]

        def calibration_batches():
            g = torch.Generator().manual_seed(1)
            for i in range(0, n, bs):
                yield torch.rand(min(bs, n - i), 3, size, size, generator=g)

        _, dt, peak, abs_peak = _peak_of(lambda: calibrate_thresholds(twin, calibration_batches(), progress=False))
        return {"images": n, "batch": bs, "seconds": dt, "images_per_s": n / dt, "peak_mib": peak,
                "process_peak_mib": abs_peak}
    if task == "conversion":
        from onnx2snn.snn.network import build_spiking

        t0 = time.perf_counter()
        twin = onnx2snn.import_onnx(path)
        t_import = time.perf_counter() - t0
        if name == "yolov8n":
            twin = onnx2snn.replace_activations(twin, {"SiLU": "ReLU"})
        snn = onnx2snn.convert(twin, torch.rand(4, 3, size, size), progress=False)
        t0 = time.perf_counter()
        build_spiking(twin, {k: v for k, v in snn.thresholds.items()}, dict(snn.config))
        return {"import_s": t_import, "rewrite_s": time.perf_counter() - t0, "neurons": len(snn.neurons())}
    if task == "distributed":  # alone or under torchrun: calibration + verify, rank 0 saves
        from onnx2snn import distributed as dist

        n, bs = args["images"], args["calib_batch"]

        def batches(seed):
            g = torch.Generator().manual_seed(seed)
            for i in range(0, n, bs):
                yield torch.rand(min(bs, n - i), 3, size, size, generator=g)

        t0 = time.perf_counter()
        twin = onnx2snn.import_onnx(path)
        snn = onnx2snn.convert(twin, batches(1), timesteps=4, progress=False)
        t_cal = time.perf_counter() - t0
        x = torch.cat(list(batches(2)))[: args["verify_images"]]
        t0 = time.perf_counter()
        report = onnx2snn.verify(snn, data=x, timesteps=[1, 2, 4], batch_size=4, progress=False)
        t_ver = time.perf_counter() - t0
        shard = dist.current()
        if shard.rank == 0:
            torch.save({"thresholds": snn.thresholds, "metrics": report.metrics, "layers": report.layers},
                       args["out"])
        return {"world_size": shard.world, "calibration_s": t_cal, "verify_s": t_ver,
                "samples_per_rank": report.config["samples_per_rank"]}
    twin, snn = _load(path, name)
    B = args["batch"]
    x = torch.rand(B, 3, size, size, generator=torch.Generator().manual_seed(2))
    if task == "speed":
        T = args["T"]
        big = x.repeat(T, 1, 1, 1)
        runs = {"snn": lambda: snn(x, timesteps=T), "ann": lambda: twin(big)}
        times = {k: [] for k in runs}
        with torch.no_grad():
            for fn in runs.values():
                fn()
            for _ in range(args["repeats"]):
                for k, fn in runs.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        out = {"T": T, "batch": B, "snn_s": med["snn"], "ann_s": med["ann"], "ratio": med["snn"] / med["ann"],
               "ratio_of_best": min(times["snn"]) / min(times["ann"]), "snn_all_s": times["snn"],
               "ann_all_s": times["ann"]}
        if hasattr(snn, "chunk_length"):
            out["chunk"] = snn.chunk_length(T, B)
        return out
    if task == "memory":
        T, chunk = args["T"], args.get("chunk")
        kw = {"chunk": chunk} if chunk else {}
        with torch.no_grad():
            _, dt, peak, abs_peak = _peak_of(lambda: snn(x, timesteps=T, **kw))
        out = {"T": T, "batch": B, "chunk_arg": chunk, "seconds": dt, "peak_mib": peak, "process_peak_mib": abs_peak}
        if hasattr(snn, "chunk_length"):
            out["chunk"] = chunk or snn.chunk_length(T, B)
            out["estimate_mib"] = [v / 2**20 for v in snn.memory_per_sample()]
        return out
    raise ValueError(task)


def _max_rel_diff(a, b) -> float:
    """Largest relative difference between the numbers of two nested structures."""
    if isinstance(a, dict):
        return max([_max_rel_diff(a[k], b[k]) for k in a] or [0.0])
    if isinstance(a, (list, tuple)):
        return max([_max_rel_diff(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return abs(a - b) / max(abs(a), abs(b), 1e-300) if a != b else 0.0
    return 0.0 if a == b else float("inf")


def run_distributed(base: dict, a, tmp: str) -> dict:
    """The same calibration + verify alone and under torchrun (2 processes x 1 thread):
    thresholds, metrics and per-layer numbers compared, times side by side. Alone it runs
    with 1 thread (the same arithmetic as each rank) and with 2 (the same cores)."""
    import torch

    out = {}
    runs = (("alone, 2 threads", 1, 2), ("alone, 1 thread", 1, 1), ("2 processes", 2, 1))
    for label, nproc, threads in runs:
        args = dict(base, images=a.dist_images, calib_batch=16, verify_images=a.dist_verify, out=os.path.join(
            tmp, f"dist{nproc}_{threads}.pt"))
        pre = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable] + pre + [os.path.abspath(__file__), "--child", "distributed", json.dumps(args)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [ln for ln in r.stdout.splitlines() if "RESULT " in ln]
        out[label] = json.loads(lines[0].split("RESULT ", 1)[1]) if lines else {"error": r.stderr[-600:]}
    try:
        two = torch.load(os.path.join(tmp, "dist2_1.pt"), weights_only=False)
        for label, key in (("alone, 1 thread", "dist1_1.pt"), ("alone, 2 threads", "dist1_2.pt")):
            one = torch.load(os.path.join(tmp, key), weights_only=False)
            out[label].update({
                "thresholds_max_abs_diff": max(float((one["thresholds"][k] - two["thresholds"][k]).abs().max())
                                               for k in one["thresholds"]),
                "metrics_equal": one["metrics"] == two["metrics"], "layers_equal": one["layers"] == two["layers"],
                "metrics_max_rel_diff": _max_rel_diff(one["metrics"], two["metrics"]),
                "layers_max_rel_diff": _max_rel_diff(one["layers"], two["layers"])})
        out["metrics"] = {str(t): v for t, v in two["metrics"]["snn"].items()}
    except (OSError, KeyError) as e:
        out["error"] = str(e)
    return out


def run_child(task: str, args: dict, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                             if p])
    cmd = [sys.executable, os.path.abspath(__file__), "--child", task, json.dumps(args)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        return {"error": (r.stderr or r.stdout)[-600:]}
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--only", choices=["calibration", "conversion", "speed", "memory", "distributed"], nargs="*")
    ap.add_argument("--dist-images", type=int, default=128, help="calibration images, 1 vs 2 processes")
    ap.add_argument("--dist-verify", type=int, default=16, help="verify images, 1 vs 2 processes")
    ap.add_argument("--images", type=int, default=1000, help="calibration images")
    ap.add_argument("--calib-batch", type=int, default=32)
    ap.add_argument("--timesteps", default="8,32,128", help="T of the speed comparison")
    ap.add_argument("--memory-timesteps", default="16,64,256")
    ap.add_argument("--one-shot-up-to", type=int, default=64, help="also measure chunk=T memory up to this T")
    ap.add_argument("--batch", type=int, default=1, help="SNN batch B (the ANN gets T*B)")
    ap.add_argument("--memory-batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each (at most 3 for T > 32)")
    ap.add_argument("--pythonpath", help="run the children on another checkout (e.g. main)")
    ap.add_argument("--json", default="bench_scale.json")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child[0], json.loads(a.child[1]))), flush=True)
        return
    from onnx2snn.table import format_table

    names = [m for m in a.models.split(",") if m]
    tasks = a.only or ["calibration", "conversion", "speed", "memory", "distributed"]
    record = {"settings": vars(a), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "models": {}}
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_models(names, tmp)
        for name in names:
            res = record["models"][name] = {}
            base = {"model": name, "path": paths[name], "repeats": a.repeats}
            if "calibration" in tasks:
                images = a.images if name != "yolov8n" else max(8, a.images // 4)
                res["calibration"] = run_child("calibration", dict(base, images=images, calib_batch=a.calib_batch
                                                                   if name != "yolov8n" else 8), a.pythonpath)
                print(name, "calibration", res["calibration"], flush=True)
            if "conversion" in tasks:
                res["conversion"] = run_child("conversion", base, a.pythonpath)
                print(name, "conversion", res["conversion"], flush=True)
            if "speed" in tasks:
                res["speed"] = []
                for T in [int(t) for t in a.timesteps.split(",")]:
                    reps = a.repeats if T <= 32 else min(a.repeats, 3)
                    res["speed"].append(run_child("speed", dict(base, T=T, batch=a.batch, repeats=reps), a.pythonpath))
                    print(name, "speed", res["speed"][-1], flush=True)
            if "distributed" in tasks:
                res["distributed"] = run_distributed(base, a, tmp)
                print(name, "distributed", res["distributed"], flush=True)
            if "memory" in tasks:
                res["memory"] = []
                one_shot = a.one_shot_up_to if name != "yolov8n" else min(16, a.one_shot_up_to)
                for T in [int(t) for t in a.memory_timesteps.split(",")]:
                    for chunk in ([None, T] if T <= one_shot else [None]):
                        res["memory"].append(run_child("memory", dict(base, T=T, batch=a.memory_batch, chunk=chunk),
                                                       a.pythonpath))
                        print(name, "memory", res["memory"][-1], flush=True)
    record["seconds"] = round(time.time() - t_start, 1)
    record["load_avg_end"] = os.getloadavg()
    with open(a.json, "w") as f:
        json.dump(record, f, indent=1)

    def f(v, p=2):
        return "-" if v is None else f"{v:.{p}f}"

    rows = []
    for name, res in record["models"].items():
        c, v = res.get("calibration", {}), res.get("conversion", {})
        rows.append([name, MODELS[name], c.get("images", "-"), f(c.get("images_per_s")), f(c.get("peak_mib"), 0),
                     f(v.get("import_s")), f(v.get("rewrite_s"))])
    print(format_table(["model", "px", "calib images", "calib img/s", "calib peak MiB", "import s", "rewrite s"], rows))
    rows = []
    for name, res in record["models"].items():
        for s in res.get("speed", []):
            rows.append([name, s.get("T"), s.get("batch"), s.get("chunk", "-"), f(s.get("ann_s"), 3),
                         f(s.get("snn_s"), 3), f(s.get("ratio")), f(s.get("ratio_of_best")), s.get("error", "")[:60]])
    if rows:
        print(format_table(["model", "T", "B", "chunk", "ANN s (batch T*B)", "SNN s", "SNN / ANN (medians)",
                            "best / best", ""], rows))
    rows = []
    for name, res in record["models"].items():
        for m in res.get("memory", []):
            rows.append([name, m.get("T"), m.get("batch"), "one-shot" if m.get("chunk_arg") else "auto",
                         m.get("chunk", "-"), f(m.get("peak_mib"), 0), f(m.get("process_peak_mib"), 0),
                         f(m.get("seconds"), 1), m.get("error", "")[:60]])
    if rows:
        print(format_table(["model", "T", "B", "run", "chunk", "peak MiB (above before)", "process peak MiB", "s", ""],
                           rows))
    rows = []
    for name, res in record["models"].items():
        d = res.get("distributed") or {}
        two = d.get("2 processes", {})
        for label in ("alone, 1 thread", "alone, 2 threads"):
            one = d.get(label)
            if one:
                rows.append([name, label, f(one.get("calibration_s"), 1), f(two.get("calibration_s"), 1),
                             f(one.get("verify_s"), 1), f(two.get("verify_s"), 1), one.get("thresholds_max_abs_diff", "-"),
                             one.get("metrics_equal", "-"), f"{one.get('layers_max_rel_diff', float('nan')):.1e}",
                             two.get("samples_per_rank", "-")])
    if rows:
        print(format_table(["model", "1 process", "convert s (1)", "convert s (2 procs)", "verify s (1)", "verify s (2)",
                            "max |threshold diff|", "metrics equal", "per-layer max rel. diff",
                            "verify samples per rank"], rows))
    print(f"\nwrote {a.json} ({record['seconds']} s; load average {record['load_avg_start']} -> "
          f"{record['load_avg_end']})")


if __name__ == "__main__":
    main()

"""The `onnx2snn` command line."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from .errors import Onnx2SnnError


def _shape(s: str | None):
    if not s:
        return None
    return tuple(int(x) for x in s.replace("x", ",").split(",") if x)


def _default_model(tmp: str) -> str:
    """The built-in default: a model the package builds itself, exported to ONNX."""
    from .export import export_zoo_model

    return export_zoo_model("digits_resnet", os.path.join(tmp, "digits_resnet.onnx"))


def cmd_inspect(args) -> int:
    from .inspect_model import inspect_onnx, render, to_json

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or _default_model(tmp)
        info = inspect_onnx(path, input_shape=_shape(args.input_shape))
        if not args.model:
            info["file"] = "built-in digits_resnet (onnx2snn.zoo)"
    print(to_json(info) if args.json else render(info))
    return 0 if "import_error" not in info else 2


def cmd_demo(args) -> int:
    from .demo import run_demo, tables

    report = run_demo(args.out, progress=not args.quiet)
    print(tables(report))
    print(f"\nreport: {os.path.join(args.out, 'report.json')}, plot: {report['plot']} ({report['seconds']} s)")
    return 0


def cmd_convert(args) -> int:
    from .api import convert

    replace = dict(kv.split("=", 1) for kv in args.replace) if args.replace else None
    pct = args.percentile if args.percentile == "max" else float(args.percentile)
    snn = convert(args.model, args.calib, timesteps=args.timesteps, normalization=args.norm, percentile=pct,
                  input_shape=_shape(args.input_shape), replace_activations=replace, encoding=args.encoding,
                  calibration_limit=args.limit, progress=not args.quiet, signed_relu=not args.no_signed,
                  signed_ibt=not args.no_signed,
                  levels=args.levels)
    if args.fold:
        from .convert.fold import fold_thresholds
        snn = fold_thresholds(snn)
    out = args.output or os.path.splitext(args.model)[0] + ".snn.pt"
    snn.save(out)
    print(f"wrote {out}: {len(snn.neurons())} neurons, T={snn.timesteps}, {args.norm}-wise, percentile {pct}")
    return 0


def cmd_verify(args) -> int:
    from .verify import verify
    from .zoo import Preprocess

    ts = [int(t) for t in args.timesteps.split(",") if t.strip()]
    pre = None
    if args.mean or args.std:
        from .convert.spiking import load

        snn = load(args.snn)
        shape = next(iter(snn.ann.onnx_info.input_shapes.values()))
        c = int(shape[1])
        pre = Preprocess(size=tuple(shape[2:]), channels=c, mean=_floats(args.mean, c, 0.0),
                         std=_floats(args.std, c, 1.0))
    else:
        snn = args.snn
    report = verify(snn, reference=args.reference, data=args.data, timesteps=ts, task=args.task,
                    postprocess=args.postprocess, annotations=args.annotations, batch_size=args.batch_size,
                    limit=args.limit, preprocess=pre, layers=not args.no_layers, tolerance=args.tolerance,
                    progress=not args.quiet)
    os.makedirs(args.out, exist_ok=True)
    md = report.table()
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(md + "\n")
    report.to_json(os.path.join(args.out, "report.json"))
    report.plot(os.path.join(args.out, "report.png"))
    print(md)
    print(f"\nwrote {args.out}/report.md, report.json, report.png ({report.seconds} s)")
    return 0


def _floats(s: str | None, n: int, default: float) -> tuple[float, ...]:
    vals = [float(v) for v in s.split(",")] if s else [default]
    return tuple(vals * n if len(vals) == 1 else vals)


def cmd_zoo(args) -> int:
    from . import zoo
    from .table import format_table

    rows = [[n, p["task"], "x".join(map(str, p["input_shape"])), p["num_classes"], p["decoder"] or "-",
             ", ".join(f"{k}={v}" for k, v in p["conversion"].items()), p["weights"] or "-"]
            for n, p in zoo.list_models().items()]
    print(format_table(["model", "task", "input", "classes", "decoder", "conversion preset", "weights"], rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onnx2snn", description="Convert trained ANNs (ONNX) into spiking networks.")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("inspect", help="show the graph, its activations and what becomes spiking")
    q.add_argument("model", nargs="?", help="ONNX file (default: a built-in zoo model)")
    q.add_argument("--input-shape", help="e.g. 1,3,224,224 for files with dynamic spatial dims")
    q.add_argument("--json", action="store_true", help="print JSON instead of tables")
    q.set_defaults(func=cmd_inspect)
    d = sub.add_parser("demo", help="convert the built-in digits ResNet and tiny-YOLO; accuracy / mAP vs T")
    d.add_argument("--out", default="onnx2snn-report", help="folder for report.json and demo.png")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)
    c = sub.add_parser("convert", help="convert an ONNX model into a spiking network (.snn.pt)")
    c.add_argument("model", help="ONNX file")
    c.add_argument("--calib", required=True, help="calibration data: .npz with 'x', or an image folder")
    c.add_argument("-T", "--timesteps", type=int, default=32)
    c.add_argument("--norm", choices=["channel", "layer"], default="channel")
    c.add_argument("--percentile", default="99.99", help="e.g. 99.99, or 'max'")
    c.add_argument("--encoding", choices=["direct", "poisson"], default="direct")
    c.add_argument("--no-signed", action="store_true",
                   help="neurons never take back spikes (default: signed IF / signed IBT, which take back over-firing)")
    c.add_argument("--levels", type=int, default=1, help="multi-level firing: up to this many spikes per step")
    c.add_argument("--fold", action="store_true", help="save the binary-spike form (thresholds folded into weights)")
    c.add_argument("--replace", nargs="*", help="activation replacements, e.g. SiLU=ReLU")
    c.add_argument("--input-shape", help="e.g. 1,3,224,224 for files with dynamic spatial dims")
    c.add_argument("--limit", type=int, help="use at most this many calibration samples")
    c.add_argument("-o", "--output", help="output file (default: <model>.snn.pt)")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_convert)
    v = sub.add_parser("verify", help="the SNN vs onnxruntime on its source file: accuracy / mAP vs T, per-layer "
                                      "error, firing rates, SynOps, energy")
    v.add_argument("snn", help="spiking network file (.snn.pt, from `onnx2snn convert` or snn.save)")
    v.add_argument("--reference", help="source ONNX file (default: the ONNX stored in the .snn.pt)")
    v.add_argument("--data", required=True, help="classification: .npz with x (and y), or an image folder; "
                                                 "detection: a COCO json, or an image folder with --annotations")
    v.add_argument("--task", choices=["classification", "detection"], default="classification")
    v.add_argument("--timesteps", default="1,2,4,8,16,32,64,128", help="comma-separated sweep, e.g. 1,2,4,8,16")
    v.add_argument("--annotations", help="COCO json with the ground truth of the images in --data")
    v.add_argument("--postprocess", help="detection decoder: tiny-yolo, yolo_relu or yolov8")
    v.add_argument("--batch-size", type=int, default=32)
    v.add_argument("--limit", type=int, help="evaluate at most this many samples")
    v.add_argument("--mean", help="image preprocessing mean per channel, e.g. 0.485,0.456,0.406 (default 0)")
    v.add_argument("--std", help="image preprocessing std per channel (default 1)")
    v.add_argument("--tolerance", type=float, help="match tolerance (accuracy: absolute, 0.01 = 1 point; "
                                                   "mAP: relative, 0.01 = 1%%)")
    v.add_argument("--no-layers", action="store_true", help="skip per-layer error, firing rates and SynOps")
    v.add_argument("--out", default="verify-report", help="folder for report.md, report.json, report.png")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=cmd_verify)
    z = sub.add_parser("zoo", help="the model zoo")
    z.add_argument("action", choices=["list"])
    z.set_defaults(func=cmd_zoo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Onnx2SnnError as e:
        print(f"onnx2snn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

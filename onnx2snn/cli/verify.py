"""``onnx2snn verify``: the SNN against onnxruntime on its source file, vs timesteps."""

from __future__ import annotations

import os

from .common import floats, parser


def add(sub) -> None:
    v = parser(sub, "verify", "the SNN vs onnxruntime on its source file: accuracy / mAP vs T, per-layer "
                              "error, firing rates, SynOps, energy")
    v.add_argument("snn", help="spiking network file (.snn.pt, from `onnx2snn convert` or snn.save)")
    v.add_argument("--reference", help="source ONNX file (default: the ONNX stored in the .snn.pt)")
    v.add_argument("--data", required=True, help="classification: .npz with x (and y), or an image folder; "
                                                 "detection: a COCO json, or an image folder with --annotations")
    v.add_argument("--task", choices=["classification", "detection"], default="classification", help="what to score")
    v.add_argument("--timesteps", default="1,2,4,8,16,32,64,128", help="comma-separated sweep, e.g. 1,2,4,8,16")
    v.add_argument("--annotations", help="COCO json with the ground truth of the images in --data")
    v.add_argument("--postprocess", help="detection decoder: tiny-yolo, yolo_relu or yolov8")
    v.add_argument("--batch-size", type=int, default=32, help="samples per batch")
    v.add_argument("--limit", type=int, help="evaluate at most this many samples")
    v.add_argument("--mean", help="image preprocessing mean per channel, e.g. 0.485,0.456,0.406 (default 0)")
    v.add_argument("--std", help="image preprocessing std per channel (default 1)")
    v.add_argument("--tolerance", type=float, help="match tolerance (accuracy: absolute, 0.01 = 1 point; "
                                                   "mAP: relative, 0.01 = 1%%)")
    v.add_argument("--no-layers", action="store_true", help="skip per-layer error, firing rates and SynOps")
    v.add_argument("--out", default="verify-report", help="folder for report.md, report.json, report.png")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=run)


def run(args) -> int:
    from ..verification.api import verify
    from ..zoo import Preprocess

    ts = [int(t) for t in args.timesteps.split(",") if t.strip()]
    pre = None
    if args.mean or args.std:
        from ..snn.serialize import load

        snn = load(args.snn)
        shape = next(iter(snn.ann.onnx_info.input_shapes.values()))
        c = int(shape[1])
        pre = Preprocess(size=tuple(shape[2:]), channels=c, mean=floats(args.mean, c, 0.0),
                         std=floats(args.std, c, 1.0))
    else:
        snn = args.snn
    report = verify(snn, reference=args.reference, data=args.data, timesteps=ts, task=args.task,
                    postprocess=args.postprocess, annotations=args.annotations, batch_size=args.batch_size,
                    limit=args.limit, preprocess=pre, layers=not args.no_layers, tolerance=args.tolerance,
                    progress=not args.quiet)
    from ..distributed import is_main

    if not is_main():  # under torchrun: every rank ran its share, rank 0 writes the report
        return 0
    os.makedirs(args.out, exist_ok=True)
    md = report.table()
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(md + "\n")
    report.to_json(os.path.join(args.out, "report.json"))
    report.plot(os.path.join(args.out, "report.png"))
    print(md)
    print(f"\nwrote {args.out}/report.md, report.json, report.png ({report.seconds} s)")
    return 0

"""``onnx2snn verify``: the SNN against onnxruntime on its source file, vs timesteps."""

from __future__ import annotations

import os

from .common import (add_preprocess_options, existing, parser, positive_int, preprocess_from_args, real,
                     register_zoo_names, timesteps_list)


def add(sub) -> None:
    v = parser(sub, "verify", "the SNN vs onnxruntime on its source file: accuracy / mAP vs T, per-layer "
                              "error, firing rates, SynOps, energy")
    v.add_argument("snn", type=existing("file"),
                   help="spiking network file (.snn.pt, from `onnx2snn convert` or snn.save)")
    v.add_argument("--reference", type=existing("ONNX file"),
                   help="ONNX file to compare with (default: the ONNX stored in the .snn.pt)")
    v.add_argument("--data", required=True, type=existing("file or folder"),
                   help="classification: .npz with x (and y), or an image folder (class sub-folders give labels); "
                        "detection: a COCO json, an image folder with --annotations, or YOLO-format data (data.yaml or a "
                        "folder with images/ and labels/: its val split, letterboxed)")
    v.add_argument("--task", choices=["classification", "detection"],
                   help="what to score (default: what the files say: task='detect' in the ONNX metadata, YOLO / COCO "
                        "data or a YOLOv8-style output make it detection with the yolov8 decoder; else classification)")
    v.add_argument("-T", "--timesteps", type=timesteps_list, default="1,2,4,8,16,32,64,128",
                   help="comma-separated sweep, e.g. 1,2,4,8,16")
    v.add_argument("--annotations", type=existing("file"), help="COCO json with the ground truth of the images in --data")
    v.add_argument("--postprocess", help="detection decoder: tiny-yolo, yolo_relu or yolov8 (default for detectors: "
                                         "yolov8 where the metadata or the output says so)")
    v.add_argument("--batch-size", type=positive_int("batch_size"), default=32, help="samples per batch")
    v.add_argument("--limit", type=positive_int("limit"), help="evaluate at most this many samples")
    add_preprocess_options(v)
    v.add_argument("--tolerance", type=real("tolerance", 0.0, 1.0),
                   help="what counts as a match (accuracy: absolute, 0.01 = 1 point; mAP: relative, 0.01 = 1%%; "
                        "default 0.01)")
    v.add_argument("--no-layers", action="store_true", help="skip per-layer error, firing rates and SynOps")
    v.add_argument("--out", default="verify-report", help="folder for report.md, report.json, report.png")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=run)


def run(args) -> int:
    from .. import checks

    out = checks.writable_dir("out", args.out)
    from ..snn.serialize import load
    from ..verification.api import verify

    if args.postprocess:
        register_zoo_names()
    snn = load(args.snn)
    shape = next(iter(snn.ann.onnx_info.input_shapes.values()), None)
    pre = preprocess_from_args(args, shape)
    if pre is not None and args.task != "classification":
        from ..data.yolo_format import is_yolo_source

        pre.letterbox = is_yolo_source(args.data)  # as Ultralytics validates
    report = verify(snn, reference=args.reference, data=args.data, timesteps=args.timesteps, task=args.task,
                    postprocess=args.postprocess, annotations=args.annotations, batch_size=args.batch_size,
                    limit=args.limit, preprocess=pre, layers=not args.no_layers, tolerance=args.tolerance,
                    progress=not args.quiet)
    from ..distributed import is_main

    if not is_main():  # under torchrun: every rank ran its share, rank 0 writes the report
        return 0
    os.makedirs(out, exist_ok=True)
    md = report.table()
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(md + "\n")
    report.to_json(os.path.join(out, "report.json"))
    report.plot(os.path.join(out, "report.png"))
    written = "report.md, report.json, report.png"
    if report.layers is not None and report.layers["ops"].get("snn"):
        report.energy_plot(os.path.join(out, "energy.png"))
        written += ", energy.png"
    print(md)
    print(f"\nwrote {out}/{written} ({report.seconds} s)")
    return 0

"""``onnx2snn finetune``: fine-tune an ONNX model for T steps (distillation from itself by
default, no labels needed), convert it and write the spiking network."""

from __future__ import annotations

import os

from ..settings import FINETUNE
from .common import (_checked, _int, add_preprocess_options, add_table, existing, merged, parser, positive_int,
                     preprocess_from_args, real, register_zoo_names, replacement, shape, table_values, threshold)

FINETUNE_OPTIONS: list = []  # the FINETUNE rows read back as keywords (filled by add)


def add(sub) -> None:
    f = parser(sub, "finetune", "fine-tune an ONNX model for a T-step SNN (label-free distillation from the model "
                                "itself by default) and write the converted SNN (.snn.pt)")
    f.add_argument("model", type=existing("ONNX file"), help="ONNX file (e.g. an Ultralytics export)")
    f.add_argument("--data", required=True, type=existing("file or folder"),
                   help="training images: a YOLO data.yaml (its train split), a YOLO dataset folder (images/ + "
                        "labels/), an image folder, or .npz with x")
    # every row of FINETUNE with a flag: flags, defaults (the API's) and help from onnx2snn.settings
    FINETUNE_OPTIONS[:] = add_table(f, FINETUNE, {
        "timesteps": dict(type=positive_int("timesteps")), "epochs": dict(type=positive_int("epochs")),
        "rate_weight": dict(type=real("rate_weight", 0.0)), "distill_weight": dict(type=real("distill_weight", 0.0)),
        "replace_activations": dict(type=replacement, action="append", metavar="KIND=NEW"),
        "lr": dict(type=real("lr", 0.0)), "batch_size": dict(type=positive_int("batch_size")),
        "calibration_limit": dict(type=positive_int("calibration_limit")), "threshold": dict(type=threshold),
        "levels": dict(type=positive_int("levels")), "input_shape": dict(type=shape),
        "seed": dict(type=_checked("seed", _int, 0)), "progress": dict(action="store_true", dest="quiet")})
    add_preprocess_options(f)
    f.add_argument("--no-letterbox", action="store_true", help="stretch images to the input size instead of "
                                                               "letterboxing (default: letterbox, as Ultralytics)")
    f.add_argument("-o", "--output", help="SNN file (default: <model>.snn.pt)")
    f.add_argument("--save-onnx", nargs="?", const="", metavar="PATH",
                   help="also write the fine-tuned ANN (spiking-ready activations) as ONNX "
                        "(default path: <model>.finetuned.onnx)")
    f.add_argument("--history", help="JSON of the training history (default: <output>.history.json)")
    f.set_defaults(func=run)


def run(args) -> int:
    import json

    from .. import checks
    from .common import onnx_input_shape

    out = checks.writable_file("output", args.output or os.path.splitext(args.model)[0] + ".snn.pt")
    hist = checks.writable_file("history", args.history or os.path.splitext(out)[0] + ".history.json")
    onnx_path = None
    if args.save_onnx is not None:
        onnx_path = checks.writable_file("save_onnx", args.save_onnx or os.path.splitext(args.model)[0]
                                         + ".finetuned.onnx")
    in_shape = onnx_input_shape(args.model, args.input_shape)
    pre = preprocess_from_args(args, in_shape)
    if pre is None and in_shape is not None and len(in_shape) == 4 and all(in_shape[1:]):
        from ..data.loaders import Preprocess

        pre = Preprocess(size=tuple(in_shape[2:]), channels=int(in_shape[1]))
    if pre is not None:
        pre.letterbox = not args.no_letterbox
    replace = merged(args.replace_activations)
    from ..api import convert
    from ..calibration.finetune import finetune

    if args.loss != "distill":
        register_zoo_names()
    ft = finetune(args.model, args.data, **{**table_values(args, FINETUNE_OPTIONS), "replace_activations": replace},
                  preprocess=pre, progress=not args.quiet)
    from ..distributed import is_main

    if not is_main():  # under torchrun: every rank trained the same twin, rank 0 writes
        return 0
    snn = convert(ft, timesteps=args.timesteps, progress=not args.quiet)
    snn.save(out)
    info = dict(ft.finetune_info, model=os.fspath(args.model), data=os.fspath(args.data), output=out,
                replace_activations=replace or {}, preprocess=pre.to_dict() if pre is not None else None)
    if onnx_path is not None:
        import torch

        from ..export import export_onnx

        shape_ = next(iter(ft.onnx_info.input_shapes.values()))
        export_onnx(ft, torch.zeros((1,) + tuple(shape_[1:])), onnx_path)
        info["onnx"] = onnx_path
    with open(hist, "w") as fh:
        json.dump(info, fh, indent=1)
    last = ft.finetune_info["history"][-1]["loss"] if ft.finetune_info["history"] else float("nan")
    print(f"wrote {out}: {len(snn.neurons())} neurons, T={args.timesteps}, {ft.finetune_info['loss']} loss "
          f"{last:.4g} after {args.epochs} epochs ({ft.finetune_info['seconds']:.0f} s); history {hist}"
          + (f"; fine-tuned ANN {onnx_path}" if onnx_path else ""))
    return 0

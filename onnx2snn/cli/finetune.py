"""``onnx2snn finetune``: fine-tune an ONNX model for T steps (distillation from itself by
default, no labels needed), convert it and write the spiking network."""

from __future__ import annotations

import os

from ..settings import FINETUNE
from .common import (add_preprocess_options, existing, merged, parser, percentile, positive_int,
                     preprocess_from_args, real, register_zoo_names, replacement, shape)


def add(sub) -> None:
    f = parser(sub, "finetune", "fine-tune an ONNX model for a T-step SNN (label-free distillation from the model "
                                "itself by default) and write the converted SNN (.snn.pt)")
    f.add_argument("model", type=existing("ONNX file"), help="ONNX file (e.g. an Ultralytics export)")
    f.add_argument("--data", required=True, type=existing("file or folder"),
                   help="training images: a YOLO data.yaml (its train split), a YOLO dataset folder (images/ + "
                        "labels/), an image folder, or .npz with x")
    a = FINETUNE.argument  # flags, defaults and help from onnx2snn.settings (the API's defaults)
    a(f, "timesteps", type=positive_int("timesteps"))
    a(f, "epochs", type=positive_int("epochs"))
    a(f, "loss")
    a(f, "rate_weight", type=real("rate_weight", 0.0))
    a(f, "distill_weight", type=real("distill_weight", 0.0))
    a(f, "replace_activations", type=replacement, action="append", metavar="KIND=NEW", dest="replace")
    a(f, "lr", type=real("lr", 0.0))
    a(f, "batch_size", type=positive_int("batch_size"))
    a(f, "calibration_limit", type=positive_int("calibration_limit"), dest="limit")
    a(f, "percentile", type=percentile)
    a(f, "levels", type=positive_int("levels"))
    add_preprocess_options(f)
    f.add_argument("--no-letterbox", action="store_true", help="stretch images to the input size instead of "
                                                               "letterboxing (default: letterbox, as Ultralytics)")
    a(f, "input_shape", type=shape)
    a(f, "seed", type=int)
    f.add_argument("-o", "--output", help="SNN file (default: <model>.snn.pt)")
    f.add_argument("--save-onnx", nargs="?", const="", metavar="PATH",
                   help="also write the fine-tuned ANN (spiking-ready activations) as ONNX "
                        "(default path: <model>.finetuned.onnx)")
    f.add_argument("--history", help="JSON of the training history (default: <output>.history.json)")
    a(f, "progress", action="store_true", dest="quiet")
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
    replace = merged(args.replace)
    from ..api import convert
    from ..calibration.finetune import finetune

    if args.loss != "distill":
        register_zoo_names()
    ft = finetune(args.model, args.data, timesteps=args.timesteps, epochs=args.epochs, loss=args.loss,
                  distill_weight=args.distill_weight, replace_activations=replace, lr=args.lr,
                  rate_weight=args.rate_weight,
                  batch_size=args.batch_size, calibration_limit=args.limit, percentile=args.percentile,
                  levels=args.levels,
                  preprocess=pre, seed=args.seed, input_shape=args.input_shape, progress=not args.quiet)
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

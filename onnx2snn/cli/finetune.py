"""``onnx2snn finetune``: fine-tune an ONNX model for T steps (distillation from itself by
default, no labels needed), convert it and write the spiking network."""

from __future__ import annotations

import json
import os

from .common import floats, parser, shape


def add(sub) -> None:
    f = parser(sub, "finetune", "fine-tune an ONNX model for a T-step SNN (label-free distillation from the model "
                                "itself by default) and write the converted SNN (.snn.pt)")
    f.add_argument("model", help="ONNX file (e.g. an Ultralytics export)")
    f.add_argument("--data", required=True, help="training images: a YOLO data.yaml (its train split), a YOLO "
                                                 "dataset folder (images/ + labels/), an image folder, or .npz with x")
    f.add_argument("-T", "--timesteps", type=int, default=8, help="the T the SNN will run")
    f.add_argument("--epochs", type=int, default=4, help="passes over the training images")
    f.add_argument("--loss", default="distill", help="'distill' (label-free, from the source model), or a zoo loss "
                                                     "/ preset name with labelled data")
    f.add_argument("--distill-weight", type=float, help="with a task loss: add this times the distillation loss")
    f.add_argument("--replace", nargs="*", help="activation replacements, e.g. SiLU=ReLU")
    f.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine schedule)")
    f.add_argument("--batch-size", type=int, default=32, help="images per step")
    f.add_argument("--limit", type=int, default=512, help="calibration images for the initial thresholds")
    f.add_argument("--size", type=shape, help="input size H,W for images (default: the model's input size)")
    f.add_argument("--no-letterbox", action="store_true", help="stretch images to the input size instead of "
                                                               "letterboxing (default: letterbox, as Ultralytics)")
    f.add_argument("--mean", help="image preprocessing mean per channel (default 0)")
    f.add_argument("--std", help="image preprocessing std per channel (default 1)")
    f.add_argument("--input-shape", type=shape, help="e.g. 1,3,640,640 for files with dynamic spatial dims")
    f.add_argument("--seed", type=int, default=0, help="random seed (training is deterministic)")
    f.add_argument("-o", "--output", help="SNN file (default: <model>.snn.pt)")
    f.add_argument("--save-onnx", nargs="?", const="", metavar="PATH",
                   help="also write the fine-tuned ANN (spiking-ready activations) as ONNX "
                        "(default path: <model>.finetuned.onnx)")
    f.add_argument("--history", help="JSON of the training history (default: <output>.history.json)")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..api import convert
    from ..calibration.finetune import finetune
    from ..errors import Onnx2SnnError
    from ..graph.source import to_twin
    from ..zoo import Preprocess

    if args.epochs < 0 or args.timesteps < 1:
        raise Onnx2SnnError("--epochs must be >= 0 and -T >= 1")
    replace = dict(kv.split("=", 1) for kv in args.replace) if args.replace else None
    twin = to_twin(args.model, input_shape=args.input_shape)
    in_shape = next(iter(twin.onnx_info.input_shapes.values()))
    c = int(in_shape[1])
    size = tuple(args.size) if args.size else tuple(in_shape[2:])
    pre = Preprocess(size=size, channels=c, mean=floats(args.mean, c, 0.0), std=floats(args.std, c, 1.0),
                     letterbox=not args.no_letterbox)
    ft = finetune(twin, args.data, timesteps=args.timesteps, epochs=args.epochs, loss=args.loss,
                  distill_weight=args.distill_weight, replace_activations=replace, lr=args.lr,
                  batch_size=args.batch_size, calibration_limit=args.limit, preprocess=pre, seed=args.seed,
                  progress=not args.quiet)
    snn = convert(ft, timesteps=args.timesteps, progress=not args.quiet)
    out = args.output or os.path.splitext(args.model)[0] + ".snn.pt"
    snn.save(out)
    info = dict(ft.finetune_info, model=os.fspath(args.model), data=os.fspath(args.data), output=out,
                replace_activations=replace or {}, preprocess=pre.to_dict())
    if args.save_onnx is not None:
        from ..export import export_onnx

        onnx_path = args.save_onnx or os.path.splitext(args.model)[0] + ".finetuned.onnx"
        export_onnx(ft, torch.zeros((1,) + tuple(in_shape[1:])), onnx_path)
        info["onnx"] = onnx_path
    hist = args.history or os.path.splitext(out)[0] + ".history.json"
    with open(hist, "w") as fh:
        json.dump(info, fh, indent=1)
    last = ft.finetune_info["history"][-1]["loss"] if ft.finetune_info["history"] else float("nan")
    print(f"wrote {out}: {len(snn.neurons())} neurons, T={args.timesteps}, {ft.finetune_info['loss']} loss "
          f"{last:.4g} after {args.epochs} epochs ({ft.finetune_info['seconds']:.0f} s); history {hist}"
          + (f"; fine-tuned ANN {info['onnx']}" if "onnx" in info else ""))
    return 0

"""``onnx2snn convert``: an ONNX model and calibration data -> a spiking network file."""

from __future__ import annotations

import os

from .. import checks
from ..settings import CONVERT
from .common import (_checked, _int, add_preprocess_options, existing, merged, parser, percentile, positive_int,
                     preprocess_from_args, real, register_zoo_names, replacement, shape)


def _number(text: str) -> "float | str":
    """The number ``text`` spells, else ``text`` itself (for the check to name)."""
    try:
        return float(text)
    except ValueError:
        return text


def _target(param: str, text: str) -> float:
    return checks.real(param, _number(text), 0.0, 1.0, strict_min=True)


def _margin(param: str, text: str) -> "float | str":
    from ..tuning.search import check_margin

    return check_margin(_number(text), param)


def _reencode_levels(text: str) -> "int | str":
    return "auto" if text == "auto" else positive_int("reencode_levels")(text)


def add(sub) -> None:
    c = parser(sub, "convert", "convert an ONNX model into a spiking network (.snn.pt)")
    c.add_argument("model", type=existing("ONNX file"), help="ONNX file")
    a = CONVERT.argument  # flags, defaults, choices and help from onnx2snn.settings
    a(c, "calibration_data", required=True, type=existing("file or folder"), dest="calib")
    a(c, "timesteps", type=positive_int("timesteps"))
    a(c, "normalization", dest="norm")
    a(c, "percentile", type=percentile)
    a(c, "mse_tolerance", type=real("mse_tolerance", 0.0))
    a(c, "encoding")
    a(c, "signed_relu", action="store_true", dest="no_signed")
    a(c, "levels", type=positive_int("levels"))
    a(c, "v_init", type=real("v_init", -1.0, 2.0))
    a(c, "reencode_levels", type=_reencode_levels)
    a(c, "reencode_coding")
    a(c, "pwl_activations", action="store_true")
    c.add_argument("--fold", action="store_true", help="save the binary-spike form (thresholds folded into weights)")
    a(c, "replace_activations", type=replacement, action="append", metavar="KIND=NEW", dest="replace")
    a(c, "input_shape", type=shape)
    a(c, "calibration_limit", type=positive_int("calibration_limit"), dest="limit")
    a(c, "batch_size", type=positive_int("batch_size"))
    a(c, "seed", type=_checked("seed", _int, 0))
    a(c, "calibrate_timesteps", type=positive_int("calibrate_timesteps"))
    t = c.add_argument_group("settings search (--target)")
    a(t, "target", type=_checked("target", _target))
    a(t, "objective")
    t.add_argument("--postprocess", help="with --target on a detector: its decoder (tiny-yolo, yolo_relu, yolov8; "
                                         "default: yolov8 where the ONNX metadata, YOLO data or the output says so); "
                                         "quality is then mAP@0.5 against the ANN's own detections (or --tune-data's labels)")
    t.add_argument("--margin", type=_checked("margin", _margin), default="auto",
                   help="with --target: held-out quality a point needs above the target, for the held-out data's "
                        "noise: 'auto' (one standard error on the held-out samples / objects, default) or a share, "
                        "e.g. 0 or 0.005")
    t.add_argument("--tune-data", metavar="PATH", type=existing("file or folder"),
                   help="with --target: labeled validation data, as verify --data takes it (.npz with x and y, class "
                        "folders; detectors: a COCO json, YOLO data.yaml): quality is then the real metric over the "
                        "ANN's, and all of --calib goes to the statistics")
    t.add_argument("--tune-report", metavar="DIR",
                   help="with --target: write tune.md, tune.json, tune.png there (default: <output>.tune/)")
    add_preprocess_options(c)
    c.add_argument("-o", "--output", help="output file (default: <model>.snn.pt)")
    a(c, "progress", action="store_true", dest="quiet")
    c.set_defaults(func=run)


def check_foldable(args) -> None:
    """--fold on a network with time-averaged operators: the error before the calibration pass
    (the binary-spike form does not exist for it)."""
    from ..graph.analysis import analyze
    from ..graph.source import replace_activations, to_twin
    from ..snn.fold import no_binary_form

    twin = replace_activations(to_twin(args.model, None, args.input_shape), merged(args.replace))
    # direct encoding computes the ops before the first neuron once; Poisson input makes them per-step too
    ops = [a.op for a in analyze(twin).nodes if a.form == "time-averaged" or
           (args.encoding != "direct" and a.role == "averaged" and a.part == "core")]
    if ops:
        raise no_binary_form(ops, "fold")


def run(args) -> int:
    from .common import onnx_input_shape

    if args.target is None and (args.postprocess or args.tune_report or args.tune_data or args.objective != CONVERT["objective"].default
                                or args.margin != "auto"):
        from ..errors import ConfigError
        raise ConfigError("--objective, --postprocess, --margin, --tune-data and --tune-report steer the settings "
                          "search: add --target (e.g. 0.99)", "target")
    out = checks.writable_file("output", args.output or os.path.splitext(args.model)[0] + ".snn.pt")
    pre = None
    if args.size or args.mean or args.std:
        pre = preprocess_from_args(args, onnx_input_shape(args.model, args.input_shape))
    from ..api import convert

    if args.fold:
        check_foldable(args)
    if args.postprocess:
        register_zoo_names()
    snn = convert(args.model, args.calib, timesteps=args.timesteps, normalization=args.norm, percentile=args.percentile,
                  input_shape=args.input_shape, replace_activations=merged(args.replace), encoding=args.encoding,
                  calibration_limit=args.limit, batch_size=args.batch_size, preprocess=pre, progress=not args.quiet,
                  signed_relu=not args.no_signed, signed_ibt=not args.no_signed, levels=args.levels,
                  calibrate_timesteps=args.calibrate_timesteps, mse_tolerance=args.mse_tolerance,
                  reencode_levels=args.reencode_levels, reencode_coding=args.reencode_coding, v_init=args.v_init,
                  pwl_activations=args.pwl_activations,
                  seed=args.seed, target=args.target, objective=args.objective,
                  tune_options={"postprocess": args.postprocess, "margin": args.margin, "validation": args.tune_data}
                  if args.target is not None else None)
    from ..distributed import is_main

    if not is_main():  # under torchrun: every rank calibrated its share, rank 0 writes
        return 0
    report = snn.tune_report  # the folded form is a new network: keep the search's report
    if args.fold:
        from ..snn.fold import fold_thresholds
        snn = fold_thresholds(snn)
    snn.save(out)
    c = snn.config
    averaged = len(snn.averaged_ops()) if hasattr(snn, "averaged_ops") else 0
    print(f"wrote {out}: {len(snn.neurons())} neurons, T={snn.timesteps}, {args.norm}-wise, "
          f"percentile {c['percentile']}, levels {c['levels']}"
          + (f", {averaged} time-averaged operators (re-encoding: {c['reencode_levels']} spikes per step)"
             if averaged else ""))
    if report is not None:
        folder = args.tune_report or os.path.splitext(out)[0] + ".tune"
        files = report.write(folder)
        print(f"settings search: {report.reason}")
        print(f"wrote {files['md']}, {files['json']}, {files['png']}")
    return 0

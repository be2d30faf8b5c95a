"""``onnx2snn convert``: an ONNX model and calibration data -> a spiking network file."""

from __future__ import annotations

import os

from .. import checks
from ..settings import CONVERT, SEARCH
from .common import (_checked, _int, add_preprocess_options, add_table, existing, merged, parser, positive_int,
                     preprocess_from_args, real, register_zoo_names, replacement, shape, table_values, threshold)


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


def _specs() -> dict:
    """argparse details the tables cannot say: each option checked as the API checks it."""
    return {
        "calibration_data": dict(required=True, type=existing("file or folder")),
        "timesteps": dict(type=positive_int("timesteps")), "threshold": dict(type=threshold),
        "mse_tolerance": dict(type=real("mse_tolerance", 0.0)),
        "signed_relu": dict(action="store_true", dest="no_signed"), "levels": dict(type=positive_int("levels")),
        "v_init": dict(type=real("v_init", -1.0, 2.0)), "reencode_levels": dict(type=_reencode_levels),
        "pwl_activations": dict(action="store_true"),
        "replace_activations": dict(type=replacement, action="append", metavar="KIND=NEW"),
        "input_shape": dict(type=shape), "calibration_limit": dict(type=positive_int("calibration_limit")),
        "batch_size": dict(type=positive_int("batch_size")), "seed": dict(type=_checked("seed", _int, 0)),
        "correct_timesteps": dict(type=positive_int("correct_timesteps")),
        "target": dict(type=_checked("target", _target)), "progress": dict(action="store_true", dest="quiet"),
        # the search's own (onnx2snn.settings.SEARCH)
        "margin": dict(type=_checked("margin", _margin)),
        "validation": dict(metavar="PATH", type=existing("file or folder")),
    }


SEARCH_OPTIONS: list = []  # the SEARCH rows with a flag (filled by add): convert's search= from the command line
CONVERT_OPTIONS: list = []  # the CONVERT rows read back as keywords


def add(sub) -> None:
    c = parser(sub, "convert", "convert an ONNX model into a spiking network (.snn.pt)")
    c.add_argument("model", type=existing("ONNX file"), help="ONNX file")
    t = c.add_argument_group("settings search (--target)")
    specs = _specs()
    # every row of the tables with a flag (onnx2snn.settings): flags, defaults, choices and help from there
    names = add_table(c, CONVERT, specs, {"target": t, "objective": t})
    CONVERT_OPTIONS[:] = [n for n in names if n not in ("calibration_data", "target", "objective")]
    SEARCH_OPTIONS[:] = add_table(t, SEARCH, specs)
    c.add_argument("--fold", action="store_true", help="save the binary-spike form (thresholds folded into weights)")
    t.add_argument("--search-report", "--tune-report", metavar="DIR", dest="search_report",
                   help="with --target: write tune.md, tune.json, tune.png there (default: <output>.tune/)")
    add_preprocess_options(c)
    c.add_argument("-o", "--output", help="output file (default: <model>.snn.pt)")
    c.set_defaults(func=run)


def check_foldable(args) -> None:
    """--fold on a network with time-averaged operators: the error before the calibration pass
    (the binary-spike form does not exist for it)."""
    from ..graph.analysis import analyze
    from ..graph.source import replace_activations, to_twin
    from ..snn.fold import no_binary_form

    twin = replace_activations(to_twin(args.model, None, args.input_shape), merged(args.replace_activations))
    # direct encoding computes the ops before the first neuron once; Poisson input makes them per-step too
    ops = [a.op for a in analyze(twin).nodes if a.form == "time-averaged" or
           (args.encoding != "direct" and a.role == "averaged" and a.part == "core")]
    if ops:
        raise no_binary_form(ops, "fold")


def run(args) -> int:
    from .common import onnx_input_shape

    search = {n: getattr(args, n) for n in SEARCH_OPTIONS if getattr(args, n) != SEARCH[n].command_line_default}
    if args.target is None and (search or args.search_report or args.objective != CONVERT["objective"].default):
        from ..errors import ConfigError
        raise ConfigError("--objective, --postprocess, --margin, --search-data and --search-report steer the settings "
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
    kw = table_values(args, CONVERT_OPTIONS)
    kw["replace_activations"] = merged(args.replace_activations)
    snn = convert(args.model, args.calibration_data, target=args.target,
                  search={**search, "objective": args.objective} if args.target is not None else None,
                  preprocess=pre, progress=not args.quiet, signed_relu=not args.no_signed,
                  signed_ibt=not args.no_signed, **kw)
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
    print(f"wrote {out}: {len(snn.neurons())} neurons, T={snn.timesteps}, {args.normalization}-wise, "
          f"threshold {c['threshold']}, levels {c['levels']}"
          + (f", {averaged} time-averaged operators (re-encoding: {c['reencode_levels']} spikes per step)"
             if averaged else ""))
    if report is not None:
        folder = args.search_report or os.path.splitext(out)[0] + ".tune"
        files = report.write(folder)
        print(f"settings search: {report.reason}")
        print(f"wrote {files['md']}, {files['json']}, {files['png']}")
    return 0

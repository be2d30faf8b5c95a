"""``onnx2snn convert``: an ONNX model and calibration data -> a spiking network file."""

from __future__ import annotations

import os

from .common import parser, shape


def add(sub) -> None:
    c = parser(sub, "convert", "convert an ONNX model into a spiking network (.snn.pt)")
    c.add_argument("model", help="ONNX file")
    c.add_argument("--calib", required=True, help="calibration data: .npz with 'x', or an image folder")
    c.add_argument("-T", "--timesteps", type=int, default=32, help="default number of timesteps of the SNN")
    c.add_argument("--norm", choices=["channel", "layer"], default="channel",
                   help="one threshold per channel or per layer")
    c.add_argument("--percentile", default="99.99", help="percentile of activations that sets thresholds, or 'max'")
    c.add_argument("--encoding", choices=["direct", "poisson"], default="direct",
                   help="input as analog current every step, or as Poisson spikes")
    c.add_argument("--no-signed", action="store_true",
                   help="neurons never take back spikes (default: signed IF / signed IBT, which take back over-firing)")
    c.add_argument("--levels", type=int, default=1, help="multi-level firing: up to this many spikes per step")
    c.add_argument("--fold", action="store_true", help="save the binary-spike form (thresholds folded into weights)")
    c.add_argument("--replace", nargs="*", help="activation replacements, e.g. SiLU=ReLU")
    c.add_argument("--input-shape", type=shape, help="e.g. 1,3,224,224 for files with dynamic spatial dims")
    c.add_argument("--limit", type=int, help="use at most this many calibration samples")
    c.add_argument("-o", "--output", help="output file (default: <model>.snn.pt)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=run)


def run(args) -> int:
    from ..api import convert

    replace = dict(kv.split("=", 1) for kv in args.replace) if args.replace else None
    pct = args.percentile if args.percentile == "max" else float(args.percentile)
    snn = convert(args.model, args.calib, timesteps=args.timesteps, normalization=args.norm, percentile=pct,
                  input_shape=args.input_shape, replace_activations=replace, encoding=args.encoding,
                  calibration_limit=args.limit, progress=not args.quiet, signed_relu=not args.no_signed,
                  signed_ibt=not args.no_signed, levels=args.levels)
    from ..distributed import is_main

    if not is_main():  # under torchrun: every rank calibrated its share, rank 0 writes
        return 0
    if args.fold:
        from ..snn.fold import fold_thresholds
        snn = fold_thresholds(snn)
    out = args.output or os.path.splitext(args.model)[0] + ".snn.pt"
    snn.save(out)
    print(f"wrote {out}: {len(snn.neurons())} neurons, T={snn.timesteps}, {args.norm}-wise, percentile {pct}")
    return 0

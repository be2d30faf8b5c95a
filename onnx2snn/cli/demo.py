"""``onnx2snn demo``: the main job of README.md on the built-in models."""

from __future__ import annotations

import os

from .common import parser


def add(sub) -> None:
    d = parser(sub, "demo", "convert the built-in digits ResNet and tiny-YOLO; accuracy / mAP vs T")
    d.add_argument("--out", default="onnx2snn-report", help="folder for report.json and demo.png")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=run)


def run(args) -> int:
    from .. import checks

    checks.writable_dir("out", args.out)
    from ..demo import run_demo, tables

    report = run_demo(args.out, progress=not args.quiet)
    print(tables(report))
    print(f"\nreport: {os.path.join(args.out, 'report.json')}, plot: {report['plot']} ({report['seconds']} s)")
    return 0

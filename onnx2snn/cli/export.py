"""``onnx2snn export``: a spiking network file -> a deployment format (NIR)."""

from __future__ import annotations

import os

from .common import existing, parser


def add(sub) -> None:
    e = parser(sub, "export", "export a spiking network (.snn.pt) for neuromorphic hardware and toolkits (NIR)")
    e.add_argument("snn", type=existing("file"), help="spiking network file (.snn.pt, from `onnx2snn convert` or snn.save)")
    e.add_argument("--format", choices=["nir"], default="nir", help="output format")
    e.add_argument("-o", "--output", help="output file (default: <snn>.nir)")
    e.add_argument("--pool", choices=["avg", "sum"], default="avg",
                   help="average pooling as AvgPool2d, or as SumPool2d with 1/k^2 in the next layer's weights")
    e.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="weight precision")
    e.add_argument("--no-source", action="store_true",
                   help="do not store the source ONNX in the file (verify then needs --reference)")
    e.set_defaults(func=run)


def run(args) -> int:
    from .. import checks

    stem = args.snn[:-len(".snn.pt")] if args.snn.endswith(".snn.pt") else os.path.splitext(args.snn)[0]
    out = checks.writable_file("output", args.output or stem + ".nir")
    from ..deploy.nir_export import export_nir

    graph = export_nir(args.snn, out, pool=args.pool, dtype=args.dtype, include_source=not args.no_source)
    kinds: dict[str, int] = {}
    for node in graph.nodes.values():
        kinds[type(node).__name__] = kinds.get(type(node).__name__, 0) + 1
    nodes = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
    print(f"wrote {out} ({os.path.getsize(out) / 1024:.0f} KiB): {len(graph.nodes)} nodes ({nodes}), "
          f"{len(graph.edges)} edges; T={graph.metadata['timesteps']}, reset by subtraction, dt=1")
    return 0

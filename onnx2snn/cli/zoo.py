"""``onnx2snn zoo list``: the model zoo."""

from __future__ import annotations

from .common import parser


def add(sub) -> None:
    z = parser(sub, "zoo", "the model zoo")
    z.add_argument("action", choices=["list"], help="what to do")
    z.set_defaults(func=run)


def run(args) -> int:
    from .. import zoo
    from ..table import format_table

    rows = [[n, p["task"], "x".join(map(str, p["input_shape"])), p["num_classes"], p["decoder"] or "-",
             ", ".join(f"{k}={v}" for k, v in p["conversion"].items()), p["weights"] or "-"]
            for n, p in zoo.list_models().items()]
    print(format_table(["model", "task", "input", "classes", "decoder", "conversion preset", "weights"], rows))
    return 0

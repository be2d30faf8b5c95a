"""The package's modules import each other in one direction: no import cycles, counting
imports inside functions too (a lazy import hides a cycle, it does not remove it)."""

import ast
import pathlib

import onnx2snn

ROOT = pathlib.Path(onnx2snn.__file__).parent
SKIP = {"onnx2snn", "onnx2snn.__main__"}  # the lazy public namespace and `python -m`


def _module_name(path: pathlib.Path) -> str:
    parts = ("onnx2snn",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, name: str, modules: set[str]) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            cands = [f"{target}.{a.name}" for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        else:
            continue
        for c in cands:
            if c in modules:
                out.add(c)
                break
    return out - {name}


def test_no_import_cycles():
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    graph = {m: _imports(p, m, modules) - SKIP for m, p in files.items() if m not in SKIP}
    # Tarjan's strongly connected components
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not sccs, "import cycles: " + "; ".join(" <-> ".join(c) for c in sccs)


# The library's core reads the user's data and converts, checks and runs models; the zoo
# (our models, synthetic data, writers, decoders) is a user of the core, never the reverse.
CORE = ("onnx2snn.calibration", "onnx2snn.snn", "onnx2snn.verification", "onnx2snn.graph", "onnx2snn.data")


def _zoo_importers() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    out = {}
    for m, p in files.items():
        if m.startswith(CORE):
            zoo = {t for t in _imports(p, m, modules) if t == "onnx2snn.zoo" or t.startswith("onnx2snn.zoo.")}
            if zoo:
                out[m] = zoo
    return out


def test_core_does_not_import_zoo():
    bad = {m: sorted(z) for m, z in _zoo_importers().items()}
    assert not bad, (f"core modules import the zoo (move what they need into onnx2snn.data or below; names the "
                     f"zoo provides go through a registry it fills, e.g. verification.decoders): {bad}")


def test_the_rule_sees_an_import(tmp_path):
    """The import scan catches the forms a zoo import takes (absolute, relative, inside a function)."""
    cases = {"from ..zoo import Preprocess": "onnx2snn.zoo", "import onnx2snn.zoo.registry": "onnx2snn.zoo.registry",
             "def f():\n    from ..zoo.data import scenes": "onnx2snn.zoo.data.scenes"}
    modules = {"onnx2snn.zoo", "onnx2snn.zoo.registry", "onnx2snn.zoo.data", "onnx2snn.zoo.data.scenes"}
    for src, want in cases.items():
        f = tmp_path / "m.py"
        f.write_text(src + "\n")
        assert _imports(f, "onnx2snn.data.m", modules) == {want}, src


def test_core_runs_without_the_zoo():
    """At run time too: naming the library's own decoder and loss loads no zoo module (no
    lazy or importlib way round the rule); the zoo's names appear once the CLI loads the zoo."""
    import subprocess
    import sys

    code = """
import sys
from onnx2snn.calibration.finetune import resolve_loss
from onnx2snn.verification.metrics import resolve_postprocess
from onnx2snn.errors import Onnx2SnnError
resolve_postprocess("yolov8"); resolve_loss("cross_entropy")
try:
    resolve_postprocess("tiny-yolo")
    raise SystemExit("tiny-yolo resolved without the zoo")
except Onnx2SnnError as e:
    assert "onnx2snn.zoo is imported" in str(e), e
assert not [m for m in sys.modules if m.startswith("onnx2snn.zoo")], "the core loaded the zoo"
from onnx2snn.cli.common import register_zoo_names
register_zoo_names()
assert resolve_postprocess("tiny-yolo")[1] == "onnx2snn.zoo.tiny_yolo_decode()"
assert resolve_loss("yolo_relu").__name__ == "yolo_relu_loss" and resolve_loss("digits_resnet").__name__ == "cross_entropy"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]

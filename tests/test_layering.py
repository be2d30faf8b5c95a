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
# Known edges still to remove, each with its reason. Both reach into zoo/models/ (frozen while
# the YOLO-blocks work lands): loss names (finetune's loss="yolov8") and the detection decoders
# and mAP scoring (verify's postprocess=, evaluate_coco / evaluate_ultralytics).
KNOWN_ZOO_EDGES = {
    "onnx2snn.calibration.finetune": "zoo.LOSSES / zoo.PRESETS for loss= names",
    "onnx2snn.verification.metrics": "zoo decoders by name, to_coco_detections, evaluate_coco / _ultralytics",
}


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
    bad = {m: sorted(z) for m, z in _zoo_importers().items() if m not in KNOWN_ZOO_EDGES}
    assert not bad, f"core modules import the zoo (move what they need into onnx2snn.data or below): {bad}"


def test_known_zoo_edges_are_current():
    """An edge that is gone must leave the list, so the list only shrinks."""
    stale = sorted(set(KNOWN_ZOO_EDGES) - set(_zoo_importers()))
    assert not stale, f"no longer import the zoo, remove from KNOWN_ZOO_EDGES: {stale}"


def test_the_rule_sees_an_import(tmp_path):
    """The import scan catches the forms a zoo import takes (absolute, relative, inside a function)."""
    cases = {"from ..zoo import Preprocess": "onnx2snn.zoo", "import onnx2snn.zoo.registry": "onnx2snn.zoo.registry",
             "def f():\n    from ..zoo.data import scenes": "onnx2snn.zoo.data.scenes"}
    modules = {"onnx2snn.zoo", "onnx2snn.zoo.registry", "onnx2snn.zoo.data", "onnx2snn.zoo.data.scenes"}
    for src, want in cases.items():
        f = tmp_path / "m.py"
        f.write_text(src + "\n")
        assert _imports(f, "onnx2snn.data.m", modules) == {want}, src

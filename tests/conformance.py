"""The ONNX backend node tests run through :func:`import_onnx`: an exact twin or a clear error.

The ``onnx`` wheel ships the generators of its backend node tests (one small model per
test, with inputs and the expected outputs from numpy reference code) but no data files.
:func:`generate` runs the generators once and stores the cases in a folder;
:func:`run` imports every case in a pool of worker processes (one test at a time per
worker, so that a hang costs one per-test timeout and the worker is replaced) and
classifies it:

- ``PASS``: the twin takes the graph's inputs and returns its outputs: same dtype and
  shape, integers and booleans equal, floats within ``rtol=1e-3, atol=1e-4``;
- ``REFUSED``: :func:`import_onnx` raised an :class:`~onnx2snn.Onnx2SnnError`;
- ``WRONG``: the twin runs but its outputs differ (values, dtype, shape, signature);
- ``CRASH``: any other exception, at import or when the twin runs;
- ``TIMEOUT``: no answer within the per-test timeout.

Real exports carry weights, scales and pads as initializers, where node tests pass them
as graph inputs; a case refused as it is is tried again with every input but the first
baked into an initializer (``variant == "baked"``). Both variants must be PASS or
REFUSED, never WRONG or CRASH.
"""

from __future__ import annotations

import os
import pickle
import re
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

STATUSES = ("PASS", "REFUSED", "WRONG", "CRASH", "TIMEOUT")
RTOL, ATOL = 1e-3, 1e-4
# bfloat16 keeps 8 significant bits: two units in the last place, where the reference
# rounds intermediate results differently (float32 inside) than a twin computing in bf16
_TOLERANCE = {"bfloat16": (2.0 ** -6, 1e-3)}
_CASES_FILE = "cases.pkl"


@dataclass
class Result:
    """The outcome of one node test: the status and which variant decided it."""

    name: str
    op: str
    status: str
    variant: str = "graph"   # "graph": as generated; "baked": inputs 1.. baked as initializers
    detail: str = ""
    graph_status: str = ""   # status of the as-generated variant, when the baked one decided
    seconds: float = 0.0


# -- generating the cases ------------------------------------------------------------------
def _op_of(name: str, model, single: dict[str, str]) -> str:
    nodes = model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    base = re.sub(r"_expanded.*$", "", name)
    return single.get(base, nodes[0].op_type if nodes else "?")


def generate(folder: str | os.PathLike) -> str:
    """Run the wheel's node-test generators and store every case in ``folder``.

    Returns the path of the stored cases. Cached: a folder that has them is reused.
    """
    path = os.path.join(os.fspath(folder), _CASES_FILE)
    if os.path.isfile(path):
        return path
    os.makedirs(os.fspath(folder), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        cases = collect_testcases()
    single = {c.name: c.model.graph.node[0].op_type for c in cases if len(c.model.graph.node) == 1}
    stored = []
    for c in cases:
        ops = sorted({n.op_type for n in c.model.graph.node})
        stored.append({"name": c.name, "op": _op_of(c.name, c.model, single), "ops": ops,
                       "model": c.model.SerializeToString(), "data_sets": c.data_sets})
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(stored, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return path


def load_cases(path: str) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        return pickle.load(f)


# -- checking one case (runs in a worker process) ------------------------------------------
def _to_numpy(v):
    import onnx

    if isinstance(v, onnx.TensorProto):
        return onnx.numpy_helper.to_array(v)
    if isinstance(v, (np.ndarray, np.generic)):
        return np.asarray(v)
    return v  # lists (sequences), None (optional), maps: left as they are


def _to_torch(a):
    import torch

    a = _to_numpy(a)
    if not isinstance(a, np.ndarray):
        raise _HarnessSkip(f"a non-tensor input ({type(a).__name__})")
    if a.dtype.kind in "US" or a.dtype == object:
        raise _HarnessSkip("a string input")
    try:
        return torch.from_numpy(np.array(a, copy=True, order="C"))
    except TypeError:
        # ml_dtypes (bfloat16, float8, int4): through an integer view where torch has the type
        return _ml_to_torch(a)


def _ml_to_torch(a: np.ndarray):
    import torch

    name = str(a.dtype)
    table = {"bfloat16": (np.int16, torch.bfloat16), "float8_e4m3fn": (np.int8, torch.float8_e4m3fn),
             "float8_e5m2": (np.int8, torch.float8_e5m2), "float8_e4m3fnuz": (np.int8, torch.float8_e4m3fnuz),
             "float8_e5m2fnuz": (np.int8, torch.float8_e5m2fnuz)}
    if name not in table:
        raise _HarnessSkip(f"an input of type {name}, which torch does not have")
    view, tdt = table[name]
    return torch.from_numpy(np.array(a, copy=True, order="C").view(view)).view(tdt)


def _from_torch(t) -> np.ndarray:
    import torch

    if not isinstance(t, torch.Tensor):
        return np.asarray(t)  # a twin that returns a python number: its dtype is checked below
    t = t.detach().cpu()
    special = {torch.bfloat16: (torch.int16, "bfloat16"), torch.float8_e4m3fn: (torch.int8, "float8_e4m3fn"),
               torch.float8_e5m2: (torch.int8, "float8_e5m2"),
               torch.float8_e4m3fnuz: (torch.int8, "float8_e4m3fnuz"),
               torch.float8_e5m2fnuz: (torch.int8, "float8_e5m2fnuz")}
    if t.dtype in special:
        import ml_dtypes

        view, name = special[t.dtype]
        return t.contiguous().view(view).numpy().view(getattr(ml_dtypes, name))
    return t.numpy()


class _HarnessSkip(Exception):
    """The case needs something a twin cannot be given (strings, sequences): the importer
    must refuse it; if it does not, the case is WRONG."""


def _compare(got: np.ndarray, want: np.ndarray) -> str:
    """'' when equal, else what differs."""
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} != expected {want.dtype}"
    if got.shape != want.shape:
        return f"shape {got.shape} != expected {want.shape}"
    if want.dtype.kind in "biuU" or want.dtype == object:
        if not np.array_equal(got, want):
            bad = int(np.sum(got != want))
            return f"{bad} of {want.size} values differ"
        return ""
    g, w = got.astype(np.float64), want.astype(np.float64)
    rtol, atol = _TOLERANCE.get(str(want.dtype), (RTOL, ATOL))
    ok = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if not ok.all():
        err = np.abs(g - w)
        err = np.where(np.isnan(err), np.inf, err)
        return f"{int((~ok).sum())} of {want.size} values differ, max |diff| {float(err.max()):.3g}"
    return ""


def _bake(model, data_set):
    """The model with every graph input but the first turned into an initializer holding
    the data set's value; None when there is nothing to bake."""
    import onnx

    inputs, outputs = data_set
    graph_inputs = list(model.graph.input)
    if len(graph_inputs) < 2 or len(inputs) != len(graph_inputs):
        return None
    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    first = onnx.ValueInfoProto()
    first.CopyFrom(baked.graph.input[0])
    for vi, value in zip(list(baked.graph.input)[1:], inputs[1:]):
        if isinstance(value, onnx.TensorProto):
            t = onnx.TensorProto()
            t.CopyFrom(value)
            t.name = vi.name
        else:
            arr = _to_numpy(value)
            if not isinstance(arr, np.ndarray) or arr.dtype == object:
                return None
            t = onnx.numpy_helper.from_array(arr, vi.name)
        baked.graph.initializer.append(t)
    del baked.graph.input[:]
    baked.graph.input.append(first)
    return baked, ([inputs[0]], outputs)


def _check(model, data_sets) -> tuple[str, str]:
    """Import ``model`` and run its data sets: (status, detail)."""
    import torch

    from onnx2snn.errors import Onnx2SnnError
    from onnx2snn.graph.importer import import_onnx

    try:
        twin = import_onnx(model)
    except Onnx2SnnError as e:
        return "REFUSED", f"{type(e).__name__}: {_first_line(str(e))}"
    except Exception as e:  # noqa: BLE001 - a foreign exception is what this classifies
        return "CRASH", f"import: {_describe(e)}"
    declared = [vi.name for vi in model.graph.input if vi.name not in {t.name for t in model.graph.initializer}]
    if list(twin.onnx_info.input_names) != declared:
        return "WRONG", f"the twin takes {twin.onnx_info.input_names}, the graph declares {declared}"
    for inputs, outputs in data_sets:
        try:
            args = [_to_torch(a) for a in inputs]
        except _HarnessSkip as e:
            return "WRONG", f"imported a graph whose inputs a twin cannot take: {e}"
        try:
            with torch.no_grad():
                out = twin(*args)
        except Exception as e:  # noqa: BLE001
            return "CRASH", f"run: {_describe(e)}"
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(outputs):
            return "WRONG", f"{len(outs)} outputs, expected {len(outputs)}"
        for k, (o, w) in enumerate(zip(outs, outputs)):
            w = _to_numpy(w)
            if not isinstance(w, np.ndarray):
                return "WRONG", f"output {k}: expected a {type(w).__name__}, the twin returned a tensor"
            diff = _compare(_from_torch(o), w)
            if diff:
                return "WRONG", f"output {k}: {diff}"
    return "PASS", ""


def _first_line(s: str) -> str:
    lines = [x for x in s.strip().splitlines() if x.strip()]
    return " ".join(x.strip() for x in lines[:2])[:300]


def _describe(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    ours = [f for f in tb if "onnx2snn" in f.filename]
    where = f" at {os.path.basename(ours[-1].filename)}:{ours[-1].lineno}" if ours else ""
    return f"{type(e).__name__}: {_first_line(str(e))}{where}"


def check_case(case: dict[str, Any]) -> Result:
    """Both variants of one case (see the module docstring): a WRONG or CRASH in either
    decides; else PASS when either passes; else REFUSED."""
    import onnx

    t0 = time.perf_counter()
    model = onnx.load_from_string(case["model"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status, detail = _check(model, case["data_sets"])
        res = Result(case["name"], case["op"], status, "graph", detail)
        baked = _bake(model, case["data_sets"][0])
        if baked is not None:
            b_status, b_detail = _check(baked[0], [baked[1]])
            bad = ("WRONG", "CRASH")
            if b_status in bad and status not in bad or (status == "REFUSED" and b_status == "PASS"):
                res = Result(case["name"], case["op"], b_status, "baked", b_detail, graph_status=status)
    res.seconds = time.perf_counter() - t0
    return res


# -- the worker pool -------------------------------------------------------------------------
def _worker(conn, cases_path: str) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    devnull = os.open(os.devnull, os.O_WRONLY)  # torch.fx prints failing code to stderr
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    import torch

    torch.set_num_threads(1)
    cases = load_cases(cases_path)
    while True:
        msg = conn.recv()
        if msg is None:
            return
        try:
            res = check_case(cases[msg])
        except BaseException as e:  # noqa: BLE001 - report, keep serving
            c = cases[msg]
            res = Result(c["name"], c["op"], "CRASH", "graph", f"harness: {_describe(e)}")
        conn.send((msg, asdict(res)))


class _Proc:
    def __init__(self, ctx, cases_path: str):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, cases_path), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.deadline = 0.0
        self.fresh = True  # still importing torch: its first test gets the start-up allowance

    def stop(self, kill: bool = False) -> None:
        try:
            if kill:
                self.proc.kill()
            else:
                self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def run(cases_path: str, names: Iterable[str] | None = None, workers: int | None = None,
        timeout: float = 60.0, progress: Callable[[Result], None] | None = None,
        startup: float = 60.0) -> list[Result]:
    """Check every stored case (or those in ``names``) in ``workers`` processes.

    A case that takes longer than ``timeout`` seconds (plus ``startup`` for a worker's
    first case) is TIMEOUT; its worker is killed and replaced. Returns the results in
    the stored order."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    cases = load_cases(cases_path)
    wanted = set(names) if names is not None else None
    todo = [i for i, c in enumerate(cases) if wanted is None or c["name"] in wanted]
    todo.reverse()
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    ctx = mp.get_context("spawn")
    procs = [_Proc(ctx, cases_path) for _ in range(workers)]
    results: dict[int, Result] = {}
    try:
        while todo or any(p.task is not None for p in procs):
            for p in procs:
                if p.task is None and todo:
                    p.task = todo.pop()
                    p.conn.send(p.task)
                    p.deadline = time.monotonic() + timeout + (startup if p.fresh else 0.0)
            busy = [p for p in procs if p.task is not None]
            left = max(0.0, min(p.deadline for p in busy) - time.monotonic())
            ready = wait([p.conn for p in busy], timeout=left)
            for p in busy:
                if p.conn in ready:
                    try:
                        idx, res = p.conn.recv()
                        p.task, p.fresh = None, False
                    except EOFError:  # the worker died (a segfault in a native library)
                        idx, res = p.task, asdict(Result(cases[p.task]["name"], cases[p.task]["op"], "CRASH",
                                                         detail=f"worker died (exit code {p.proc.exitcode})"))
                        p.stop(kill=True)
                        procs[procs.index(p)] = _Proc(ctx, cases_path)
                    results[idx] = Result(**res)
                    if progress:
                        progress(results[idx])
                elif time.monotonic() >= p.deadline:
                    c = cases[p.task]
                    results[p.task] = Result(c["name"], c["op"], "TIMEOUT", detail=f"no answer in {timeout:g} s")
                    if progress:
                        progress(results[p.task])
                    p.stop(kill=True)
                    procs[procs.index(p)] = _Proc(ctx, cases_path)
    finally:
        for p in procs:
            p.stop(kill=p.task is not None)
    return [results[i] for i in sorted(results)]


# -- the docs' op list (docs/reference/ops.md) ------------------------------------------------------------------
OPS_BEGIN = "<!-- ops:begin (generated from the registry by `python scripts/conformance.py --write-docs`) -->"
OPS_END = "<!-- ops:end -->"


def registered_ops() -> list[str]:
    """Every ONNX op type the importer converts (from the converter registry)."""
    from onnx2snn.graph import importer  # noqa: F401 - importing it registers the converters
    from onnx2snn.graph.registry import supported_ops

    return supported_ops()


def render_op_list() -> str:
    ops = registered_ops()
    return f"{OPS_BEGIN}\n**{len(ops)} ONNX ops:** " + ", ".join(ops) + f".\n{OPS_END}"


def readme_ops(readme: str | os.PathLike) -> list[str]:
    """The op names listed between the op-list markers of ``readme`` (docs/reference/ops.md)."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    if OPS_BEGIN not in text or OPS_END not in text:
        return []
    block = text[text.index(OPS_BEGIN) + len(OPS_BEGIN):text.index(OPS_END)]
    block = block.split(":**", 1)[-1]
    return [w.strip(" .\n") for w in block.split(",") if w.strip(" .\n")]


def write_readme_ops(readme: str | os.PathLike) -> bool:
    """Rewrite the op list of ``readme`` (docs/reference/ops.md) from the registry; True when it changed."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    if OPS_BEGIN not in text:
        raise ValueError(f"{readme} has no op-list markers")
    new = text[:text.index(OPS_BEGIN)] + render_op_list() + text[text.index(OPS_END) + len(OPS_END):]
    if new != text:
        with open(readme, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text


# -- summaries -------------------------------------------------------------------------------
def per_op(results: Sequence[Result], ops: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """{op: {status: count}} over the results (only ``ops`` when given)."""
    keep = set(ops) if ops is not None else None
    table: dict[str, dict[str, int]] = {}
    for r in results:
        if keep is not None and r.op not in keep:
            continue
        row = table.setdefault(r.op, {s: 0 for s in STATUSES})
        row[r.status] += 1
    return dict(sorted(table.items()))


def totals(results: Sequence[Result]) -> dict[str, int]:
    out = {s: 0 for s in STATUSES}
    for r in results:
        out[r.status] += 1
    return out


__all__ = ["Result", "STATUSES", "generate", "load_cases", "check_case", "run", "per_op", "totals",
           "registered_ops", "readme_ops", "write_readme_ops", "render_op_list"]

"""The ONNX backend node tests through import_onnx: an exact twin or a clear error, never a
wrong twin or a foreign exception; and the docs' op list (docs/reference/ops.md) is the registry's.

The cases come from the generators in the installed onnx wheel (~1,880 tests), stored once per
session and checked in worker processes with a per-test timeout (tests/conformance.py).
`python scripts/conformance.py` prints the same run as a per-op table.
"""

import os
import pathlib

import pytest

import conformance as C  # tests/conformance.py: the machinery, beside the tests

README = pathlib.Path(__file__).resolve().parent.parent / "docs" / "reference" / "ops.md"  # the op list
# PASS floor over the tests of the ops the docs list (weights baked as initializers where the
# node test passes them as graph inputs): 979 pass with onnx 1.23 (1,155 such tests; the rest are
# refused: unsigned 16-64-bit and sub-byte types, strings, sequences, training modes)
PASS_FLOOR = 950


@pytest.fixture(scope="session")
def node_results(tmp_path_factory):
    path = C.generate(tmp_path_factory.mktemp("onnx_node_tests"))
    return C.run(path, workers=min(2, os.cpu_count() or 1), timeout=120.0)


def test_no_wrong_twin_and_no_foreign_exception(node_results):
    bad = [f"{r.status} {r.name} [{r.variant}]: {r.detail}" for r in node_results
           if r.status in ("WRONG", "CRASH", "TIMEOUT")]
    assert len(node_results) > 1500  # the wheel's generators ran
    assert not bad, "\n".join(bad)


def test_readme_ops_pass(node_results):
    listed = set(C.readme_ops(README))
    mine = [r for r in node_results if r.op in listed]
    passed = [r for r in mine if r.status == "PASS"]
    assert len(passed) >= PASS_FLOOR, C.totals(mine)
    never = sorted(op for op, row in C.per_op(mine).items() if row["PASS"] == 0)
    tested = {r.op for r in node_results}
    # every listed op that has node tests passes at least one of them
    assert not never, f"docs/reference/ops.md lists ops that pass none of their node tests: {never}"
    assert len(listed & tested) > 100


def test_readme_op_list_is_the_registry():
    listed = C.readme_ops(README)
    assert listed, "docs/reference/ops.md has no generated op list (python scripts/conformance.py --write-docs)"
    assert listed == C.registered_ops(), (
        "docs/reference/ops.md's op list differs from the registry: run python scripts/conformance.py --write-docs")


def test_a_test_past_its_timeout_is_timeout_and_the_run_goes_on(tmp_path):
    """The per-test timeout: a worker that does not answer in time is killed and replaced."""
    import pickle

    from onnx.backend.test.case.node import collect_testcases

    cases = [c for c in collect_testcases() if c.name in ("test_relu", "test_abs", "test_neg")]
    stored = [{"name": c.name, "op": c.model.graph.node[0].op_type, "ops": [], "model": c.model.SerializeToString(),
               "data_sets": c.data_sets} for c in cases]
    path = tmp_path / "cases.pkl"
    path.write_bytes(pickle.dumps(stored))
    hurried = C.run(str(path), workers=1, timeout=0.0, startup=0.0)  # no time to even start
    assert [r.status for r in hurried] == ["TIMEOUT"] * 3
    assert [r.status for r in C.run(str(path), workers=1)] == ["PASS"] * 3

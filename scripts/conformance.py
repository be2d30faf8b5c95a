"""The ONNX backend node tests through import_onnx: per-op table and JSON.

    python scripts/conformance.py                       # all ~1,880 tests, 2 workers
    python scripts/conformance.py --baseline before.json --out after.json
    python scripts/conformance.py --ops Conv Gemm       # only these ops' tests

Each test is PASS, REFUSED (an Onnx2SnnError), WRONG, CRASH or TIMEOUT (see
tests/conformance.py). The table gives, per op, the counts and, with
--baseline, the PASS count before; the ops listed in docs/reference/ops.md are marked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import conformance as C  # noqa: E402 - tests/conformance.py, the machinery beside the tests


README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "reference", "ops.md")  # the op list


def readme_ops() -> set[str]:
    return set(C.readme_ops(README))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", help="folder for the generated cases (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per test")
    ap.add_argument("--ops", nargs="*", help="only the tests of these ops")
    ap.add_argument("--baseline", help="a JSON written by an earlier run, shown as 'before'")
    ap.add_argument("--out", default="conformance.json", help="JSON with every test's result")
    ap.add_argument("--all-rows", action="store_true", help="print every op, not only those with a change or a failure")
    ap.add_argument("--write-docs", "--write-readme", dest="write_readme", action="store_true",
                    help="rewrite docs/reference/ops.md's op list from the registry and exit")
    args = ap.parse_args(argv)
    if args.write_readme:
        print("docs/reference/ops.md op list", "updated" if C.write_readme_ops(README) else "already up to date")
        return 0

    from onnx2snn.progress import bar as progress_bar, log_to_stderr

    log_to_stderr()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = C.generate(args.cache or tmp)
        cases = C.load_cases(path)
        names = [c["name"] for c in cases if not args.ops or c["op"] in args.ops]
        bar = progress_bar(total=len(names), unit="test", desc="node tests")
        results = C.run(path, names, workers=args.workers, timeout=args.timeout,
                        progress=lambda r: bar.update(1))
        bar.close()
        elapsed = time.perf_counter() - t0
    listed = readme_ops()
    before = {}
    if args.baseline:
        with open(args.baseline) as f:
            before = {r["name"]: r for r in json.load(f)["results"]}
    table = C.per_op(results)
    rows = []
    for op, counts in table.items():
        b_pass = sum(1 for r in results if r.op == op and before.get(r.name, {}).get("status") == "PASS")
        b_bad = sum(1 for r in results if r.op == op and before.get(r.name, {}).get("status") in ("WRONG", "CRASH", "TIMEOUT"))
        changed = before and (b_pass != counts["PASS"] or b_bad)
        bad = counts["WRONG"] + counts["CRASH"] + counts["TIMEOUT"]
        if args.all_rows or changed or bad or not before:
            rows.append([op + (" *" if op in listed else ""), sum(counts.values())]
                        + ([b_pass, b_bad] if before else []) + [counts[s] for s in C.STATUSES])
    head = ["op (* = listed in the docs)", "tests"] + (["PASS before", "WRONG+CRASH before"] if before else []) + list(C.STATUSES)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    print("  ".join(str(h).ljust(w) for h, w in zip(head, widths)))
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))

    def summary(rs, sel=None):
        rs = [r for r in rs if sel is None or r.op in sel]
        out = C.totals(rs)
        out["tests"] = len(rs)
        out["PASS_baked"] = sum(1 for r in rs if r.status == "PASS" and r.variant == "baked")
        return out

    total, in_readme = summary(results), summary(results, listed)
    print(f"\nall tests: {total}")
    print(f"tests of the listed ops: {in_readme}")
    if before:
        def bsum(sel=None):
            out = {s: 0 for s in C.STATUSES}
            for r in before.values():
                if sel is None or r["op"] in sel:
                    out[r["status"]] += 1
            return out
        print(f"before, all tests: {bsum()}")
        print(f"before, tests of the listed ops: {bsum(listed)}")
    print(f"{elapsed:.0f} s with {args.workers} workers")
    bad = [r for r in results if r.status in ("WRONG", "CRASH", "TIMEOUT")]
    for r in bad:
        print(f"  {r.status:8s} {r.name} [{r.variant}]: {r.detail}")
    with open(args.out, "w") as f:
        json.dump({"totals": total, "readme_ops": sorted(listed), "readme_totals": in_readme,
                   "per_op": table, "seconds": elapsed, "workers": args.workers,
                   "results": [vars(r) for r in results]}, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every page of the documentation runs as written: README.md and each page under docs/, one
test per page, so that a failure names its page. A page's ```python blocks run in order in
one fresh Python process started in an empty temporary folder, sharing one namespace (later
blocks use the names earlier ones define), with nothing defined beforehand.

A block that cannot run in CI (a GPU, a second process) is skipped by the line
``<!-- no-test: reason -->`` right before its fence; keep them rare: a skipped block is a
block nobody checks. A page's blocks must stay quick (small data, few epochs): the whole
suite has to fit its time on two cores.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = "<!-- no-test:"
TIMEOUT_S = 1200  # per page

RUNNER = r'''
import json, sys, traceback
page, blocks = sys.argv[1], json.load(open(sys.argv[2]))
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"== {page} line {line}", flush=True)
    try:
        exec(compile("\n" * (line - 1) + code, page, "exec"), namespace)
    except BaseException:
        print(f"{page}: the python block at line {line} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
'''


def python_blocks(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line number of the first code line, code) of each ```python block, and the skipped
    ones with their reason."""
    lines = text.splitlines()
    run, skipped, i = [], [], 0
    while i < len(lines):
        if re.match(r"^```python\s*$", lines[i]):
            start = i + 1
            end = start
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            prev = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            code = "\n".join(lines[start:end]) + "\n"
            if prev.startswith(SKIP):
                skipped.append((start + 1, prev[len(SKIP):].strip(" ->")))
            else:
                run.append((start + 1, code))
            i = end
        i += 1
    return run, skipped


def pages() -> list[str]:
    """README.md and every markdown page of the site (not the benchmark outputs it includes)."""
    docs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")
                  if "examples" not in p.relative_to(ROOT / "docs").parts)
    return ["README.md"] + docs


PAGES_WITH_CODE = [p for p in pages() if python_blocks((ROOT / p).read_text(encoding="utf-8"))[0]]


def test_block_extraction_and_skip_marker():
    text = "a\n```python\nx = 1\n```\n\n<!-- no-test: needs a GPU -->\n```python\ncuda()\n```\n" \
           "```bash\nls\n```\n```python\ny = x + 1\n```\n"
    run, skipped = python_blocks(text)
    assert run == [(3, "x = 1\n"), (14, "y = x + 1\n")]
    assert skipped == [(8, "needs a GPU")]


def test_the_guide_has_its_examples():
    assert "README.md" in PAGES_WITH_CODE, "README.md lost its quickstart"
    guide = [p for p in PAGES_WITH_CODE if p.startswith("docs/guide/")]
    assert len(guide) >= 7, f"only these guide pages have Python examples: {guide}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_page_python_blocks_run_as_written(page, tmp_path):
    run, _ = python_blocks((ROOT / page).read_text(encoding="utf-8"))
    (tmp_path / "blocks.json").write_text(json.dumps(run))
    (tmp_path / "runner.py").write_text(RUNNER)
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               MPLBACKEND="Agg", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, str(tmp_path / "runner.py"), page, str(tmp_path / "blocks.json")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{page}:\n{proc.stderr[-6000:]}"
    ran = re.findall(rf"^== {re.escape(page)} line (\d+)$", proc.stdout, re.M)
    assert [int(n) for n in ran] == [line for line, _ in run]

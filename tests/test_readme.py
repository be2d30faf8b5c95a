"""README.md runs as written: every ```python block, in order, in one fresh Python process
started in an empty temporary folder, sharing one namespace (later blocks use the names
earlier ones define), with nothing defined beforehand.

A block that needs something CI does not have (a GPU, a second process) is skipped by
the line ``<!-- readme-test: skip (reason) -->`` right before its fence; use it sparingly:
a skipped block is a block nobody checks.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = "<!-- readme-test: skip"

RUNNER = r'''
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"== README.md line {line}", flush=True)
    try:
        exec(compile("\n" * (line - 1) + code, "README.md", "exec"), namespace)
    except BaseException:
        print(f"README.md: the python block at line {line} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
'''


def python_blocks(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(README line number of the first code line, code) of each ```python block, and the
    skipped ones with their reason."""
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
                skipped.append((start + 1, prev[len(SKIP):].strip(" ()->")))
            else:
                run.append((start + 1, code))
            i = end
        i += 1
    return run, skipped


def test_block_extraction_and_skip_marker():
    text = "a\n```python\nx = 1\n```\n\n<!-- readme-test: skip (needs a GPU) -->\n```python\ncuda()\n```\n" \
           "```bash\nls\n```\n```python\ny = x + 1\n```\n"
    run, skipped = python_blocks(text)
    assert run == [(3, "x = 1\n"), (14, "y = x + 1\n")]
    assert skipped == [(8, "needs a GPU")]


def test_readme_python_blocks_run_as_written(tmp_path):
    run, skipped = python_blocks((ROOT / "README.md").read_text())
    assert len(run) >= 4, "README.md lost its python examples"
    (tmp_path / "blocks.json").write_text(json.dumps(run))
    (tmp_path / "runner.py").write_text(RUNNER)
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               MPLBACKEND="Agg", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json")], cwd=work,
                          env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-6000:]
    ran = re.findall(r"^== README.md line (\d+)$", proc.stdout, re.M)
    assert [int(n) for n in ran] == [line for line, _ in run]

"""README tables that the benchmark scripts made stay what their JSON says.

A table in README.md that comes from a benchmark's JSON is fenced by
``<!-- table: <json path> <script path>:<function> -->`` and ``<!-- table end -->``; the
function (the script's own renderer) turns the JSON into the table, which must equal the
README's text. A table that puts several runs side by side names their JSON files joined by
commas; the function takes them in that order. A rerun of the benchmark that changes a number fails here until README is
updated (the script prints the table)."""

import importlib.util
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- table: (\S+) (\S+):(\w+) -->\n(.*?)\n<!-- table end -->", re.S)


def _render(json_paths: str, script: str, func: str) -> str:
    path = ROOT / script
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return getattr(module, func)(*(json.loads((ROOT / p).read_text()) for p in json_paths.split(",")))


def test_readme_tables_match_their_json():
    tables = MARK.findall((ROOT / "README.md").read_text())
    assert tables, "no generated tables marked in README.md"
    for json_path, script, func, text in tables:
        assert _render(json_path, script, func) == text, f"README table from {json_path} differs: rerun {script}"


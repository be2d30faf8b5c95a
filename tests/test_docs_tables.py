"""Tables that the benchmark scripts made stay what their JSON says, and the site's generated
sections render.

A table that comes from a benchmark's JSON is fenced by
``<!-- table: <json path> <script path>:<function> -->`` and ``<!-- table end -->``; the
function (the script's own renderer) turns the JSON into the table. A table that puts several
runs side by side names their JSON files joined by commas; the function takes them in that
order. In README.md the fence holds a copy, which must equal the rendering (a rerun of the
benchmark that changes a number fails here until README is updated: the script prints the
table); in the pages under docs/ the fence is empty and the build fills it in
(docs/hooks.py), so here every such fence must render.
"""

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- table: (\S+) (\S+):(\w+) -->\n(.*?)\n<!-- table end -->", re.S)
_spec = importlib.util.spec_from_file_location("onnx2snn_docs_hooks", ROOT / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(_spec)  # docs/hooks.py: the renderers the site build uses
_spec.loader.exec_module(hooks)
PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if "examples" not in p.relative_to(ROOT / "docs").parts)


def test_readme_tables_match_their_json():
    tables = MARK.findall((ROOT / "README.md").read_text())
    assert tables, "no generated tables marked in README.md"
    for json_path, script, func, text in tables:
        assert hooks.render_table(json_path, script, func) == text, \
            f"README table from {json_path} differs: rerun {script}"


@pytest.mark.parametrize("page", [p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_markers_render(page):
    """Every table and generated section of a page renders (what `mkdocs build` runs)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    for m in hooks.TABLE.finditer(text):
        assert hooks.render_table(*m.groups()).startswith("|"), f"{page}: {m.group(0)[:80]}"
    for name in hooks.GENERATED.findall(text):
        assert name in hooks.GENERATORS, f"{page}: unknown generated section {name}"
    out = hooks.expand(text)
    assert "<!-- generated:" not in out


def test_generated_sections_are_the_code():
    from onnx2snn import settings
    from onnx2snn.cli import COMMANDS

    cli = hooks.GENERATORS["cli"]()
    assert all(f"## onnx2snn {c}\n" in cli for c in COMMANDS)
    for name, table in (("settings-convert", settings.CONVERT), ("settings-finetune", settings.FINETUNE)):
        rows = hooks.GENERATORS[name]().splitlines()[2:]
        assert [r.split("|")[1].strip(" `") for r in rows] == list(table)  # every setting, in order
        flags = {f for s in table for f in getattr(table[s], "flags", ()) or ()}
        assert flags and all(f in cli for f in flags), sorted(f for f in flags if f not in cli)

"""mkdocs hooks (``hooks:`` in mkdocs.yml): the pages hold markers where the code or a
benchmark's JSON has the content, and the build writes it in, so the site never drifts.

- ``<!-- table: JSON[,JSON...] SCRIPT:FUNCTION -->`` ... ``<!-- table end -->``: the table the
  benchmark script's own renderer makes from its JSON (the same markers README.md uses, where
  ``tests/test_docs_tables.py`` checks the copy; in the pages the body is left empty).
- ``<!-- generated: NAME -->``: a reference section made from the code, one of
  :data:`GENERATORS` (the command line's ``--help`` texts, the settings tables of
  :mod:`onnx2snn.settings`, the energy model's rules and costs).

Only the standard library and onnx2snn are imported (no mkdocs), so the tests can use it too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import sys
from typing import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE = re.compile(r"<!-- table: (\S+) (\S+):(\w+) -->\n(?:.*?\n)?<!-- table end -->", re.S)
GENERATED = re.compile(r"<!-- generated: ([\w-]+) -->")
HELP_WIDTH = 100  # columns of the --help texts, fixed so that the page is the same everywhere


def render_table(json_paths: str, script: str, func: str) -> str:
    """``script``'s ``func`` applied to the JSON files (comma-separated, in order)."""
    path = ROOT / script
    saved = list(sys.path)  # scripts put their folder on the path; leave it as it was (a scripts/
    sys.path.insert(0, str(path.parent))  # module must not shadow one of tests/ in this process)
    try:
        spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    data = [json.loads((ROOT / p).read_text(encoding="utf-8")) for p in json_paths.split(",")]
    return getattr(module, func)(*data)


def cli_markdown() -> str:
    """``onnx2snn --help`` and every command's ``--help``, as text blocks."""
    import argparse

    from onnx2snn.cli import COMMANDS, build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        parser = build_parser()
        parts = ["## onnx2snn", "", "```text", parser.format_help().rstrip(), "```"]
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name in COMMANDS:
            parts += ["", f"## onnx2snn {name}", "", "```text", sub.choices[name].format_help().rstrip(), "```"]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def settings_markdown(table_name: str) -> str:
    """One row per setting of ``onnx2snn.settings.<table_name>``: name, default, command-line
    flag (and its default where it differs), help (or why the setting is API-only)."""
    from onnx2snn import settings

    table = getattr(settings, table_name)
    rows = ["| setting | default | command line | help |", "|---|---|---|---|"]
    for name in table:
        s = table[name]
        flags = ", ".join(f"`{f}`" for f in getattr(s, "flags", ()) or ())
        cli = flags or "API only"
        default = getattr(s, "default", None)
        cli_default = getattr(s, "command_line_default", default)
        if flags and cli_default != default:
            cli += f" (default `{cli_default!r}`)"
        why = " ".join(x for x in (getattr(s, "api_only", ""), getattr(s, "reason", "")) if x)
        text = getattr(s, "help", "") or ""
        if getattr(s, "choices", None):
            text += " (one of " + ", ".join(f"`{c}`" for c in s.choices) + ")"
        if why:
            text = f"{text} *{why}*" if text else f"*{why}*"
        rows.append(f"| `{name}` | `{default!r}` | {_cell(cli)} | {_cell(text)} |")
    return "\n".join(rows)


def energy_rules() -> str:
    from onnx2snn.verification.energy import rules_table

    return rules_table()


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_markdown,
    "settings-convert": lambda: settings_markdown("CONVERT"),
    "settings-finetune": lambda: settings_markdown("FINETUNE"),
    "energy-rules": energy_rules,
}


def expand(markdown: str) -> str:
    """The page with every table and generated marker filled in."""
    markdown = TABLE.sub(lambda m: render_table(m.group(1), m.group(2), m.group(3)), markdown)

    def generated(m: re.Match) -> str:
        if m.group(1) not in GENERATORS:
            raise KeyError(f"docs: unknown generated section {m.group(1)!r}; known: {sorted(GENERATORS)}")
        return GENERATORS[m.group(1)]()

    return GENERATED.sub(generated, markdown)


def on_config(config, **kwargs):
    if str(ROOT) not in sys.path:  # this checkout's onnx2snn, not another installed one
        sys.path.insert(0, str(ROOT))
    return config


def on_page_markdown(markdown: str, page=None, config=None, files=None, **kwargs) -> str:
    return expand(markdown)

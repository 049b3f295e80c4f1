"""The docs stay true: tables that list declared things (options, operators, CLI arguments) are
generated from the declarations and must match what their function returns now; relative links
lead to files and headings that exist; the README's test command is the one CI runs."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("regenerate", ROOT / "docs" / "regenerate.py")
assert _spec and _spec.loader
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)


def blocks() -> list[tuple[Path, str, str]]:
    return [(path, m.group("call"), m.group("body")) for path in regenerate.documents()
            for m in regenerate.BLOCK.finditer(path.read_text())]


def test_the_generated_tables_exist():
    calls = {call for _, call, _ in blocks()}
    assert {"config.options_table", "cli.arguments_table", "support.ops_table"} <= calls, calls


@pytest.mark.parametrize("path, call, body", blocks(),
                         ids=[f"{p.name}:{c}" for p, c, _ in blocks()])
def test_generated_block_is_current(path, call, body):
    assert body == regenerate.render(call), (
        f"{path.name}: the {call}() block is out of date; run `python docs/regenerate.py`")


LINK = re.compile(r"\]\((?!https?://|#)(?P<path>[^)#\s]+)(?:#(?P<anchor>[^)\s]+))?\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("path", regenerate.documents(), ids=lambda p: p.name)
def test_relative_links_lead_somewhere(path):
    for match in LINK.finditer(path.read_text()):
        target = (path.parent / match.group("path")).resolve()
        assert target.exists(), f"{path.name} links to {match.group('path')}, which does not exist"
        anchor = match.group("anchor")
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{path.name}: no heading '#{anchor}' in {target.name}"


def test_the_readme_test_command_is_what_ci_runs():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("python3 -m venv")]
    assert len(ci) == 1 and f"```bash\n{ci[0]}\n```" in (ROOT / "README.md").read_text()

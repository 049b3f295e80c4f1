"""Tables in the docs that list declared things (options, operators, CLI arguments) are
generated from the declarations; each must match what its function returns now."""
from __future__ import annotations

import importlib.util
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

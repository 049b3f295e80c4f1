"""Rewrite every generated block of the docs from the declarations it comes from.

A block is ``<!-- begin: module.function() -->`` ... ``<!-- end: module.function() -->`` in a
Markdown file of docs/ (or README.md); its body is the string ``mxtrt_backend.module.function()``
returns. tests/test_docs.py fails while any block is out of date; run ``python docs/regenerate.py``
to bring them all up to date.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- begin: (?P<call>[\w.]+)\(\) -->\n)(?P<body>.*?)(<!-- end: (?P=call)\(\) -->)",
                   re.S)


def documents() -> list[Path]:
    return sorted(ROOT.joinpath("docs").glob("*.md")) + [ROOT / "README.md"]


def render(call: str) -> str:
    module, _, function = call.rpartition(".")
    text = getattr(importlib.import_module(f"mxtrt_backend.{module}"), function)()
    return text if text.endswith("\n") else text + "\n"


def regenerated(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("call")) + m.group(4), text)


def main() -> int:
    for path in documents():
        text = path.read_text()
        new = regenerated(text)
        if new != text:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

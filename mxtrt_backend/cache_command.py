"""`mxtrt cache`: what the on-disk engine cache holds, and making room in it.

``list`` shows every engine (key, what it computes, runtime, size, last use), ``clear`` deletes
them all, ``prune`` deletes the least recently used ones beyond a size. All three work on the
folder the options name (``cache_dir``: ``$MXTRT_CACHE_DIR`` or the default) unless ``--dir``
names another, and clean up what killed processes left (temporary files, build locks).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from . import config
from .engine import cache


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _summary(folder: Path, options: config.Options) -> str:
    found = cache.entries(folder)
    limit = _size(options.cache_max_size) if options.cache_max_size else "none"
    return (f"{len(found)} engine{'' if len(found) == 1 else 's'}, "
            f"{_size(sum(e.size for e in found))} in {folder} (cache_max_size: {limit})")


def list_engines(folder: Path, options: config.Options) -> int:
    rows = [("key", "subgraph", "runtime", "size", "last use")]
    for entry in cache.entries(folder):
        header = entry.header
        runtime = f"{header.get('runtime', '?')} {header.get('version', '')}".strip()
        rows.append((entry.key[:16], header.get("label") or ("-" if header else "(unreadable)"),
                     runtime if header else "-", _size(entry.size),
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_use))))
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) if i != 3 else cell.rjust(w)
                            for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    print(_summary(folder, options))
    return 0


def clear(folder: Path, options: config.Options) -> int:
    removed = cache.clear(folder)
    print(f"removed {removed} engine{'' if removed == 1 else 's'}; {_summary(folder, options)}")
    return 0


def prune(folder: Path, options: config.Options) -> int:
    removed = cache.prune(folder, options.cache_max_size, limit=None)
    print(f"removed {len(removed)} least recently used engine{'' if len(removed) == 1 else 's'}; "
          f"{_summary(folder, options)}")
    return 0


ACTIONS: dict[str, tuple[Callable[[Path, config.Options], int], str]] = {
    "list": (list_engines, "every engine: key, what it computes, runtime, size, last use"),
    "clear": (clear, "delete every engine of the cache folder"),
    "prune": (prune, "delete the least recently used engines until the rest fit in --max-size "
                     "(default: the option cache_max_size)"),
}


def arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (_, help) in ACTIONS.items():
        sub = actions.add_parser(name, help=help, description=help)
        sub.add_argument("--dir", help="the cache folder (default: the option cache_dir, i.e. "
                                       "$MXTRT_CACHE_DIR or ~/.cache/mxtrt)")
        if name == "prune":
            sub.add_argument("--max-size", metavar="SIZE",
                             help='e.g. "2G" or "500M" (powers of 1024); `clear` deletes them all')


def run(args: argparse.Namespace) -> int:
    raw = {"cache_dir": args.dir} if args.dir is not None else {}
    if getattr(args, "max_size", None) is not None:
        raw["cache_max_size"] = args.max_size
    try:
        options = config.resolve(raw)
    except config.OptionError as err:
        print(f"mxtrt cache: error: {err}", file=sys.stderr)
        return 2
    action, _ = ACTIONS[args.action]
    return action(Path(options.cache_dir), options)

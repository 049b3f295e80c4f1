"""The benchmark scripts still run against today's code (their figures are not checked here:
speed is measured by running them, docs/benchmarks.md)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_run_all_quick_sections_finish_and_print_their_tables(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--only",
                           "engine,overhead,partition"], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for title in ("== The cached engine", "== Overhead of the _TensorRT op", "== Partition time"):
        assert title in done.stdout


def test_every_benchmark_script_imports_and_refuses_an_unknown_net(tmp_path):
    for script in ("gluoncv_nets.py", "zoo_speed.py"):
        done = subprocess.run([sys.executable, str(BENCHMARKS / script), "no_such_net"],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 2 and "unknown net 'no_such_net'" in done.stderr, done.stderr

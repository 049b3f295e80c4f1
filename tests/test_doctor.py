"""`python -m mxtrt_backend doctor` on this machine (no TensorRT, no GPU)."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import onnxruntime
import pytest

from mxtrt_backend import cli, doctor
from mxtrt_backend.engine import gpu


def test_doctor_without_tensorrt_reports_it_and_checks_onnx_runtime(tmp_path):
    env = dict(os.environ, MXTRT_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-m", "mxtrt_backend", "doctor"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = {line.split()[0]: line for line in run.stdout.splitlines() if line.startswith("  ")}
    for component in ("MXNet", "CUDA", "GPU", "TensorRT", "ONNX"):
        assert component in lines, run.stdout
    if gpu.tensorrt_version() is None:
        assert "TensorRT      not found: pip install tensorrt" in run.stdout
        assert "TensorRT (gpu)       not available" in run.stdout
    assert "ONNX Runtime (cpu)   OK: built and ran" in run.stdout
    error = float(run.stdout.split("max relative error ")[1].split()[0])
    assert error <= doctor.TOLERANCE
    # Which runtime each command uses, with and without --ctx.
    commands = run.stdout.split("Commands (")[1]
    assert commands.startswith(f"{', '.join(cli.commands_with('--ctx'))} take --ctx):")
    assert {"demo", "convert", "bench"} <= set(cli.commands_with("--ctx"))
    assert f"--ctx cpu            ONNX Runtime on the CPU (onnxruntime {onnxruntime.__version__})" in commands
    if cli.gpu_problem(cli.Device("gpu", 0)) is not None:
        assert "  default              --ctx cpu (GPU contexts cannot run here: " in commands
        assert "  --ctx gpu:N          not available: " in commands
    # The doctor leaves the user's engine cache alone.
    assert not (tmp_path / "cache").exists()


def test_a_runtime_that_fails_makes_the_exit_code_nonzero(monkeypatch):
    # A GPU run forced on this CPU-only MXNet: it must be reported, not crash the doctor.
    monkeypatch.setattr(doctor, "RUNTIME_CHECKS",
                        (doctor.RuntimeCheck("forced GPU", "gpu", lambda: None),))
    out = io.StringIO()
    if doctor._trt_missing() is None:
        pytest.skip("a real GPU setup is present")
    assert doctor.doctor(out) == 1
    assert "forced GPU (gpu)     FAILED: " in out.getvalue()

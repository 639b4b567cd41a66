"""The skip policy (tests/skip_policy.py): every run reports its skip count; under CI
(EDGEKIT_STRICT_SKIPS=1 or CI set) a skip for any reason but a missing GPU or TensorRT fails it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.skip_policy import allowed

ROOT = Path(__file__).resolve().parents[2]

SUITE = '''
import pytest

def test_runs():
    assert 1 + 1 == 2

@pytest.mark.skipif(True, reason="no NVIDIA GPU visible")
def test_needs_a_gpu():
    pass

def test_needs_tensorrt():
    pytest.skip("TensorRT not installed (pip install edgekit[tensorrt])")
'''
UNEXPECTED = '''

def test_needs_data():
    pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
'''


def run_suite(tmp_path: Path, source: str, **env: str) -> subprocess.CompletedProcess:
    """pytest on a throwaway suite whose conftest registers the policy, as tests/conftest.py does."""
    (tmp_path / "conftest.py").write_text("from tests.skip_policy import (pytest_runtest_logreport,"
                                          " pytest_sessionfinish, pytest_terminal_summary)\n")
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(source))
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "EDGEKIT_STRICT_SKIPS")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                          env={**clean, "PYTHONPATH": str(ROOT), **env}, timeout=120)


@pytest.mark.parametrize("reason", [
    "no NVIDIA GPU visible", "no CUDA GPU visible to torch", "onnxruntime-gpu with CUDA not installed",
    "TensorRT not installed (pip install edgekit[tensorrt]; NVIDIA GPU needed)",
    "cuda-python not installed (pip install edgekit[tensorrt])",
    "a CUDA GPU is visible here", "TensorRT is installed here; this checks the machine without it",
    "the CUDA execution provider is available here"])
def test_gpu_and_tensorrt_reasons_are_allowed(reason):
    assert allowed(reason)


@pytest.mark.parametrize("reason", [
    "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
    "could not import 'openvino': No module named 'openvino'",
    "headless Chromium not installed (apt-get install chromium)",
    "needs OpenSSH (sshd missing): apt-get install openssh-server openssh-client",
    "the shipped profile devices/local-cpu.yaml is missing"])
def test_other_reasons_are_not(reason):
    assert not allowed(reason)


def test_allowed_skips_are_counted_and_pass_under_ci(tmp_path):
    proc = run_suite(tmp_path, SUITE, EDGEKIT_STRICT_SKIPS="1")
    assert proc.returncode == 0, proc.stdout
    assert "skipped: 2 (allowed reasons: a missing GPU; a missing TensorRT" in proc.stdout
    assert "unexpected" not in proc.stdout


@pytest.mark.parametrize("env", [{"EDGEKIT_STRICT_SKIPS": "1"}, {"CI": "true"}])
def test_an_unexpected_skip_fails_under_ci(tmp_path, env):
    proc = run_suite(tmp_path, SUITE + UNEXPECTED, **env)
    assert proc.returncode == 1, proc.stdout
    assert "skipped: 3 (allowed reasons:" in proc.stdout and "; 1 unexpected" in proc.stdout
    assert "unexpected skip: test_suite.py::test_needs_data: Fashion-MNIST not installed" \
        in proc.stdout


@pytest.mark.parametrize("env", [{}, {"CI": "true", "EDGEKIT_STRICT_SKIPS": "0"}])
def test_an_unexpected_skip_is_only_reported_elsewhere(tmp_path, env):
    proc = run_suite(tmp_path, SUITE + UNEXPECTED, **env)
    assert proc.returncode == 0, proc.stdout
    assert "; 1 unexpected" in proc.stdout and "test_needs_data" in proc.stdout

"""The installed package works alone (issue 16 part 5): the wheel is built from the sources,
installed into a fresh virtual environment outside the repository with no torch (what a device
has: edgekit and ONNX Runtime), and its `edgekit devices`, `bench` and `validate` run there on an
ONNX folder made with the workstation install, finding their device profiles in the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, requires_data
from tests.helpers import fast_cpu_profile

pytestmark = [pytest.mark.slow, requires_data]



def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def device_env() -> dict[str, str]:
    """The environment of a device shell: nothing of the repository on the path."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def build_wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (no stale build/ folder of the checkout)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "edgekit", src / "edgekit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "-w", str(dist), str(src)], cwd=src)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = dist.glob("edgekit-*.whl")
    return whl


wheel = pytest.fixture(scope="module", name="wheel")(build_wheel)


@pytest.fixture(scope="module")
def device_venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel, its dependencies and ONNX Runtime (the base install
    requires no runtime distribution: `edgekit[onnxruntime]` adds PyPI's) from PyPI, no torch."""
    venv = tmp_path_factory.mktemp("device") / "venv"
    proc = run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    assert proc.returncode == 0, proc.stderr
    proc = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                f"edgekit[onnxruntime] @ {wheel.as_uri()}"],
               cwd=venv.parent, env=device_env())
    if proc.returncode != 0 and "No matching distribution" in proc.stderr + proc.stdout:
        pytest.skip(f"PyPI not reachable for the wheel's dependencies: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return venv


def test_the_wheel_carries_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("edgekit/py.typed", "edgekit/_data/devices/local-cpu.yaml",
                     "edgekit/_data/calibration/fashion-mnist-512.npz",
                     "edgekit/_data/calibration/fashion-mnist-512.json",
                     "edgekit/_data/recipes/lenet5-fashion-mnist.yaml",
                     "edgekit/_data/zoo/lenet5.pt", "edgekit/_data/zoo/lenet5.json"):
        assert required in names, required
    assert not any(n.startswith("tests/") for n in names)


def test_devices_bench_validate_from_the_installed_wheel(device_venv: Path, tmp_path: Path) -> None:
    # The ONNX folder is made on the workstation (the repository's environment, with torch).
    from edgekit.zoo import shipped_checkpoint

    folder = tmp_path / "lenet5-onnx"
    proc = run([sys.executable, "-m", "edgekit", "export", str(shipped_checkpoint("lenet5")),
                "--target", "onnx", "-o", str(folder)], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    edgekit = str(device_venv / "bin" / "edgekit")
    python = str(device_venv / "bin" / "python")
    elsewhere = tmp_path / "elsewhere"  # no devices/ or recipes/ folder here
    elsewhere.mkdir()
    env = device_env()

    proc = run([python, "-c", "import importlib.util as u, edgekit; "
                "print(edgekit.__file__, u.find_spec('torch') is None)"], cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    where, no_torch = proc.stdout.split()
    assert Path(where).is_relative_to(device_venv) and no_torch == "True"

    proc = run([edgekit, "devices", "--json"], cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"local-cpu", "jetson-orin-nano", "nvidia-gpu"} <= set(rows)
    assert Path(rows["local-cpu"]["path"]).is_relative_to(device_venv)
    assert rows["local-cpu"]["runtimes"]["onnxruntime"]["usable_here"] is True

    profile = fast_cpu_profile(elsewhere / "fast.yaml")
    proc = run([edgekit, "bench", str(folder), "--device", str(profile), "--eval",
                "fashion-mnist:test", "--limit", "500", "--json"], cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    (record,) = json.loads(proc.stdout)
    assert record["model"] == "lenet5" and record["runtime"] == "onnxruntime"
    assert record["latency"]["valid"] and record["latency"]["p50_ms"] > 0
    assert record["accuracy"]["samples"] == 500 and record["accuracy"]["top1"] > 0.85
    versions = record["environment"]["versions"]
    assert versions["onnxruntime"] and "torch" not in versions and "openvino" not in versions

    proc = run([edgekit, "validate", str(folder), "--device", str(profile), "--eval",
                "fashion-mnist:test", "--limit", "500", "--max-drop", "1", "--json"],
               cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["passed"] is True
    tops = [r["accuracy"]["top1"] for r in result["records"]]
    assert tops and min(tops) > 0.85  # the shipped lenet5 scores 0.90 on the full test set

"""ONNX Runtime execution providers from the device profile: a profile asking for CUDA where CUDA is
not usable is an error by default, or, with allow_cpu_fallback, a CPU run that says so."""

from __future__ import annotations

from pathlib import Path

import pytest

ort = pytest.importorskip("onnxruntime")

from edgekit.errors import MissingDependencyError  # noqa: E402
from edgekit.runtimes.ort import OrtRunner  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402

HAVE_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()
SPEC = InputSpec(shape=(1, 1, 4, 4), mean=(0.0,), std=(1.0,))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    from tests.unit.test_lean_imports import small_onnx

    return small_onnx(tmp_path / "model.onnx")


@pytest.mark.skipif(HAVE_CUDA_EP, reason="the CUDA execution provider is available here")
def test_cuda_profile_without_cuda_is_an_error(model: Path) -> None:
    with pytest.raises(MissingDependencyError) as err:
        OrtRunner(model, SPEC, options={"providers": ["CUDAExecutionProvider",
                                                      "CPUExecutionProvider"]})
    text = str(err.value)
    assert "asked for CUDAExecutionProvider" in text and "pip install onnxruntime-gpu" in text
    assert "allow_cpu_fallback" in text and err.value.exit_code == 2


@pytest.mark.skipif(HAVE_CUDA_EP, reason="the CUDA execution provider is available here")
def test_allowed_fallback_is_recorded(model: Path) -> None:
    runner = OrtRunner(model, SPEC, options={"providers": ["cuda", "cpu"],
                                             "allow_cpu_fallback": True})
    info = runner.describe()
    assert info["providers_used"] == ["CPUExecutionProvider"]
    assert info["providers_missing"] == ["CUDAExecutionProvider"]
    assert "ran on CPUExecutionProvider" in info["fallback"]
    assert "end-to-end" not in runner.timing_scope  # a CPU run is timed as one


def test_cpu_profile_has_no_fallback_note(model: Path) -> None:
    info = OrtRunner(model, SPEC, options={"providers": ["CPUExecutionProvider"]}).describe()
    assert info["fallback"] is None and info["providers_used"] == ["CPUExecutionProvider"]


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_CUDA_EP, reason="onnxruntime-gpu with CUDA not installed")
def test_cuda_provider_runs_and_says_so(model: Path) -> None:
    runner = OrtRunner(model, SPEC, options={"providers": ["CUDAExecutionProvider",
                                                           "CPUExecutionProvider"]})
    assert runner.describe()["providers_used"][0] == "CUDAExecutionProvider"
    assert "end-to-end" in runner.timing_scope

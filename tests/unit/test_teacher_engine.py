"""The teacher's forwards on ONNX Runtime where measured faster (edgekit.zoo.teacher_engine): the
export agrees with torch, the choice follows the measured speeds and the export's price, is
measured once per machine, and falls back to torch with the reason when the export fails or
disagrees; a distillation through it trains the weights a torch teacher trains."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import edgekit.zoo.teacher_engine as engine_mod  # noqa: E402
from edgekit.io.files import cache_dir  # noqa: E402
from edgekit.passes.distill import distillation_loss  # noqa: E402
from edgekit.zoo.accel import TrainPlan, TrainSettings  # noqa: E402
from edgekit.zoo.teacher import TeacherLogits  # noqa: E402
from edgekit.zoo.train import FitOptions, TrainConfig, fit  # noqa: E402
from tests.helpers import tiny_torch_model  # noqa: E402
from tests.unit.test_teacher_cache import SPEC, _raw  # noqa: E402

CPU = TrainPlan("cpu", "fp32")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEKIT_TEACHER_CACHE_MB", raising=False)


def _teacher():
    torch.manual_seed(0)
    return tiny_torch_model().eval()


def _batch(n: int = 32):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _speeds(monkeypatch, torch_ips: float, ort_ips: float) -> list[int]:
    """The micro-benchmark replaced by these speeds (the export still runs); counts calls."""
    calls: list[int] = []

    def measure(model, plan, x, engine):
        calls.append(1)
        return {"torch": torch_ips, "onnxruntime": ort_ips}

    monkeypatch.setattr(engine_mod, "measure", measure)
    monkeypatch.setattr(engine_mod, "MIN_TEACHER_S", 0.0)
    return calls


def test_the_export_gives_torchs_logits_for_any_batch_size():
    teacher, x = _teacher(), _batch(32)
    session = engine_mod.OrtTeacher(teacher, x[:2], threads=2)
    for n in (1, 7, 32):
        reference = engine_mod.torch_forward(teacher, CPU, x[:n])
        assert engine_mod.agrees(reference, session(x[:n])) is None
    assert session.export_s > 0


def test_measured_faster_and_worth_its_export_onnxruntime_computes(monkeypatch):
    calls = _speeds(monkeypatch, torch_ips=100.0, ort_ips=1000.0)
    teacher, x = _teacher(), _batch()
    first, session, why = engine_mod.choose(teacher, CPU, x, images=60_000)
    assert session is not None and why.startswith("onnxruntime fp32 (1000 images/s")
    torch.testing.assert_close(first, engine_mod.torch_forward(teacher, CPU, x))
    # measured once for this machine: the next run reads train-plans.json
    _, again, _ = engine_mod.choose(teacher, CPU, x, images=60_000)
    assert again is not None and calls == [1]
    entries = json.loads((cache_dir() / "train-plans.json").read_text())
    [entry] = [e for e in entries.values() if "onnxruntime" in e.get("key", {})]
    assert entry["torch"] == 100.0 and entry["onnxruntime"] == 1000.0 and entry["export_s"] > 0


def test_slower_or_not_repaying_its_export_torch_computes(monkeypatch):
    teacher, x = _teacher(), _batch()
    _speeds(monkeypatch, torch_ips=1000.0, ort_ips=1010.0)
    _, session, why = engine_mod.choose(teacher, CPU, x, images=60_000)
    assert session is None and "not faster here" in why
    (cache_dir() / "train-plans.json").unlink()
    _speeds(monkeypatch, torch_ips=100_000.0, ort_ips=200_000.0)
    _, session, why = engine_mod.choose(teacher, CPU, x, images=1_000)  # saves 5 ms
    assert session is None and "its export costs" in why


def test_too_few_images_measure_nothing(monkeypatch):
    calls = _speeds(monkeypatch, torch_ips=100.0, ort_ips=1000.0)
    monkeypatch.setattr(engine_mod, "MIN_TEACHER_S", 20.0)
    _, session, why = engine_mod.choose(_teacher(), CPU, _batch(), images=96)
    assert session is None and "too few to repay an export" in why and calls == []


def test_bf16_or_another_device_keeps_torch(monkeypatch):
    _speeds(monkeypatch, torch_ips=100.0, ort_ips=1000.0)
    _, session, why = engine_mod.choose(_teacher(), TrainPlan("cpu", "bf16"), _batch(), 60_000)
    assert session is None and why == "torch (bf16 on cpu)"


@pytest.mark.parametrize("fault", ["export", "parity"])
def test_a_failing_or_disagreeing_export_leaves_torch_and_says_why(monkeypatch, fault):
    calls = _speeds(monkeypatch, torch_ips=100.0, ort_ips=1000.0)
    if fault == "export":
        def broken(model, example, path):
            raise RuntimeError("unsupported operator")
        monkeypatch.setattr(engine_mod, "_export", broken)
    else:
        real = engine_mod.OrtTeacher.__call__
        monkeypatch.setattr(engine_mod.OrtTeacher, "__call__", lambda self, x: real(self, x) + 1)
    teacher, x = _teacher(), _batch()
    _, session, why = engine_mod.choose(teacher, CPU, x, images=60_000)
    expected = "its ONNX export failed: unsupported operator" if fault == "export" \
        else "its ONNX export differs from torch by 1 on the first batch"
    assert session is None and why == f"torch ({expected})" and calls == []
    # kept for this machine: not exported again
    monkeypatch.setattr(engine_mod, "OrtTeacher", None)
    assert engine_mod.choose(teacher, CPU, x, images=60_000)[2] == f"torch ({expected})"


def test_distilling_with_onnxruntime_trains_what_a_torch_teacher_trains(monkeypatch):
    teacher = _teacher()
    torch.manual_seed(3)
    student = tiny_torch_model()

    def distil(cache: bool):
        logits = TeacherLogits(teacher, cache=cache)
        model = copy.deepcopy(student)
        history = fit(model, _raw(), SPEC, None,
                      TrainConfig(epochs=2, batch_size=32, warmup_epochs=0, seed=0),
                      options=FitOptions(loss_fn=distillation_loss(2.0, 0.5),
                                         train=TrainSettings(device="cpu", precision="fp32"),
                                         teacher=logits))
        return model.state_dict(), history["teacher"]

    by_torch, record = distil(cache=False)
    assert record["teacher_engine"].startswith("torch (~")  # 96 images: too few
    _speeds(monkeypatch, torch_ips=100.0, ort_ips=1000.0)
    by_ort, record = distil(cache=True)
    assert record["teacher_engine"].startswith("onnxruntime fp32")
    assert record["teacher_forwards"] == 6 and record["built_epochs"] == [1, 2]
    for name, value in by_torch.items():
        np.testing.assert_allclose(by_ort[name].numpy(), value.numpy(), atol=1e-4, rtol=1e-3)
    # the cached logits (ONNX Runtime's) serve the next run without a forward
    assert distil(cache=True)[1]["teacher_forwards"] == 0

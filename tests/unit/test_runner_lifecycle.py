"""Runners have a lifecycle (Polygraphy's activate/deactivate): a runner loads in __init__, frees
what it loaded on close() and is a context manager; `open_runners()` counts the runners loaded
and not closed in this process. `edgekit validate` and `edgekit optimize` close every runner
they open: nothing is left to the garbage collector."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import InputError
from edgekit.runtimes.base import open_runners
from edgekit.spec import InputSpec
from tests.conftest import requires_data
from tests.helpers import tiny_onnx

ROOT = Path(__file__).resolve().parents[2]
SPEC = InputSpec(shape=(1, 1, 8, 8), mean=(0.0,), std=(1.0,))


def test_an_ort_runner_frees_its_session_on_close(tmp_path: Path) -> None:
    from edgekit.runtimes.ort import OrtRunner

    path = tiny_onnx(tmp_path / "model.onnx", SPEC)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    before = open_runners()
    with OrtRunner(path, SPEC, threads=1) as runner:
        assert open_runners() == before + 1
        logits = runner.infer(x)
        assert logits.shape == (2, 4) and runner.session is not None
    assert runner.closed and runner.session is None and open_runners() == before
    runner.close()  # idempotent: counted once
    assert open_runners() == before
    with pytest.raises(InputError, match="is closed"):
        runner.infer(x)
    with OrtRunner(path, SPEC, threads=1) as again:  # the same numbers after a reopen
        np.testing.assert_array_equal(again.infer(x), logits)


def test_an_openvino_runner_frees_its_compiled_model_on_close(tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="OpenVINO not installed (pip install openvino)")
    from edgekit.runtimes.openvino import OpenVinoRunner

    path = tiny_onnx(tmp_path / "model.onnx", SPEC)
    before = open_runners()
    with OpenVinoRunner(path, SPEC, threads=1) as runner:
        assert runner.infer(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 4)
        assert open_runners() == before + 1
    assert runner.compiled is None and runner.request is None and open_runners() == before


def test_a_runner_that_is_not_closed_stays_counted(tmp_path: Path) -> None:
    """What the count is for: a runner dropped without close() is left to the garbage
    collector, and the count says so (the tests below would see it)."""
    from edgekit.runtimes.ort import OrtRunner

    path = tiny_onnx(tmp_path / "model.onnx", SPEC)
    before = open_runners()
    runner = OrtRunner(path, SPEC, threads=1)
    del runner
    gc.collect()
    assert open_runners() == before + 1
    from edgekit.runtimes import base

    base._count_open(-1)  # put the count back for the tests that follow


def test_validate_closes_every_runner_it_opens(tiny_folder, quick_profile) -> None:
    from edgekit.data.given import DataSources
    from edgekit.devices import load_profile
    from edgekit.executors import ValidationJob
    from edgekit.validate.gate import Budget
    from edgekit.validate.validator import validate

    folder, eval_path = tiny_folder()
    device = load_profile(quick_profile())
    before = open_runners()
    result = validate(ValidationJob(target=folder, device=device,
                                    budget=Budget(max_drop=1.0),
                                    data=DataSources(eval=str(eval_path))))
    # two artifacts measured (their reference logits, each artifact's runner): all closed
    assert len(result.records) == 2 and open_runners() == before


@requires_data
@pytest.mark.slow
def test_optimize_closes_every_runner_it_opens(tmp_path: Path, zoo_checkpoint,
                                               quick_profile) -> None:
    """A real (small) search on LeNet-5: the fp32 and int8 baselines and candidates measured
    and the winner timed again with the original in alternating rounds, every runner closed."""
    pytest.importorskip("optuna", reason="Optuna not installed (pip install optuna)")
    from edgekit.devices import load_profile
    from edgekit.optimize.search import Optimizer
    from edgekit.optimize.space import OptimizeSettings

    device = load_profile(quick_profile(name="quick-cpu"))
    settings = OptimizeSettings(prune=[0.0], dwsep=["off"], runtimes=["onnxruntime"],
                                precisions=["fp32", "int8"], int8_fallback=["none"],
                                calib_size=64, trials=2)
    before = open_runners()
    summary = Optimizer(zoo_checkpoint("lenet5"), [device], settings, out_dir=tmp_path / "out",
                        eval_source="fashion-mnist:test", eval_limit=200,
                        calib_source=str(ROOT / "calibration" / "fashion-mnist-512.npz")).run()
    measured = summary["devices"]["quick-cpu"]
    assert summary["cache"]["measured"] >= 2, summary["cache"]  # fp32 and int8 were measured
    assert measured.get("winner"), measured
    assert open_runners() == before

"""The model matrix's bookkeeping (benchmarks/matrix_worker.py, benchmarks/bench_matrix.py, issue
27): where a model's seconds go (each second counted in one phase), which columns start from
load's fp32 ONNX model, and the seconds table the README section shows."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_matrix  # noqa: E402
import matrix_worker  # noqa: E402


def test_a_phase_inside_another_is_counted_once():
    ticks = iter([0.0, 2.0, 5.0, 6.0, 10.0, 11.0])
    clock = matrix_worker.PhaseClock(clock=lambda: next(ticks))
    inner = clock.wrap("openvino_convert", lambda: "ir")
    outer = clock.wrap("nncf_quantize", lambda: inner() + "-int8")
    assert outer() == "ir-int8"  # 0 → 2 outer, 2 → 5 inner, 5 → 6 outer
    assert clock.wrap("onnx_export", lambda: None)() is None  # 10 → 11
    assert clock.take(15.0) == {"nncf_quantize": 3.0, "openvino_convert": 3.0,
                                "onnx_export": 1.0, "other": 8.0}
    assert clock.take(2.0) == {"other": 2.0}  # a take starts the next column from zero


def test_the_int8_and_openvino_columns_start_from_loads_onnx_model(tmp_path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"onnx")
    onnx = tmp_path / "onnx" / "model.onnx"
    reuse = matrix_worker.commands_for("tv:resnet18", tmp_path, 64, {"num_classes": 10}, True)
    for column in ("int8_ort", "int8_openvino"):
        assert reuse[column][:2] == ["compress", onnx]
        assert "--arch" not in reuse[column]  # the ONNX file records its InputSpec
    assert reuse["export_openvino"][:2] == ["export", tmp_path / "onnx"]
    # torch passes and the export itself still start from the checkpoint
    for column in ("load", "inspect", "prune", "dwsep"):
        assert reuse[column][1] == tmp_path / "model.pt"
    # every export's parity runs on the matrix's own images
    for column in ("load", "export_openvino"):
        assert reuse[column][reuse[column].index("--parity-data") + 1] == \
            str(tmp_path / "eval.npz")
    # load did not pass: each column from the checkpoint, as before, with the model's flags
    alone = matrix_worker.commands_for("tv:resnet18", tmp_path, 64, {"num_classes": 10}, False)
    for column in ("int8_ort", "int8_openvino", "export_openvino"):
        assert alone[column][1] == tmp_path / "model.pt"
        assert alone[column][alone[column].index("--arch") + 1] == "torchvision.models:resnet18"


def record(model: str, seconds: dict[str, float], export: float) -> dict:
    columns = {k: {"status": "pass", "seconds": s,
                   "phases": {"onnx_export": export, "other": s - export}}
               for k, s in seconds.items()}
    return {"model": model, "setup": {"import": 4.0, "build": 1.0, "data": 1.0},
            "columns": columns}


def test_the_section_shows_the_median_seconds_of_each_column():
    cols = matrix_worker.COLUMNS
    results = [record("tv:a", dict.fromkeys(cols, 10.0), 2.0),
               record("tv:b", dict.fromkeys(cols, 30.0), 6.0),
               record("tv:c", dict.fromkeys(cols, 20.0), 4.0)]
    text = bench_matrix.timing(results)
    assert "median of the 3 models" in text
    assert "| 6 | " + " | ".join(["20"] * len(cols)) + " |" in text
    # per model, the phase summed over its 8 columns: 16, 48, 32 s of export → median 32
    assert "onnx_export 32 s" in text and "other 128 s" in text
    # results of the worker before per-column phases render as they did
    assert bench_matrix.timing([{"model": "tv:a", "columns": {}}]) == ""

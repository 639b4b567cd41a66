"""`edgekit compress --int8` end to end through the CLI: what lands in the output folder and the
manifest, the budget loop failing with its table (exit 1, no int8 file), the TensorRT flavour on a
hybrid CNN+GRU, the OpenVINO flavour, and bad inputs (exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.metrics import TOLERANCE
from tests.helpers import edgekit

ROOT = Path(__file__).resolve().parent.parent.parent
CALIB = ROOT / "calibration" / "fashion-mnist-512.npz"


def stage(out: Path, name: str) -> dict:
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return next(s for s in stages if s["stage"] == name)


def leftovers(out: Path) -> list[str]:
    """Temp files or work folders a run must not leave behind."""
    return [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".part"]


@pytest.fixture(scope="module")
def int8_run(lenet5: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("int8")
    proc = edgekit("compress", str(lenet5), "--int8", "--calib", str(CALIB), "--calib-size", "256",
                   "--eval", "fashion-mnist:test", "--eval-limit", "1000", "--max-drop", "1.0",
                   "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_int8_artifact_and_manifest(int8_run) -> None:
    from edgekit.data import load_dataset
    from edgekit.io.files import sha256_file
    from edgekit.io.onnxfile import spec_from_onnx
    from edgekit.runtimes.ort import OrtRunner

    out, proc = int8_run
    assert (out / "model.onnx").is_file() and (out / "model.int8.onnx").is_file()
    assert leftovers(out) == []
    record = stage(out, "quantize-int8")
    (entry,) = record["outputs"]
    assert entry["path"] == "model.int8.onnx" and entry["precision"] == "int8"
    assert entry["quantization"]["weights"].endswith("per channel (output-channel axis)")
    metrics = record["metrics"]
    calib = metrics["calibration"]
    assert calib["sha256"] == sha256_file(CALIB) and calib["count"] == 256
    assert calib["method"] == "percentile" and calib["percentile"] == 99.99
    assert sum(calib["per_class"].values()) == 256 and len(calib["per_class"]) == 10
    acc = metrics["accuracy"]
    assert acc["runtime"] == "onnxruntime" and acc["samples"] == 1000
    assert acc["drop_points"] == pytest.approx(100 * (acc["fp32_top1"] - acc["int8_top1"]))
    assert acc["drop_points"] <= 1.0 and acc["fp32_top1"] > 0.6
    assert metrics["budget"]["held"] is True and metrics["budget"]["allowed_points"] == 1.0
    assert [layer["op"] for layer in metrics["layers"]["int8"]] == ["Conv", "Conv", "Gemm",
                                                                   "Gemm", "Gemm"]
    assert metrics["layers"]["float"] == []
    low, high = metrics["scale_ranges"]["activation"]
    assert 0 < low <= high
    assert metrics["preparation"]["batchnorm"]["left_before_calibration"] == 0
    # The recorded int8 top-1 is what ONNX Runtime gives on the same eval sample.
    spec = spec_from_onnx(out / "model.int8.onnx")
    data = load_dataset("fashion-mnist:test", spec, limit=1000)
    logits = OrtRunner(out / "model.int8.onnx", spec).predict(data.x)
    assert float(np.mean(logits.argmax(1) == data.y)) == pytest.approx(acc["int8_top1"])
    rows = json.loads(proc.stdout)["rows"]
    int8_row = next(r for r in rows if r["step"] == "int8 onnxruntime")
    assert int8_row["top1"] == acc["int8_top1"] and int8_row["layers"] == "5/5 int8"


def test_impossible_budget_fails_with_the_table(lenet5: Path, tmp_path: Path) -> None:
    """The quantize pass's own `max_drop` may be negative (int8 must beat fp32: impossible); the
    budget loop then fails (exit code 1) with the table of what it tried, writing no int8 model.
    A negative `--max-drop` on the command line is bad input (exit 2), as in validate."""
    import edgekit as api
    from edgekit import DataSources
    from edgekit.errors import GateError

    refused = edgekit("compress", str(lenet5), "--int8", "--calib", str(CALIB), "--eval",
                      "fashion-mnist:test", "--max-drop", "-50", "-o", str(tmp_path / "cli"))
    assert refused.returncode == 2 and "max_drop" in refused.stderr, refused.stderr
    assert not (tmp_path / "cli").exists()
    with pytest.raises(GateError) as caught:
        api.compress(str(lenet5), str(tmp_path), steps=[("quantize", {"max_drop": -50,
                                                                      "calib_size": 128})],
                     data=DataSources(calib=str(CALIB), eval="fashion-mnist:test",
                                      eval_limit=500))
    err = str(caught.value)
    assert caught.value.exit_code == 1
    assert "misses the accuracy budget" in err and "No int8 model was written" in err
    lines = err.splitlines()
    header = next(i for i, line in enumerate(lines) if "layer added to float" in line)
    rows = [line.split() for line in lines[header + 1 : header + 5]]
    assert [r[0] for r in rows] == ["0", "1", "2", "3"]  # 4 of the 5 layers tried in float
    assert all(r[-1] == "misses" for r in rows)
    assert "(allowed drop: -50.00 points)" in err
    assert not (tmp_path / "model.int8.onnx").exists() and leftovers(tmp_path) == []
    manifest = tmp_path / "manifest.json"
    stages = [s["stage"] for s in json.loads(manifest.read_text())["stages"]] \
        if manifest.exists() else []
    assert not any(s.startswith("quantize") for s in stages)


def test_budget_loop_keeps_the_sensitive_layer_float(lenet5: Path, tmp_path: Path) -> None:
    """A calibration set of dark images gives the input too narrow a range: int8 loses points,
    and keeping the first conv (the only reader of the input) in float wins them back."""
    with np.load(CALIB) as data:
        np.savez(tmp_path / "dark.npz", x=(data["x"] // 8).astype(np.uint8), y=data["y"])
    out = tmp_path / "out"
    proc = edgekit("compress", str(lenet5), "--int8", "--calib", str(tmp_path / "dark.npz"),
                   "--calib-method", "minmax", "--eval", "fashion-mnist:test", "--eval-limit",
                   "1000", "--max-drop", "2.0", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    metrics = stage(out, "quantize-int8")["metrics"]
    budget = metrics["budget"]
    first, last = budget["trials"][0], budget["trials"][-1]
    assert first["held"] is False and first["drop_points"] > 2.0
    assert last["held"] is True and budget["held"] is True
    assert budget["float_layers"][0] == "node_conv2d"
    assert budget["sensitivity"][0]["layer"] == "node_conv2d"
    # held as the budget decides it: within its float tolerance (2.0000000000000018 is 2.0)
    assert metrics["accuracy"]["drop_points"] == last["drop_points"] <= 2.0 + TOLERANCE
    float_layers = {f["name"]: f for f in metrics["layers"]["float"]}
    assert "accuracy budget" in float_layers["node_conv2d"]["reason"]
    # every layer on one side only: the ones the budget kept float (a DequantizeLinear may
    # still feed them: the layer before is int8) are float, the rest int8, 5 in all
    int8 = {q["name"] for q in metrics["layers"]["int8"]}
    assert set(budget["float_layers"]) <= set(float_layers) and not int8 & set(float_layers)
    assert len(int8) == 5 - len(budget["float_layers"]) == metrics["counts"]["int8"]
    # the table wraps its details column at 100 columns: read it with the borders removed
    assert "kept float: node_conv2d" in " ".join(proc.stdout.replace("│", " ").split())


def test_tensorrt_flavour_on_a_gru_hybrid(zoo_checkpoint, tmp_path: Path) -> None:
    import onnx

    from edgekit.targets.tensorrt import check_qdq_for_tensorrt, tensorrt_qdq_problems

    proc = edgekit("compress", str(zoo_checkpoint("cnn_gru")), "--int8", "--for", "tensorrt",
                   "--calib", str(CALIB), "--calib-size", "256", "--eval", "fashion-mnist:test",
                   "--eval-limit", "1000", "--max-drop", "1.0", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "model.int8.trt.onnx"
    assert tensorrt_qdq_problems(onnx.load(str(path)), allow_float=())[0] == []
    checked = check_qdq_for_tensorrt(onnx.load(str(path)))
    assert len(checked["quantized_layers"]) == 3 and checked["per_channel_weights"] == 3
    record = stage(tmp_path, "quantize-tensorrt")
    assert record["outputs"][0]["flavour"] == "tensorrt"
    metrics = record["metrics"]
    assert metrics["tensorrt_checks"] == "passed"
    assert [layer["op"] for layer in metrics["layers"]["int8"]] == ["Conv", "Conv", "Gemm"]
    (gru,) = metrics["layers"]["float"]
    assert gru["op"] == "GRU" and "TensorRT" in gru["reason"]
    acc = metrics["accuracy"]
    assert acc["runtime"] == "onnxruntime" and acc["drop_points"] <= 1.0
    assert "GRU" in proc.stdout  # the screen table says what stayed float


def test_openvino_flavour(lenet5: Path, tmp_path: Path) -> None:
    pytest.importorskip("nncf", reason="the openvino flavour needs NNCF")
    proc = edgekit("compress", str(lenet5), "--for", "openvino", "--calib", str(CALIB),
                   "--calib-size", "128", "--eval", "fashion-mnist:test", "--eval-limit", "500",
                   "--max-drop", "1.5", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "model.int8.xml").is_file() and (tmp_path / "model.int8.bin").is_file()
    assert leftovers(tmp_path) == []
    record = stage(tmp_path, "quantize-openvino")
    assert record["outputs"][0]["format"] == "openvino"
    metrics = record["metrics"]
    assert metrics["accuracy"]["runtime"] == "openvino"
    assert metrics["accuracy"]["drop_points"] <= 1.5
    assert len(metrics["layers"]["int8"]) == 5 and metrics["nncf"]["fake_quantize_ops"] >= 5


@pytest.mark.slow
def test_openvino_flavour_keeps_lstm_float(zoo_checkpoint, tmp_path: Path) -> None:
    pytest.importorskip("nncf", reason="the openvino flavour needs NNCF")
    proc = edgekit("compress", str(zoo_checkpoint("cnn_lstm")), "--for", "openvino", "--calib",
                   str(CALIB), "--calib-size", "128", "--eval", "fashion-mnist:test",
                   "--eval-limit", "1000", "--max-drop", "1.0", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    metrics = stage(tmp_path, "quantize-openvino")["metrics"]
    (lstm,) = metrics["layers"]["float"]
    assert lstm["op"] == "LSTM" and "float" in lstm["reason"]
    assert [layer["op"] for layer in metrics["layers"]["int8"]] == ["Conv", "Conv", "Gemm"]
    assert metrics["accuracy"]["drop_points"] <= 1.0


@pytest.mark.parametrize("case", ["eval-without-labels", "budget-without-eval", "calib-too-small",
                                  "calib-nan", "calib-wrong-shape"])
def test_bad_inputs_exit_2_and_write_nothing(case: str, lenet5: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    calib, extra = str(CALIB), ["--eval", "fashion-mnist:test", "--eval-limit", "200"]
    expected = ""
    if case == "eval-without-labels":
        np.savez(tmp_path / "nolabels.npz", x=np.zeros((20, 28, 28), np.uint8))
        extra = ["--eval", str(tmp_path / "nolabels.npz"), "--max-drop", "0.5"]
        expected = "no labels"
    elif case == "budget-without-eval":
        extra = ["--max-drop", "0.5"]
        expected = "needs an eval set"
    elif case == "calib-too-small":
        extra += ["--calib-size", "600"]
        expected = "fewer than the 600 asked for"
    elif case == "calib-nan":
        x = np.zeros((16, 1, 28, 28), np.float32)
        x[3, 0, 1, 1] = np.inf
        np.savez(tmp_path / "nan.npz", x=x)
        calib, expected = str(tmp_path / "nan.npz"), "NaN or Inf"
    elif case == "calib-wrong-shape":
        np.savez(tmp_path / "rgb.npz", x=np.zeros((16, 3, 32, 32), np.float32))
        calib, expected = str(tmp_path / "rgb.npz"), "(3, 32, 32)"
    proc = edgekit("compress", str(lenet5), "--int8", "--calib", calib, *extra, "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    if case == "calib-wrong-shape":
        assert "(1, 28, 28)" in proc.stderr  # both shapes are named
    assert not out.exists() or list(out.iterdir()) == []


def test_int8_from_an_onnx_model(int8_run, tmp_path: Path) -> None:
    """An existing fp32 ONNX model quantizes like an exported one: copied in with its InputSpec,
    quantized with the same budget, recorded in the manifest."""
    import onnx

    from edgekit.io.onnxfile import spec_from_onnx

    source = int8_run[0] / "model.onnx"
    out = tmp_path / "from-onnx"
    proc = edgekit("compress", str(source), "--int8", "--calib", str(CALIB), "--calib-size", "256",
                   "--eval", "fashion-mnist:test", "--eval-limit", "1000", "--max-drop", "1.0",
                   "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    int8 = next(r for r in rows if r["step"] == "int8 onnxruntime")
    assert int8["drop_pts"] <= 1.0 and int8["top1"] > 0.6
    assert stage(out, "source-onnx")["inputs"]["source"]["path"].endswith("model.onnx")
    (entry,) = stage(out, "quantize-int8")["outputs"]
    assert entry["path"] == "model.int8.onnx" and entry["model"] == "model"
    assert spec_from_onnx(out / "model.int8.onnx") == spec_from_onnx(source)
    assert leftovers(out) == []

    # Without its InputSpec the model must be told its input shape.
    bare = onnx.load(str(source))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    refused = edgekit("compress", str(tmp_path / "bare.onnx"), "--int8", "--calib", str(CALIB),
                      "-o", str(tmp_path / "bare-out"))
    assert refused.returncode == 2 and "--input-shape" in refused.stderr
    assert not (tmp_path / "bare-out").exists()
    # ... and how its inputs are normalised: never a silent default.
    unnormalised = edgekit("compress", str(tmp_path / "bare.onnx"), "--int8", "--calib",
                           str(CALIB), "--input-shape", "1,1,28,28", "-o", str(tmp_path / "un"))
    assert unnormalised.returncode == 2 and "--mean" in unnormalised.stderr
    assert not (tmp_path / "un").exists()
    shaped = edgekit("compress", str(tmp_path / "bare.onnx"), "--int8", "--calib", str(CALIB),
                     "--calib-size", "128", "--input-shape", "1,1,28,28", "--mean", "0.286",
                     "--std", "0.353", "-o", str(tmp_path / "shaped"))
    assert shaped.returncode == 0, shaped.stderr
    assert spec_from_onnx(tmp_path / "shaped" / "model.int8.onnx").shape == (1, 1, 28, 28)


def test_onnx_model_refuses_torch_steps(int8_run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = edgekit("compress", str(int8_run[0] / "model.onnx"), "--prune", "0.3", "--int8",
                   "--calib", str(CALIB), "-o", str(out))
    assert proc.returncode == 2
    assert "prune and distill work on the PyTorch model" in proc.stderr and "hint:" in proc.stderr
    assert not out.exists()

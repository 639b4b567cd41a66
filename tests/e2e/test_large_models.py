"""A model past protobuf's 2 GB limit (torchvision's vit_h_14 and regnet_y_128gf) keeps its weights
in one `<model>.data` file beside each ONNX model edgekit writes (export, ONNX Runtime's int8),
is checked and run from its path, leaves nothing else behind, and has its weights' sha256 in the
manifest; OpenVINO and `validate` read it from there. A real 2.5 GB model takes minutes and
gigabytes here (regnet_y_128gf at 64x64: export 166 s, int8 200 s on 2 busy cores; it found that
ONNX Runtime's quant_pre_process cannot run past 2 GB), so the threshold
(edgekit.io.onnxfile.LARGE_MODEL_BYTES) is lowered to make the zoo's LeNet-5 "large": every
branch a large model takes runs for real (onnx's external-data saving, ONNX shape inference by
path, ONNX Runtime's quantizer with use_external_data_format, the checker by path)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from tests.helpers import debris, edgekit, fast_cpu_profile

ROOT = Path(__file__).resolve().parent.parent.parent
CALIB = ROOT / "calibration" / "fashion-mnist-512.npz"


def external_locations(path: Path) -> set[str]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return {next(e.value for e in t.external_data if e.key == "location")
            for t in _get_all_tensors(model) if uses_external_data(t)}


def test_a_model_past_2gb_keeps_its_weights_beside_it(lenet5: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    from edgekit import DataSources, api
    from edgekit.io import onnxfile

    monkeypatch.setattr(onnxfile, "LARGE_MODEL_BYTES", 20_000)  # LeNet-5: ~250 kB of weights
    out = tmp_path / "out"
    api.compress(str(lenet5), out, steps=[("quantize", {"calib_size": 128})],
                 data=DataSources(calib=str(CALIB), eval="fashion-mnist:test", eval_limit=300))
    for name in ("model.onnx", "model.int8.onnx"):
        assert external_locations(out / name) == {f"{name}.data"}, name
        assert (out / f"{name}.data").stat().st_size > 20_000
        assert (out / name).stat().st_size < 20_000  # the graph only
        assert (out / f"{name}.data").stat().st_mode == (out / name).stat().st_mode
    assert debris(out) == []  # no temp file or export folder left
    stages = {s["stage"]: s for s in json.loads((out / "manifest.json").read_text())["stages"]}
    preparation = stages["quantize-int8"]["metrics"]["preparation"]["preprocess"]
    assert preparation.startswith("onnx infer_shapes_path (ONNX shape inference only: a model "
                                  "past 2 GB"), preparation

    # another process (the normal threshold) reads both from their paths
    proc = edgekit("export", str(out), "--target", "openvino", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.fp32.xml").is_file()
    profile = fast_cpu_profile(tmp_path / "fast.yaml", openvino=True)
    proc = edgekit("validate", str(out), "--device", str(profile), "--eval", "fashion-mnist:test",
                   "--limit", "300", "--json")
    assert proc.returncode == 0, proc.stderr
    top1 = {Path(r["artifact"]).name: r["accuracy"]["top1"]
            for r in json.loads(proc.stdout)["records"]}
    assert set(top1) == {"model.onnx", "model.int8.onnx", "model.fp32.xml"}, top1
    assert min(top1.values()) > 0.5
    assert abs(top1["model.onnx"] - top1["model.fp32.xml"]) < 0.01

    # the manifest records each weights file's sha256: a changed one is refused as a changed
    # model file is (exit 2, nothing measured)
    weights = stages["quantize-int8"]["outputs"][0]["weights_file"]
    assert weights["path"] == "model.int8.onnx.data" and weights["bytes"] > 20_000
    data = out / "model.int8.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x01  # one weight's lowest bit: the model still loads and runs
    data.write_bytes(bytes(raw))
    proc = edgekit("validate", str(out), "--eval", "fashion-mnist:test", "--limit", "100")
    assert proc.returncode == 2, proc.stderr
    assert "model.int8.onnx.data, the weights of model.int8.onnx, is missing or changed" \
        in proc.stderr, proc.stderr


def test_a_failed_save_puts_the_earlier_weights_back(tmp_path: Path, monkeypatch) -> None:
    """atomic_onnx: an exception after a large model's weights were written removes them and
    restores the `<model>.data` an earlier model left (its .onnx still points at it)."""
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.io import onnxfile

    monkeypatch.setattr(onnxfile, "LARGE_MODEL_BYTES", 1_000)
    import numpy as np

    def model(value: float) -> onnx.ModelProto:
        w = numpy_helper.from_array(np.full((64, 64), value, np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                                  [w])
        return helper.make_model(graph)

    target = tmp_path / "m.onnx"
    with onnxfile.atomic_onnx(target) as (_, save):
        save(model(1.0))
    before = (tmp_path / "m.onnx.data").read_bytes()
    with pytest.raises(RuntimeError), onnxfile.atomic_onnx(target) as (_, save):
        save(model(2.0))
        raise RuntimeError("a parity check failed after saving")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert (tmp_path / "m.onnx.data").read_bytes() == before
    loaded = onnxfile.load_onnx(target)
    assert float(numpy_helper.to_array(loaded.graph.initializer[0]).max()) == 1.0

    with onnxfile.atomic_onnx(target) as (_, save):  # a small model now: no data file left
        monkeypatch.setattr(onnxfile, "LARGE_MODEL_BYTES", 10**9)
        save(model(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]



def test_calibration_batches_are_cut_to_fit_memory(lenet5: Path, tmp_path: Path, monkeypatch,
                                                   capfd) -> None:
    """Calibration holds every intermediate tensor of a batch at once: torchvision's maxvit_t at
    224x224 has 0.9 GB of them per sample, and the default batch of 32 had the process killed
    for memory (28 GB). The batch is cut to keep them under ort_qdq.CALIB_BATCH_BYTES, said on
    screen and in the manifest; the int8 model is the same kind of model."""
    from edgekit import DataSources, api
    from edgekit.quant import ort_qdq

    out = tmp_path / "out"
    data = DataSources(calib=str(CALIB), eval="fashion-mnist:test", eval_limit=200)
    api.compress(str(lenet5), out, steps=[("quantize", {"calib_size": 64})], data=data)
    whole = json.loads((out / "manifest.json").read_text())["stages"][-1]["metrics"]
    assert whole["calibration"]["batch"] == 32 and "batch_note" not in whole["calibration"]
    assert "calibrating in batches" not in capfd.readouterr().err

    monkeypatch.setattr(ort_qdq, "CALIB_BATCH_BYTES", 200_000)  # LeNet-5: ~30 kB a sample
    cut = tmp_path / "cut"
    api.compress(str(lenet5), cut, steps=[("quantize", {"calib_size": 64})], data=data)
    metrics = json.loads((cut / "manifest.json").read_text())["stages"][-1]["metrics"]
    calibration = metrics["calibration"]
    assert 1 <= calibration["batch"] < 32 and calibration["samples"] == 64
    assert f"calibration batches of {calibration['batch']}, not 32" in calibration["batch_note"]
    assert f"int8: calibrating in batches of {calibration['batch']}, not 32" \
        in capfd.readouterr().err
    # the same model, ranges from the same samples: within a point of the uncut run
    assert abs(metrics["accuracy"]["int8_top1"] - whole["accuracy"]["int8_top1"]) <= 0.01

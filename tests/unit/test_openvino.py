"""OpenVINO target and runner: fp32/fp16/int8 export of a trained lenet5, parity, the runner on the
eval data, the manifest, and the refusals (int8 without calibration, missing/truncated .bin)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO not installed (pip install edgekit[openvino])")

from edgekit.errors import DataError, InputError, ModelLoadError  # noqa: E402
from edgekit.io.artifacts import spec_for  # noqa: E402
from edgekit.io.manifest import Manifest  # noqa: E402
from edgekit.pipeline import export_artifact  # noqa: E402
from edgekit.runtimes.latency import LatencyProtocol  # noqa: E402
from tests.helpers import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CALIB = ROOT / "calibration" / "fashion-mnist-512.npz"
QUICK = LatencyProtocol(warmup_count=2, warmup_seconds=0.0, min_queries=20, min_seconds=0.0,
                        max_seconds=5.0)


@pytest.fixture(scope="module")
def ov_folder(zoo_checkpoint, tmp_path_factory) -> Path:
    """lenet5 (trained on 6,000 images) exported to ONNX, then to OpenVINO fp32, fp16 and int8."""
    out = tmp_path_factory.mktemp("ov")
    export_artifact(zoo_checkpoint("lenet5"), "onnx", out)
    for precision in ("fp32", "fp16", "int8"):
        export_artifact(out, "openvino", None, precision=precision, calib=str(CALIB))
    return out


@pytest.fixture(scope="module")
def eval_set(ov_folder):
    from edgekit.data import load_dataset

    return load_dataset("fashion-mnist:test", spec_for(ov_folder / "model.onnx"), limit=1000)


def test_exports_are_recorded_with_parity_versions_and_profile(ov_folder: Path) -> None:
    manifest = Manifest(ov_folder)
    sizes = {}
    for precision in ("fp32", "fp16", "int8"):
        stage = manifest.stage(f"export-openvino-{precision}")
        assert stage is not None
        entry = stage["outputs"][0]
        assert entry["path"] == f"model.{precision}.xml" and entry["format"] == "openvino"
        assert entry["precision"] == precision and entry["model"] == "lenet5"
        assert entry["input_spec"]["shape"] == [1, 1, 28, 28]
        assert entry["input_profile"] == {"input": "input", "shape": [1, 1, 28, 28],
                                          "dynamic_batch": True}
        assert {"openvino", "onnxruntime", "edgekit"} <= set(stage["versions"])
        parity = stage["metrics"]["parity"]
        assert parity["inputs"] == "eval data" and parity["samples"] == 256
        assert parity["outputs_finite"]
        sizes[precision] = (ov_folder / entry["weights"]).stat().st_size
    fp32 = manifest.stage("export-openvino-fp32")["metrics"]["parity"]
    assert fp32["max_abs_diff"] < 1e-3 and fp32["top1_agreement"] == 1.0
    assert fp32["inference_precision"] == "f32"
    fp16 = manifest.stage("export-openvino-fp16")["metrics"]["parity"]
    assert fp16["max_abs_diff"] <= fp16["tolerance"] and fp16["top1_agreement"] >= 0.99
    int8 = manifest.stage("export-openvino-int8")
    assert int8["metrics"]["parity"]["top1_agreement"] >= 0.9
    quant = int8["outputs"][0]["quantization"]
    assert quant["calibration_samples"] == 512 and quant["fake_quantize_ops"] > 0
    assert quant["calibration"]["count"] == 512  # the calibration set's own manifest
    # fp16 halves the weights, int8 quarters the Conv/MatMul weights.
    assert sizes["fp16"] < 0.55 * sizes["fp32"]
    assert sizes["int8"] < 0.35 * sizes["fp32"]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_runner_top1_matches_onnx(ov_folder: Path, eval_set, precision: str) -> None:
    from edgekit.runtimes.openvino import OpenVinoRunner
    from edgekit.runtimes.ort import OrtRunner

    path = ov_folder / f"model.{precision}.xml"
    spec = spec_for(path)
    assert spec == spec_for(ov_folder / "model.onnx")
    reference = OrtRunner(ov_folder / "model.onnx", spec, threads=1).predict(eval_set.x)
    runner = OpenVinoRunner(path, spec, threads=1, options={"performance_hint": "latency"})
    logits = runner.predict(eval_set.x)
    ref_top1 = float(np.mean(reference.argmax(1) == eval_set.y))
    top1 = float(np.mean(logits.argmax(1) == eval_set.y))
    assert ref_top1 > 0.6  # a trained model, so the comparison means something
    assert abs(top1 - ref_top1) <= {"fp32": 0.0, "fp16": 0.005, "int8": 0.02}[precision]
    info = runner.describe()
    assert info["threads"] == 1 and info["performance_hint"] == "LATENCY"
    if precision == "fp32":  # fp32 means fp32, even on CPUs where OpenVINO defaults to bf16
        assert info["inference_precision"] == "f32"
    stats = runner.measure_latency(eval_set.x[:4], QUICK)
    assert stats["count"] >= 20 and stats["batch"] == 4 and stats["p50_ms"] > 0
    assert "infer request" in stats["timing_scope"]


def test_profile_can_choose_inference_precision(ov_folder: Path) -> None:
    from edgekit.runtimes.openvino import OpenVinoRunner

    path = ov_folder / "model.fp16.xml"
    runner = OpenVinoRunner(path, spec_for(path), options={"inference_precision": "f32"})
    assert runner.describe()["inference_precision"] == "f32"
    with pytest.raises(InputError, match="inference precision"):
        OpenVinoRunner(path, spec_for(path), options={"inference_precision": "int3"})


def test_ir_describes_itself_without_manifest(ov_folder: Path, tmp_path: Path) -> None:
    for name in ("model.int8.xml", "model.int8.bin"):
        shutil.copy(ov_folder / name, tmp_path / name)
    assert spec_for(tmp_path / "model.int8.xml") == spec_for(ov_folder / "model.onnx")


def test_quantize_openvino_keeps_named_layers_in_float(ov_folder: Path, tmp_path: Path) -> None:
    import onnx

    from edgekit.targets.openvino import NNCFSettings, quantize_openvino

    onnx_path = ov_folder / "model.onnx"
    calib = np.load(CALIB)["x"][:64]
    from edgekit.data import load_dataset

    x = load_dataset(str(CALIB), spec_for(onnx_path), limit=64).x
    first_conv = next(n.name for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv")
    full = quantize_openvino(onnx_path, x, tmp_path / "all.xml")
    kept = quantize_openvino(onnx_path, x, tmp_path / "kept.xml",
                             NNCFSettings(ignored_nodes=[first_conv]))
    assert kept["ignored_requested"] == [first_conv] and kept["ignored_ops"]
    assert all(op == first_conv or op.startswith(first_conv + "/") for op in kept["ignored_ops"])
    assert kept["fake_quantize_ops"] == full["fake_quantize_ops"] - 1
    assert full["calibration_samples"] == 64 == len(calib)
    with pytest.raises(InputError, match="no layer named 'not_a_layer'"):
        quantize_openvino(onnx_path, x, tmp_path / "bad.xml",
                          NNCFSettings(ignored_nodes=["not_a_layer"]))
    assert not (tmp_path / "bad.xml").exists()


def test_int8_without_calibration_exits_2_and_writes_nothing(ov_folder: Path, tmp_path: Path,
                                                              capsys) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    shutil.copy(ov_folder / "model.onnx", folder / "model.onnx")
    Manifest(folder).save()  # edgekit's folder (a folder it does not own is refused first)
    code, _, err = cli(capsys, "export", str(folder / "model.onnx"), "--target", "openvino",
                       "--precision", "int8", "-o", str(folder))
    assert code == 2
    assert "int8 needs a calibration set" in err and "--calib" in err
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx"]


def test_calibration_set_of_the_wrong_shape_is_refused(ov_folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((8, 3, 32, 32), np.float32))
    with pytest.raises(DataError, match="shape"):
        export_artifact(ov_folder / "model.onnx", "openvino", tmp_path / "o", precision="int8",
                        calib=str(bad))
    assert not list((tmp_path / "o").glob("*.xml"))


def test_unknown_target_and_precision_list_the_valid_ones(ov_folder: Path, capsys) -> None:
    code, _, err = cli(capsys, "export", str(ov_folder), "--target", "tflite")
    assert code == 2 and "onnx, openvino, tensorrt" in err
    code, _, err = cli(capsys, "export", str(ov_folder), "--target", "openvino",
                       "--precision", "int4")
    assert code == 2 and "fp32, fp16, int8" in err


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_ir_with_missing_or_truncated_bin_exits_2(ov_folder: Path, tmp_path: Path, capsys,
                                                   damage: str) -> None:
    xml, weights = tmp_path / "model.fp32.xml", tmp_path / "model.fp32.bin"
    shutil.copy(ov_folder / xml.name, xml)
    if damage == "truncated":
        weights.write_bytes((ov_folder / weights.name).read_bytes()[:1000])
    code, _, err = cli(capsys, "bench", str(xml), "--batch", "1")
    assert code == 2
    assert ("truncated" if damage == "truncated" else "is not beside it") in err
    from edgekit.runtimes.openvino import check_ir_files

    with pytest.raises(ModelLoadError):
        check_ir_files(xml)


def test_export_cli_prints_parity_and_json(ov_folder: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "cli"
    shutil.copytree(ov_folder, folder)
    code, out, err = cli(capsys, "export", str(folder), "--target", "openvino",
                         "--precision", "fp16", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["stage"] == "export-openvino-fp16"
    assert record["outputs"][0]["sha256"] and record["outputs"][0]["bytes"] > 0
    assert record["metrics"]["parity"]["top1_agreement"] >= 0.99

"""Per-layer profiles (issue 15, part 3) of a tiny trained LeNet-5 on ONNX Runtime and OpenVINO,
fp32 and int8: every conv and linear layer appears joined to its ONNX node and its PyTorch
module, with the precision that actually ran; shares sum to 1; `edgekit profile` prints and
stores it and the report shows it; `slower_in_int8` picks the nodes to keep float."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import edgekit

ROOT = Path(__file__).resolve().parent.parent.parent
CALIB = ROOT / "calibration" / "fashion-mnist-512.npz"
MODULES = {"Conv": {"conv1", "conv2"}, "Gemm": {"fc1", "fc2", "fc3"}}


@pytest.fixture(scope="module")
def folders(zoo_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """ort/: model.onnx, model.int8.onnx (QDQ), model.fp32.xml; ov/: model.onnx, model.int8.xml
    (NNCF)."""
    pytest.importorskip("openvino")
    lenet = zoo_checkpoint("lenet5")
    ort_dir, ov_dir = tmp_path_factory.mktemp("ort"), tmp_path_factory.mktemp("ov")
    for out, flavour in ((ort_dir, "onnxruntime"), (ov_dir, "openvino")):
        proc = edgekit("compress", str(lenet), "--int8", "--for", flavour, "--calib", str(CALIB),
                       "--calib-size", "64", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
    proc = edgekit("export", str(ort_dir), "--target", "openvino", "-o", str(ort_dir))
    assert proc.returncode == 0, proc.stderr
    return ort_dir, ov_dir


def _profile(path: Path, runtime: str) -> dict:
    from edgekit.devices import load_profile
    from edgekit.validate.layer_profile import profile_on_device

    return profile_on_device(path, load_profile("local-cpu"), runtime=runtime, runs=10,
                             warmup=3)["profile"]


def _check(profile: dict, onnx_path: Path, precision: str, ops: set[str]) -> None:
    """Every Conv/Gemm of the ONNX model appears with its module and the precision expected."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    rows = profile["layers"]
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert profile["total_ms"] == pytest.approx(sum(r["ms"] for r in rows))
    assert all(r["ms"] >= 0 for r in rows)
    for node in graph.node:
        if node.op_type not in MODULES:
            continue
        joined = [r for r in rows if r["onnx_node"] == node.name]
        assert joined, f"{node.name} missing from {[r['layer'] for r in rows]}"
        for r in joined:
            assert r["module"] in MODULES[node.op_type], r
            assert r["precision"] == precision, r
        assert any(r["op"] in ops for r in joined), joined
    assert {r["module"] for r in rows if r["module"]} >= MODULES["Conv"] | MODULES["Gemm"]


def test_onnxruntime_fp32_and_qdq_int8(folders):
    ort_dir, _ = folders
    fp32 = _profile(ort_dir / "model.onnx", "onnxruntime")
    _check(fp32, ort_dir / "model.onnx", "fp32", {"Conv", "FusedConv", "Gemm", "FusedGemm"})
    int8 = _profile(ort_dir / "model.int8.onnx", "onnxruntime")
    # The QDQ Conv ran as an int8 kernel: QLinearConv (or ConvInteger), joined back to the Conv.
    _check(int8, ort_dir / "model.int8.onnx", "int8",
           {"QLinearConv", "ConvInteger", "QGemm", "MatMulInteger", "QLinearMatMul"})
    # Pooling has no weight; its module comes from the map recorded at export.
    assert any(r["module"] == "pool" for r in fp32["layers"])
    # Nodes ONNX Runtime adds itself (layout transposes, reorders) stay without a module.
    assert all(r["module"] is None for r in int8["layers"] if r["onnx_node"] is None)
    # The input's QuantizeLinear kernel counts for the conv it feeds.
    (quant,) = [r for r in int8["layers"] if r["op"] == "QuantizeLinear"]
    assert quant["precision"] == "quantize" and quant["for_node"] == "node_conv2d"

    from edgekit.runtimes.profile import slower_in_int8

    slower = slower_in_int8(fp32, int8)
    int8_nodes = {r["onnx_node"] for r in int8["layers"] if r["precision"] == "int8"}
    assert set(slower) <= int8_nodes


def test_openvino_fp32_ir_and_nncf_int8(folders):
    ort_dir, ov_dir = folders
    # An IR is joined through the ONNX model its manifest says it was converted from.
    fp32 = _profile(ort_dir / "model.fp32.xml", "openvino")
    assert Path(fp32["onnx_source"]).name == "model.onnx"
    _check(fp32, ort_dir / "model.onnx", "fp32", {"Convolution", "FullyConnected", "Subgraph"})
    int8 = _profile(ov_dir / "model.int8.xml", "openvino")
    convs = [r for r in int8["layers"] if r["module"] in MODULES["Conv"]]
    assert {r["module"] for r in convs} == MODULES["Conv"]
    assert all(r["precision"] == "int8" and r["exec_type"].upper().endswith("I8") for r in convs)
    assert sum(r["share"] for r in int8["layers"]) == pytest.approx(1.0)


def test_slower_in_int8_picks_the_nodes_whose_int8_form_is_slower():
    from edgekit.errors import InputError
    from edgekit.runtimes.profile import slower_in_int8

    def prof(rows, runtime="onnxruntime", batch=1):
        return {"runtime": runtime, "batch": batch, "layers": [
            {"layer": f"{node}_k", "onnx_node": node, "precision": p, "ms": ms}
            for node, p, ms in rows]}

    fp32 = prof([("stem", "fp32", 0.010), ("dw", "fp32", 0.020), ("pw", "fp32", 0.040),
                 (None, "fp32", 0.5)])
    int8 = prof([("stem", "quantize", 0.002), ("stem", "int8", 0.030), ("dw", "int8", 0.021),
                 ("pw", "int8", 0.015), (None, "int8", 0.9)])
    # stem: 0.032 against 0.010 (quantize kernel included); dw: 0.021 against 0.020.
    assert slower_in_int8(fp32, int8) == ["stem", "dw"]
    assert slower_in_int8(fp32, int8, min_ratio=1.1) == ["stem"]
    assert slower_in_int8(fp32, int8, min_ms=0.005) == ["stem"]
    with pytest.raises(InputError, match="same runtime and batch"):
        slower_in_int8(fp32, prof([], runtime="openvino"))


def test_profile_cli_store_and_report(folders, tmp_path):
    ort_dir, _ = folders
    store = tmp_path / "results.db"
    proc = edgekit("profile", str(ort_dir / "model.int8.onnx"), "--device", "local-cpu",
                   "--runs", "5", "--store", str(store), "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["record_type"] == "layer_profile" and record["precision"] == "int8"
    assert record["runtime"] == "onnxruntime" and record["profile"]["batch"] == 1
    proc = edgekit("profile", str(ort_dir / "model.fp32.xml"), "--runs", "5", "--top", "3",
                   "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    assert "PyTorch module" in proc.stdout and "batch 2" in proc.stdout
    assert "conv" in proc.stdout or "fc" in proc.stdout
    report = tmp_path / "report.html"
    proc = edgekit("report", str(store), "-o", str(report))
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    assert "Per-layer time on local-cpu" in text and "QLinearConv" in text and "conv1" in text
    # Bad input: a folder, a runtime that does not read the file -> exit 2.
    assert edgekit("profile", str(ort_dir), "--runs", "2").returncode == 2
    bad = edgekit("profile", str(ort_dir / "model.onnx"), "--runtime", "openvino")
    assert bad.returncode == 2 and "does not run" in bad.stderr


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_layer_profiler(folders, tmp_path):
    """Where TensorRT and a GPU exist: the int8 engine built from the QDQ model is profiled
    through IProfiler, layer by layer, and joined to the PyTorch modules like the other
    runtimes (every Conv/Gemm found, int8 where the QDQ model quantized it)."""
    pytest.importorskip("tensorrt", reason="TensorRT cannot be installed on this machine "
                        "(no NVIDIA GPU); profile_tensorrt is written against IProfiler's "
                        "documented API")
    ort_dir, _ = folders
    proc = edgekit("export", str(ort_dir), "--target", "tensorrt", "--precision", "int8",
                   "-o", str(ort_dir))
    assert proc.returncode == 0, proc.stderr
    (engine,) = ort_dir.glob("*.plan")
    profile = _profile(engine, "tensorrt")
    assert profile["runtime"] == "tensorrt" and profile["layers"]
    assert sum(r["share"] for r in profile["layers"]) == pytest.approx(1.0)
    assert all(r["ms"] > 0 for r in profile["layers"])
    assert {r["precision"] for r in profile["layers"]} & {"int8"}
    assert any(r.get("module") in MODULES["Conv"] for r in profile["layers"])


def test_quantize_latency_fallback_keeps_slower_int8_layers_float(folders, tmp_path):
    """The quantize pass with latency_fallback: the nodes it keeps float are exactly those its
    two profiles show slower in int8, each with both times, and the int8 model has them float."""
    import onnx

    from edgekit.data.given import DataSources
    from edgekit.passes import PassContext
    from edgekit.pipeline import compress_onnx
    from edgekit.quant.report import analyze_qdq

    ort_dir, _ = folders
    out = tmp_path / "out"
    ctx = PassContext(out_dir=out, data=DataSources(calib=str(CALIB)))
    compress_onnx(ort_dir / "model.onnx", [("quantize", {"calib_size": 64,
                                                         "latency_fallback": True,
                                                         "latency_min_ratio": 1.0,
                                                         "latency_min_ms": 0.0})], ctx)
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    metrics = next(s for s in stages if s["stage"] == "quantize-int8")["metrics"]
    found = metrics["latency_fallback"]
    assert found["runtime"] == "onnxruntime" and found["device"] == "local-cpu"
    assert found["fp32_total_ms"] > 0 and found["int8_total_ms"] > 0
    for node in found["nodes"]:
        t = found["times"][node]
        assert t["int8_ms"] > t["fp32_ms"]
    float_layers = {f["name"]: f["reason"] for f in metrics["layers"]["float"]}
    assert {n for n, why in float_layers.items() if "by latency" in why} <= set(found["nodes"])
    # Kept float = float weights (a DequantizeLinear may still feed its input: the layer
    # before it is int8 and writes a quantized activation).
    report = analyze_qdq(onnx.load(str(out / "model.int8.onnx")))
    int8_weights = {q["name"] for q in report["quantized_layers"]
                    if q.get("weight_quantized", True)}
    assert not int8_weights & set(found["nodes"])
    assert set(found["nodes"]) <= set(float_layers) | {
        q["name"] for q in report["quantized_layers"] if q.get("weight_quantized") is False}
    print("latency fallback kept float:", found["nodes"], found["times"])

"""TensorRT: what runs without TensorRT (engine metadata and its check against the machine, the
int8 QDQ input selection and its properties, the optimization profile, the errors when TensorRT
or a GPU is missing), and, marked `tensorrt`, a real build and run where TensorRT is installed."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.errors import InputError, MissingDependencyError
from edgekit.io.manifest import Manifest
from edgekit.runtimes.tensorrt import (
    EngineMismatchError,
    check_engine_metadata,
    engine_metadata,
    machine_info,
    read_engine_metadata,
    require_gpu,
    spec_from_engine_metadata,
    write_engine_metadata,
)
from edgekit.spec import InputSpec
from edgekit.targets.tensorrt import check_qdq_for_tensorrt, input_profile, select_build_input
from tests import helpers
from tests.helpers import cli

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
SPEC = InputSpec(shape=(1, 1, 8, 8), mean=(0.0,), std=(1.0,),
                 class_names=tuple(f"c{i}" for i in range(4)))
H100 = {"tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0"}
PROFILE = {"input": "input", "min": [1, 1, 8, 8], "opt": [1, 1, 8, 8], "max": [64, 1, 8, 8]}


def tiny_onnx(path: Path) -> Path:
    return helpers.tiny_onnx(path, SPEC)


def quantize(src: Path, dst: Path, *, symmetric: bool, per_channel: bool = True) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.items = iter([{"input": rng.standard_normal((1, 1, 8, 8)).astype(np.float32)}
                               for _ in range(8)])

        def get_next(self):
            return next(self.items, None)

    options = {"QuantizeBias": False}
    if symmetric:
        options.update(ActivationSymmetric=True, WeightSymmetric=True)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=per_channel, extra_options=options)
    return dst


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    tiny_onnx(out / "model.onnx")
    Manifest(out).add_stage("export-onnx-fp32", outputs=[
        {"path": "model.onnx", "format": "onnx", "precision": "fp32"}])
    return out


# ---------------------------------------------------------------- engine metadata
def test_metadata_round_trip_and_match(tmp_path: Path) -> None:
    engine = tmp_path / "model.fp16.plan"
    engine.write_bytes(b"not really an engine")
    meta = engine_metadata(H100, precision="fp16", input_profile=PROFILE, spec=SPEC,
                           dla_core=None, build={"workspace_mb": 1024})
    path = write_engine_metadata(engine, meta)
    assert path.name == "model.fp16.plan.json"
    loaded = read_engine_metadata(engine)
    assert {k: loaded[k] for k in H100} == H100
    assert loaded["precision"] == "fp16" and loaded["input_profile"] == PROFILE
    check_engine_metadata(loaded, {**H100, "gpu_index": 0}, engine)  # same machine: fine
    assert spec_from_engine_metadata(engine) == SPEC
    from edgekit.io.artifacts import spec_for

    assert spec_for(engine) == SPEC  # found beside the engine, no manifest needed


@pytest.mark.parametrize("field,value", [
    ("gpu_name", "NVIDIA A100-SXM4-40GB"),
    ("compute_capability", "8.0"),
    ("tensorrt_version", "10.3.0.26"),
])
def test_engine_from_another_gpu_or_version_is_refused(tmp_path: Path, field: str,
                                                       value: str) -> None:
    engine = tmp_path / "model.int8.plan"
    engine.write_bytes(b"x")
    write_engine_metadata(engine, engine_metadata(H100, precision="int8", input_profile=PROFILE,
                                                  spec=SPEC))
    other = {**H100, field: value}
    with pytest.raises(EngineMismatchError) as err:
        check_engine_metadata(read_engine_metadata(engine), other, engine)
    text = str(err.value)
    assert err.value.exit_code == 2
    assert H100[field] in text and value in text
    assert "engines are not portable: rebuild on this device with edgekit export" in text
    assert "--target tensorrt --precision int8" in text


def test_engine_without_metadata_is_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"x")
    with pytest.raises(EngineMismatchError, match="no metadata file"):
        read_engine_metadata(engine)
    (tmp_path / "model.plan.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(EngineMismatchError, match="not an edgekit engine metadata"):
        read_engine_metadata(engine)


def test_machine_info_and_missing_gpu_with_fake_cuda() -> None:
    class Err:
        cudaSuccess = 0

    class Props:
        name = b"NVIDIA H100 80GB HBM3\x00"
        major, minor = 9, 0

    class FakeCudart:
        cudaError_t = Err
        devices = 1

        def cudaGetDeviceCount(self):
            return (0, self.devices) if self.devices >= 0 else (100, 0)

        def cudaGetDeviceProperties(self, device):
            return (0, Props())

        def cudaGetErrorName(self, err):
            return (0, b"cudaErrorNoDevice")

    class FakeTrt:
        __version__ = "10.13.0.35"

    cudart = FakeCudart()
    assert {k: v for k, v in machine_info(FakeTrt(), cudart).items() if k in H100} == H100
    cudart.devices = 0
    with pytest.raises(MissingDependencyError, match="needs an NVIDIA GPU.*0 CUDA device"):
        require_gpu(cudart)
    cudart.devices = -1  # the driver call itself fails
    with pytest.raises(MissingDependencyError, match="cudaErrorNoDevice"):
        require_gpu(cudart)


# ---------------------------------------------------------------- int8 input: the QDQ model
def test_tensorrt_flavour_qdq_properties(tmp_path: Path) -> None:
    src = tiny_onnx(tmp_path / "model.onnx")
    report = check_qdq_for_tensorrt(onnx.load(str(quantize(src, tmp_path / "q.onnx",
                                                          symmetric=True))))
    assert report["quantized_layers"] == ["conv", "fc"] and report["float_layers"] == []
    assert report["per_channel_weights"] == 2
    assert report["quantize_nodes"] >= 2 and report["dequantize_nodes"] >= 4


def test_asymmetric_or_unsigned_qdq_is_refused(tmp_path: Path) -> None:
    src = tiny_onnx(tmp_path / "model.onnx")
    asym = onnx.load(str(quantize(src, tmp_path / "asym.onnx", symmetric=False)))
    with pytest.raises(InputError, match="signed int8|zero point") as err:
        check_qdq_for_tensorrt(asym)
    assert "--for tensorrt" in str(err.value)
    with pytest.raises(InputError, match="not a QDQ model"):
        check_qdq_for_tensorrt(onnx.load(str(src)))


def test_per_channel_on_the_wrong_axis_is_refused(tmp_path: Path) -> None:
    src = tiny_onnx(tmp_path / "model.onnx")
    model = onnx.load(str(quantize(src, tmp_path / "q.onnx", symmetric=True)))
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0].startswith("w"):
            for attr in node.attribute:
                if attr.name == "axis":
                    attr.i = 1
    with pytest.raises(InputError, match="axis 1.*output-channel axis 0"):
        check_qdq_for_tensorrt(model)


def test_int8_selects_the_tensorrt_flavour_from_the_manifest(folder: Path) -> None:
    quantize(folder / "model.onnx", folder / "model.int8.onnx", symmetric=False)
    Manifest(folder).add_stage("quantize-int8", outputs=[
        {"path": "model.int8.onnx", "format": "onnx", "precision": "int8"}])
    with pytest.raises(InputError, match="holds none") as err:
        select_build_input(folder / "model.onnx", "int8")
    assert "edgekit compress MODEL.pt --int8 --for tensorrt" in str(err.value)
    quantize(folder / "model.onnx", folder / "model.int8.trt.onnx", symmetric=True)
    Manifest(folder).add_stage("quantize-tensorrt", outputs=[
        {"path": "model.int8.trt.onnx", "format": "onnx", "precision": "int8",
         "flavour": "tensorrt"}])
    chosen, report = select_build_input(folder / "model.onnx", "int8")
    assert chosen == folder / "model.int8.trt.onnx" and report["quantized_layers"]
    # fp16 builds from the fp32 model, and refuses a QDQ model
    assert select_build_input(folder / "model.onnx", "fp16") == (folder / "model.onnx", None)
    with pytest.raises(InputError, match="quantized \\(QDQ\\) model"):
        select_build_input(chosen, "fp16")
    # the QDQ model given directly is taken as it is
    assert select_build_input(chosen, "int8")[0] == chosen


def test_optimization_profile_from_the_spec() -> None:
    assert input_profile(SPEC) == PROFILE
    assert input_profile(SPEC, opt_batch=8, max_batch=32)["opt"] == [8, 1, 8, 8]
    fixed = SPEC.model_copy(update={"dynamic_batch": False, "shape": (4, 1, 8, 8)})
    assert input_profile(fixed) == {"input": "input", "min": [4, 1, 8, 8],
                                    "opt": [4, 1, 8, 8], "max": [4, 1, 8, 8]}
    with pytest.raises(InputError, match="min <= opt <= max"):
        input_profile(SPEC, opt_batch=128, max_batch=64)


# ---------------------------------------------------------------- TensorRT missing
@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_export_without_tensorrt_says_what_to_install(folder: Path, capsys) -> None:
    code, _, err = cli(capsys, "export", str(folder), "--target", "tensorrt", "--precision", "fp16")
    assert code == 2
    assert "TensorRT is not installed" in err and "pip install edgekit[tensorrt]" in err
    assert not list(folder.glob("*.plan*"))


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_bench_of_an_engine_without_tensorrt_says_what_to_install(folder: Path, capsys) -> None:
    engine = folder / "model.fp16.plan"
    engine.write_bytes(b"x")
    write_engine_metadata(engine, engine_metadata(H100, precision="fp16", input_profile=PROFILE,
                                                  spec=SPEC))
    code, _, err = cli(capsys, "bench", str(engine), "--batch", "1")
    assert code == 2 and "pip install edgekit[tensorrt]" in err


def test_int8_input_errors_come_before_the_dependency_check(folder: Path, capsys) -> None:
    code, _, err = cli(capsys, "export", str(folder), "--target", "tensorrt", "--precision", "int8")
    assert code == 2 and "TensorRT-flavour QDQ model" in err


# ---------------------------------------------------------------- with TensorRT (GPU machines)
@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT not installed (pip install "
                    "edgekit[tensorrt]; NVIDIA GPU needed)")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_and_run_engine(folder: Path, precision: str) -> None:
    from edgekit.pipeline import export_artifact
    from edgekit.runtimes.latency import LatencyProtocol
    from edgekit.runtimes.tensorrt import TensorRtRunner
    from edgekit.targets.onnx import ort_logits

    if precision == "int8":
        quantize(folder / "model.onnx", folder / "model.int8.trt.onnx", symmetric=True)
        Manifest(folder).add_stage("quantize-tensorrt", outputs=[
            {"path": "model.int8.trt.onnx", "format": "onnx", "precision": "int8",
             "flavour": "tensorrt"}])
    x = np.random.default_rng(0).standard_normal((100, 1, 8, 8)).astype(np.float32)
    artifact, record = export_artifact(folder, "tensorrt", None, precision=precision,
                                       parity_data=x, workspace_mb=256)
    meta = read_engine_metadata(artifact.path)
    assert meta["precision"] == precision and meta["input_profile"] == PROFILE
    assert (folder / "tensorrt.timing-cache").is_file()
    assert record["metrics"]["parity"]["top1_agreement"] >= 0.9
    runner = TensorRtRunner(artifact.path, SPEC)
    logits = runner.predict(x)
    assert np.abs(logits - ort_logits(folder / "model.onnx", x)).max() < 0.5
    stats = runner.measure_latency(x[:64], LatencyProtocol(min_queries=20, min_seconds=0.0))
    assert stats["device_latency"]["count"] == stats["count"]
    assert stats["p50_ms"] >= stats["device_latency"]["p50_ms"]
    # an engine copied to a machine that differs is refused
    other = folder / "copy"
    other.mkdir()
    shutil.copy(artifact.path, other / artifact.path.name)
    meta["gpu_name"] = "Some Other GPU"
    write_engine_metadata(other / artifact.path.name, meta)
    with pytest.raises(EngineMismatchError):
        TensorRtRunner(other / artifact.path.name, SPEC)


# ---------------------------------------------------------------- cuda-python on a GPU (no TensorRT)
def _cudart_or_skip():
    try:
        from edgekit.runtimes.tensorrt import import_cudart

        cudart = import_cudart()
    except MissingDependencyError:
        pytest.skip("cuda-python not installed (pip install edgekit[tensorrt])")
    try:
        require_gpu(cudart)
    except MissingDependencyError:
        pytest.skip("no NVIDIA GPU visible")
    return cudart


@pytest.mark.gpu
def test_machine_info_and_buffers_on_a_real_gpu() -> None:
    """What the TensorRT runner does with cuda-python, minus TensorRT: the machine description,
    pinned/device buffers, async copies on a stream, CUDA events."""
    from edgekit.runtimes.tensorrt import _Buffer, cuda_call

    cudart = _cudart_or_skip()

    class FakeTrt:
        __version__ = "10.13.0.35"

    info = machine_info(FakeTrt(), cudart)
    assert info["gpu_name"] and "\x00" not in info["gpu_name"]
    major, minor = (int(v) for v in info["compute_capability"].split("."))
    assert major >= 5 and info["compute_capability"] == f"{major}.{minor}"
    a, b = _Buffer(cudart, 4096 * 4, np.float32), _Buffer(cudart, 4096 * 4, np.float32)
    stream = cuda_call(cudart, cudart.cudaStreamCreate())
    start, end = (cuda_call(cudart, cudart.cudaEventCreate()) for _ in range(2))
    try:
        a.host[:] = np.arange(4096, dtype=np.float32)
        kind = cudart.cudaMemcpyKind
        cuda_call(cudart, cudart.cudaMemcpyAsync(a.device_ptr, a.host_ptr, a.nbytes,
                                                 kind.cudaMemcpyHostToDevice, stream))
        cuda_call(cudart, cudart.cudaEventRecord(start, stream))
        cuda_call(cudart, cudart.cudaMemcpyAsync(b.device_ptr, a.device_ptr, a.nbytes,
                                                 kind.cudaMemcpyDeviceToDevice, stream))
        cuda_call(cudart, cudart.cudaEventRecord(end, stream))
        cuda_call(cudart, cudart.cudaMemcpyAsync(b.host_ptr, b.device_ptr, b.nbytes,
                                                 kind.cudaMemcpyDeviceToHost, stream))
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream))
        np.testing.assert_array_equal(b.host, np.arange(4096, dtype=np.float32))
        # a 16 KiB device copy between two recorded events takes measurable time
        assert 0.0 < cuda_call(cudart, cudart.cudaEventElapsedTime(start, end)) < 100.0
    finally:
        a.close()
        b.close()
        cudart.cudaStreamDestroy(stream)

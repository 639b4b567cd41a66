"""TensorRT candidates in `edgekit optimize`: which are proposed when a device profile lists
TensorRT, the folder a remote device builds each engine from (the fp32 ONNX model, and for int8
the TensorRT-flavour QDQ model that explicit quantization accepts), the remote job that builds
and times it there, and the clear reason when TensorRT or a GPU is missing. Building an engine
needs TensorRT and an NVIDIA GPU: that test skips here with the reason."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.data.given import DataSources
from edgekit.devices import DeviceProfile
from edgekit.executors import ValidationJob
from edgekit.optimize.space import SearchSpace

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
ROOT = Path(__file__).resolve().parents[2]
CALIB = str(ROOT / "calibration" / "fashion-mnist-512.npz")


def _profile(**extra) -> DeviceProfile:
    return DeviceProfile.model_validate({
        "schema_version": 1, "name": "orin", "kind": "jetson", "batch_sizes": [1],
        "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]},
                     "tensorrt": {"precisions": ["fp32", "fp16", "int8"]}}, **extra})


def test_a_profile_with_tensorrt_gets_fp16_and_int8_engine_candidates():
    from edgekit.optimize.search import usable_targets

    remote = _profile(host="nvidia@orin.local")
    space = SearchSpace(prune=[0, 0.25], dwsep=["off"], int8_fallback=["none", "first-conv"])
    targets = space.targets(remote)
    assert targets == ["onnxruntime:fp32", "onnxruntime:int8", "tensorrt:fp32",
                       "tensorrt:fp16", "tensorrt:int8"]
    # 2 architectures × (3 float targets + 2 int8 targets × 2 fallback sets)
    assert space.size(targets) == 2 * (3 + 2 * 2)
    # a remote device builds the engines itself: every target is kept, checked there
    assert usable_targets(remote, targets) == (targets, [])
    assert SearchSpace(runtimes=["tensorrt"], precisions=["fp16", "int8"]).targets(remote) == \
        ["tensorrt:fp16", "tensorrt:int8"]


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_a_local_profile_without_tensorrt_skips_its_candidates_and_says_why():
    from edgekit.optimize.search import usable_targets

    local = _profile()
    ok, missing = usable_targets(local, SearchSpace().targets(local))
    assert ok == ["onnxruntime:fp32", "onnxruntime:int8"]
    assert any(m.startswith("tensorrt: tensorrt is not installed") for m in missing)


@pytest.fixture(scope="module")
def builder(tmp_path_factory, zoo_checkpoint):
    from edgekit.data.given import DataSources
    from edgekit.io.files import sha256_file
    from edgekit.io.models import load_model
    from edgekit.optimize.build import Builder

    checkpoint = zoo_checkpoint("lenet5")
    bundle = load_model(checkpoint)
    x = np.random.default_rng(0).standard_normal((32, *bundle.spec.shape[1:]), dtype=np.float32)
    return Builder(bundle, sha256_file(checkpoint), tmp_path_factory.mktemp("trt"),
                   SearchSpace(calib_size=32), data=DataSources(calib=CALIB), parity_x=x)


def test_the_device_builds_each_engine_from_a_self_contained_folder(builder):
    """What the remote device gets for a TensorRT candidate: the fp32 model (fp16, fp32) and the
    TensorRT-flavour QDQ model (int8) in one folder whose manifest the TensorRT target reads
    (select_build_input), the QDQ model passing TensorRT's explicit-quantization checks."""
    from edgekit.io.manifest import Manifest
    from edgekit.io.onnxfile import load_onnx
    from edgekit.optimize.build import Arch
    from edgekit.optimize.cache import artifact_sha256
    from edgekit.targets.tensorrt import check_qdq_for_tensorrt, select_build_input

    original = Arch(0.0, "off")
    fp16 = builder.artifact(original, "original", "tensorrt:fp16", "none", None,
                            build_on_device=True)
    assert fp16["build_on_device"] == "fp16" and fp16["path"].name == "model.onnx"
    onnx_fp32 = builder.fp32_onnx(original, "original", None)
    assert artifact_sha256(fp16["path"]) == artifact_sha256(onnx_fp32)
    assert select_build_input(fp16["path"], "fp16") == (fp16["path"], None)

    int8 = builder.artifact(original, "original", "tensorrt:int8", "first-conv", None,
                            build_on_device=True)
    folder = int8["path"].parent
    assert int8["build_on_device"] == "int8" and folder != fp16["path"].parent
    assert int8["float_layers"] and len(int8["float_layers"]) == 1  # the first conv kept float
    entries = Manifest(folder).artifacts()
    assert [(e["path"], e["precision"]) for e in entries] == [("model.onnx", "fp32"),
                                                              ("model.int8.onnx", "int8")]
    assert entries[0]["role"] == "reference" and entries[1]["flavour"] == "tensorrt"
    build_input, qdq = select_build_input(int8["path"], "int8")
    assert build_input == folder / "model.int8.onnx"
    assert qdq == check_qdq_for_tensorrt(load_onnx(build_input, load_external=False))
    assert int8["float_layers"][0] in qdq["float_layers"]
    # made once: asking again finds the same folder and files
    again = builder.artifact(original, "original", "tensorrt:int8", "first-conv", None,
                             build_on_device=True)
    assert again["path"] == int8["path"] and again["sha256"] == int8["sha256"]


def _report(tensorrt: bool):
    from edgekit.remote.device import DeviceReport

    runtimes = {"onnxruntime": {"importable": True, "version": "1.20"},
                "tensorrt": {"importable": tensorrt, "version": "10.3" if tensorrt else None}}
    missing = [] if tensorrt else [{"what": "runtime tensorrt", "fix": "apt-get install "
                                    "python3-libnvinfer", "blocking": False}]
    return DeviceReport(host="nvidia@orin.local", workdir="/tmp/edgekit", python={},
                        edgekit={"version": "x"}, runtimes=runtimes, packages={},
                        environment={}, missing=missing)


def test_the_remote_job_builds_one_engine_at_the_candidates_precision(builder, tmp_path):
    from edgekit.optimize.build import Arch
    from edgekit.optimize.measure import build_profile, engine_missing_reason
    from edgekit.remote.job import RemoteValidationResult
    from edgekit.remote.payload import build_payload

    entry = builder.artifact(Arch(0.0, "off"), "original", "tensorrt:int8", "none", None,
                             build_on_device=True)
    device = build_profile(_profile(host="nvidia@orin.local"), "tensorrt", "int8")
    assert {n: r.precisions for n, r in device.runtimes.items()} == {
        "tensorrt": ["int8"], "onnxruntime": ["fp32"]}
    payload = build_payload(ValidationJob(target=entry["path"].parent, device=device,
                                          batches=[1],
                                          data=DataSources(eval="fashion-mnist:test", eval_limit=64)),
                            _report(True), workdir=tmp_path, job_timeout=600)
    assert {"out/model.onnx", "out/model.int8.onnx", "out/manifest.json"} <= set(payload.files)
    builds = [t["argv"] for t in payload.tasks if t.get("kind") == "step"]
    assert builds == [["{python}", "-m", "edgekit", "export", "out", "--target", "tensorrt",
                       "--precision", "int8", "--parity-data", "eval-0.npz"]]
    from edgekit import kinds

    timed = json.loads(payload.tasks[-1]["argv"][-1])  # then the engine is validated there
    assert payload.tasks[-1].get("globs_engines")
    assert timed["globs"] == [f"out/*{s}" for s in kinds.by_format("tensorrt").suffixes]
    # a device without TensorRT builds nothing, and the candidate's error says why
    without = build_payload(ValidationJob(target=entry["path"].parent, device=device,
                                          batches=[1],
                                          data=DataSources(eval="fashion-mnist:test", eval_limit=64)),
                            _report(False), workdir=tmp_path, job_timeout=600)
    assert not [t for t in without.tasks if t.get("kind") == "step"]
    result = RemoteValidationResult(device="orin", budget=None, run_id="r",
                                    device_report=_report(False).to_json())
    assert engine_missing_reason(result, "tensorrt", "int8") == \
        "TensorRT is not usable on the device (runtime tensorrt)"
    result.skipped.append({"artifact": "(tensorrt engines)", "reason": "building on the device "
                           "failed: no CUDA device visible"})
    assert engine_missing_reason(result, "tensorrt", "int8") == \
        "building on the device failed: no CUDA device visible"


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT not installed (pip install "
                    "edgekit[tensorrt]; NVIDIA GPU needed)")
def test_local_tensorrt_candidates_are_built_and_timed(builder, tmp_path):
    """On a machine with TensorRT and a GPU: the fp16 and int8 engines of a candidate are built
    by the TensorRT target and timed with the latency protocol."""
    from edgekit.optimize.build import Arch
    from edgekit.validate.bench import measure

    device = _profile()
    for precision in ("fp16", "int8"):
        entry = builder.artifact(Arch(0.0, "off"), "original", f"tensorrt:{precision}", "none",
                                 None)
        assert entry["path"].suffix == ".plan" and entry["precision"] == precision
        record = measure(entry, builder.original.spec, device, eval_set=None, batches=[1],
                         ref_logits=None, runtime="tensorrt")[0]
        assert record["runtime"] == "tensorrt" and record["latency"]["p50_ms"] > 0

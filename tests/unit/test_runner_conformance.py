"""Every runner usable here behaves the same: one tiny model (an untrained lenet5, seed 0) as an
edgekit checkpoint (torch), ONNX (onnxruntime) and OpenVINO IR (openvino) gets the same inputs,
gives the same logits within tolerance, and returns a latency record of the same shape from the
same protocol. TensorRT needs a GPU and an engine built there; it is skipped where it is not
installed (tests/unit/test_tensorrt.py covers its engine checks)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.runtimes.base import get_runner
from edgekit.runtimes.latency import LatencyProtocol

RUNTIMES = ("torch", "onnxruntime", "openvino", "tensorrt")
PROTOCOL = LatencyProtocol(warmup_count=2, warmup_seconds=0.0, min_queries=20, min_seconds=0.0,
                           max_seconds=10.0)
# Runtime-specific additions to the record (GPU runners add CUDA-event timing).
EXTRAS = {"device_latency"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict:
    """{"bundle", "artifacts": {runtime: path}, "x", "reference"} for the tiny model."""
    torch = pytest.importorskip("torch")
    from edgekit.io.models import save_checkpoint
    from edgekit.pipeline import export_artifact
    from edgekit.zoo import build

    folder = tmp_path_factory.mktemp("conformance")
    torch.manual_seed(0)
    bundle = build("lenet5")
    bundle.model.eval()
    checkpoint = save_checkpoint(bundle, tmp_path_factory.mktemp("checkpoint") / "model.pt")
    onnx_art, _ = export_artifact(bundle, "onnx", folder)
    artifacts = {"torch": checkpoint, "onnxruntime": onnx_art.path}
    if get_runner("openvino").available()[0]:
        ov_art, _ = export_artifact(folder, "openvino", folder, precision="fp32")
        artifacts["openvino"] = ov_art.path
    x = np.random.default_rng(0).standard_normal((7, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        reference = bundle.model(torch.from_numpy(x)).numpy()
    return {"bundle": bundle, "folder": folder, "artifacts": artifacts, "x": x,
            "reference": reference}


def runner(runtime: str, model: dict):
    """The runtime's Runner on its artifact of the model (skip TensorRT where it cannot run)."""
    cls = get_runner(runtime)
    ok, reason = cls.available()
    if runtime == "tensorrt":
        if not ok:
            pytest.skip(f"TensorRT not installed here: {reason}")
        from edgekit.pipeline import export_artifact

        art, _ = export_artifact(model["folder"], "tensorrt", model["folder"], precision="fp16")
        model["artifacts"]["tensorrt"] = art.path
    assert ok, f"{runtime} is part of the dev install but not usable here: {reason}"
    options = {"device": "cpu"} if runtime == "torch" else {}
    return cls(model["artifacts"][runtime], model["bundle"].spec, threads=1, options=options)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_same_inputs_give_the_same_outputs(runtime, model):
    r = runner(runtime, model)
    x, reference = model["x"], model["reference"]
    tolerance = 2e-2 if runtime == "tensorrt" else 1e-4  # the engine is fp16
    logits = r.infer(x)
    assert logits.shape == reference.shape == (7, 10) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, reference, atol=tolerance, rtol=tolerance)
    assert (logits.argmax(1) == reference.argmax(1)).all()
    # Batch by batch (the last one smaller) gives the same logits as one call.
    np.testing.assert_allclose(r.predict(x, batch_size=3), logits, atol=1e-5, rtol=1e-5)
    # A wrong input shape is refused the same way by every runner.
    from edgekit.errors import InputError

    with pytest.raises(InputError, match="does not match"):
        r.infer(np.zeros((1, 1, 32, 32), np.float32))


@pytest.fixture(scope="module")
def reference_record(model) -> dict:
    return runner("onnxruntime", model).measure_latency(model["x"][:2], PROTOCOL)


def shape_of(record: dict) -> dict:
    """The record's keys, and the keys of its nested dicts, without runtime-specific extras."""
    return {k: sorted(v) if isinstance(v, dict) else type(v).__name__
            for k, v in record.items() if k not in EXTRAS}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_same_latency_record_shape(runtime, model, reference_record):
    record = runner(runtime, model).measure_latency(model["x"][:2], PROTOCOL)
    assert shape_of(record) == shape_of(reference_record)
    assert record["batch"] == 2 and record["count"] == len(record["samples_ms"]) >= 20
    assert record["valid"] is True and record["protocol"] == PROTOCOL.model_dump()
    assert 0 < record["min_ms"] <= record["p50_ms"] <= record["p90_ms"] <= record["p99_ms"] \
        <= record["max_ms"]
    assert record["min_ms"] == pytest.approx(min(record["samples_ms"]), abs=1e-4)


def test_every_registered_runtime_is_covered():
    from edgekit.runtimes.base import RUNNERS, runner_names

    # edgekit's own runners (a test may register a throwaway one in this process)
    shipped = {n for n in runner_names() if RUNNERS[n].__module__.startswith("edgekit.runtimes.")}
    assert shipped == set(RUNTIMES), "add the new runtime to RUNTIMES here"



def test_a_fixed_batch_model_predicts_every_sample_by_padding_the_last_batch(tmp_path):
    """A model exported with a fixed batch (as TensorRT engines often are) gets whole batches:
    Runner.predict pads the last one with zeros and keeps only the real rows, so 10 samples
    through a batch-4 model give the same logits as each sample alone."""
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.io.onnxfile import save_onnx, set_spec
    from edgekit.spec import InputSpec

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "W"], ["logits"])], "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 3])],
        [numpy_helper.from_array(weight, "W")])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    spec = InputSpec(shape=(4, 1, 4, 4), dynamic_batch=False, mean=(0.0,), std=(1.0,))
    set_spec(onnx_model, spec)
    path = tmp_path / "fixed.onnx"
    save_onnx(onnx_model, path)
    runner = get_runner("onnxruntime")(path, spec, threads=1)
    x = rng.standard_normal((10, 1, 4, 4)).astype(np.float32)
    seen = []
    logits = runner.predict(x, batch_size=64, on_batch=seen.append)
    assert seen == [4, 4, 2]  # batches of the model's own size; the last one padded
    assert logits.shape == (10, 3)
    np.testing.assert_allclose(logits, x.reshape(10, 16) @ weight, rtol=1e-5, atol=1e-5)

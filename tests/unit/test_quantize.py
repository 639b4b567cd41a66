"""int8 quantization building blocks on a tiny hand-built ONNX model (no torch, no training):
BatchNorm folding, calibration methods, MSE ranges, the two QDQ flavours and what the report reads
from them, the TensorRT checks, calibration-set errors, and the budget loop on a fake backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import ConfigError, DataError, GateError, InputError
from edgekit.spec import InputSpec

SPEC = InputSpec(shape=(1, 1, 8, 8), mean=(0.5,), std=(0.25,),
                 class_names=tuple(f"c{i}" for i in range(10)))


def tiny_model(path: Path, *, batchnorm: bool = True) -> Path:
    """input (N,1,8,8) → Conv 1→4 3×3 → [BatchNorm] → Relu → MaxPool 2 → Flatten → Gemm 64→10."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.io.onnxfile import set_spec

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32), "conv.w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "conv.b"),
             numpy_helper.from_array(rng.normal(0, 0.2, (10, 64)).astype(np.float32), "fc.w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "fc.b")]
    nodes = [helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["conv"], name="conv",
                              pads=[1, 1, 1, 1])]
    relu_in = "conv"
    if batchnorm:
        inits += [numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "bn.scale"),
                  numpy_helper.from_array(rng.normal(0, 0.3, 4).astype(np.float32), "bn.bias"),
                  numpy_helper.from_array(rng.normal(0, 0.3, 4).astype(np.float32), "bn.mean"),
                  numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "bn.var")]
        nodes.append(helper.make_node("BatchNormalization",
                                      ["conv", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"],
                                      name="bn", epsilon=1e-5))
        relu_in = "bn"
    nodes += [helper.make_node("Relu", [relu_in], ["relu"], name="relu"),
              helper.make_node("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[2, 2],
                               strides=[2, 2]),
              helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    set_spec(model, SPEC)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.fixture()
def calib_x() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(0, 1, (96, 1, 8, 8)).astype(np.float32)


# ---------------------------------------------------------------- preparation
def test_batchnorm_is_folded_before_calibration(tmp_path: Path, calib_x: np.ndarray) -> None:
    import onnx

    from edgekit.quant.ort_qdq import count_ops, fold_batchnorm, prepare

    src = tiny_model(tmp_path / "m.onnx")
    model = onnx.load(str(src))
    assert fold_batchnorm(model) == 1 and count_ops(model, "BatchNormalization") == 0
    folded = tmp_path / "folded.onnx"
    onnx.save(model, str(folded))
    np.testing.assert_allclose(ort_run(folded, calib_x), ort_run(src, calib_x), atol=1e-4)

    work = tmp_path / "work"
    work.mkdir()
    prepared, info = prepare(src, work)
    assert info["batchnorm"] == {**info["batchnorm"], "in_exported_onnx": 1,
                                 "folded_by_edgekit": 1, "left_before_calibration": 0}
    np.testing.assert_allclose(ort_run(prepared, calib_x), ort_run(src, calib_x), atol=1e-4)


def test_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    import onnx

    from edgekit.quant.ort_qdq import prepare

    model = onnx.load(str(tiny_model(tmp_path / "m.onnx")))
    weight = next(t for t in model.graph.initializer if t.name == "fc.w")
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../outside.bin"
    (tmp_path / "model").mkdir()
    onnx.save(model, str(tmp_path / "model" / "evil.onnx"))
    with pytest.raises(InputError, match="outside the model's folder"):
        prepare(tmp_path / "model" / "evil.onnx", tmp_path)


# ---------------------------------------------------------------- calibration
def _ranges(path: Path) -> dict[str, tuple[float, float]]:
    data = json.loads(Path(path).read_text())["data"]

    def value(v):
        return float(v["data"]) if isinstance(v, dict) else float(v)

    return {k: (value(v["lowest"]), value(v["highest"])) for k, v in data.items()}


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
    from edgekit.quant.ort_qdq import prepare

    work = tmp_path / "work"
    work.mkdir()
    return prepare(tiny_model(tmp_path / "m.onnx"), work)[0]


def test_calibration_methods(prepared: Path, calib_x: np.ndarray, tmp_path: Path) -> None:
    from edgekit.quant.ort_qdq import QdqSettings, calibrate

    ranges = {}
    for method in ("minmax", "percentile", "entropy", "mse"):
        work = tmp_path / method
        work.mkdir()
        result = calibrate(prepared, calib_x, QdqSettings(method=method, calib_batch=32), work)
        assert result["samples"] == 96 and result["tensors"] >= 4
        ranges[method] = _ranges(result["ranges"])
    observed = ranges["minmax"]
    assert observed["input"][0] == pytest.approx(float(calib_x.min()), rel=1e-5)
    assert observed["input"][1] == pytest.approx(float(calib_x.max()), rel=1e-5)
    for method in ("percentile", "entropy", "mse"):
        for name, (lo, hi) in ranges[method].items():
            # Never wider than what was seen (asymmetric uint8 flavour), zero inside.
            assert observed[name][0] - 1e-5 <= lo <= 0.0 <= hi <= observed[name][1] + 1e-5, \
                (method, name)
    # The relu output is never negative: its range starts at 0 for every method.
    assert all(ranges[m]["relu"][0] == 0.0 for m in ranges)
    # Percentile (99.99) and MSE clip the tails min-max keeps; the methods differ.
    assert ranges["percentile"]["input"] != observed["input"]
    assert ranges["mse"]["input"][1] < observed["input"][1]
    assert len({tuple(ranges[m]["input"]) for m in ranges}) >= 3


def test_mse_range_clips_tails_and_keeps_zero() -> None:
    from edgekit.quant.mse import mse_range

    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, 1_000_000)
    hist, edges = np.histogram(values, bins=2048, range=(-6, 6))
    lo, hi = mse_range(hist, edges, values.min(), values.max(), symmetric=False)
    # Clipping the rare tails costs less than coarser steps: the range is inside min..max.
    assert values.min() < lo < -3 and 3 < hi < values.max()
    outliers = np.concatenate([values, [40.0, -35.0]])
    hist, edges = np.histogram(outliers, bins=2048, range=(-40, 40))
    lo, hi = mse_range(hist, edges, -35.0, 40.0, symmetric=False)
    assert -35 < lo < 0 < hi < 40
    lo_s, hi_s = mse_range(hist, edges, -35.0, 40.0, symmetric=True)
    assert lo_s == -hi_s and 0 < hi_s < 40
    positive = np.abs(values)
    hist, edges = np.histogram(positive, bins=2048, range=(-6, 6))
    lo, hi = mse_range(hist, edges, 0.0, positive.max(), symmetric=False)
    assert lo == 0.0 and 3 < hi < positive.max()


# ---------------------------------------------------------------- the two QDQ flavours
def _quantized(prepared: Path, calib_x: np.ndarray, tmp_path: Path, flavour: str) -> Path:
    from edgekit.quant.ort_qdq import QdqSettings, calibrate, quantize

    settings = QdqSettings(flavour=flavour)
    work = tmp_path / f"work-{flavour}"
    work.mkdir()
    ranges = calibrate(prepared, calib_x, settings, work)["ranges"]
    return quantize(prepared, ranges, tmp_path / f"{flavour}.onnx", settings, spec=SPEC)


def test_onnxruntime_flavour(prepared: Path, calib_x: np.ndarray, tmp_path: Path) -> None:
    import onnx

    from edgekit.io.onnxfile import spec_from_onnx
    from edgekit.metrics import fidelity
    from edgekit.quant.report import analyze_qdq
    from edgekit.targets.tensorrt import tensorrt_qdq_problems

    path = _quantized(prepared, calib_x, tmp_path, "onnxruntime")
    model = onnx.load(str(path))
    assert spec_from_onnx(model) == SPEC
    report = analyze_qdq(model)
    assert [(q["name"], q["op"]) for q in report["quantized_layers"]] == [("conv", "Conv"),
                                                                         ("fc", "Gemm")]
    conv = report["quantized_layers"][0]
    assert conv["weight_per_channel"] and conv["weight_axis"] == 0
    assert report["float_layers"] == [] and report["counts"]["int8"] == 2
    lo, hi = report["scale_ranges"]["weight"]
    assert 0 < lo <= hi
    # Logits stay float: the graph output is not produced by a DequantizeLinear.
    producer = {o: n for n in model.graph.node for o in n.output}["logits"]
    assert producer.op_type == "Gemm"
    # uint8 activations and int32 biases: fine for ONNX Runtime, not for TensorRT.
    assert any("int32" in p for p in tensorrt_qdq_problems(model)[0])
    measured = fidelity(ort_run(tmp_path / "m.onnx", calib_x), ort_run(path, calib_x))
    assert measured["cosine"] > 0.99 and measured["top1_agreement"] > 0.9


def test_tensorrt_flavour_properties(prepared: Path, calib_x: np.ndarray, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from edgekit.targets.tensorrt import tensorrt_qdq_problems

    path = _quantized(prepared, calib_x, tmp_path, "tensorrt")
    model = onnx.load(str(path))
    assert tensorrt_qdq_problems(model, allow_float=())[0] == []
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:  # signed int8, symmetric
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any()
    for name, channels, axis in (("conv", 4, 0), ("fc", 10, 0)):
        node = next(n for n in model.graph.node if n.name == name)
        data_dq, weight_dq = producers[node.input[0]], producers[node.input[1]]
        assert data_dq.op_type == "DequantizeLinear"
        assert producers[data_dq.input[0]].op_type == "QuantizeLinear"  # a Q/DQ pair
        assert inits[weight_dq.input[0]].dtype == np.int8
        assert inits[weight_dq.input[1]].shape == (channels,)
        assert next(a.i for a in weight_dq.attribute if a.name == "axis") == axis
        assert node.input[2] in inits and inits[node.input[2]].dtype == np.float32  # float bias
    # Q/DQ only on the inputs of Conv/Gemm: Relu, MaxPool, Flatten are not wrapped.
    assert {n.op_type for n in model.graph.node} - {"QuantizeLinear", "DequantizeLinear"} == \
        {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == 2
    ref, out = ort_run(tmp_path / "m.onnx", calib_x), ort_run(path, calib_x)
    assert np.mean(ref.argmax(1) == out.argmax(1)) > 0.9


def test_tensorrt_flavour_needs_per_channel() -> None:
    from edgekit.quant.ort_qdq import QdqSettings

    with pytest.raises(ConfigError, match="per channel"):
        QdqSettings(flavour="tensorrt", per_channel=False)


def test_recurrent_layers_are_reported_float() -> None:
    from onnx import TensorProto, helper

    from edgekit.quant.report import analyze_qdq

    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="lstm", hidden_size=4)], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "w", "r")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    report = analyze_qdq(helper.make_model(graph), flavour="onnxruntime")
    (entry,) = report["float_layers"]
    assert entry["op"] == "LSTM" and "no int8 LSTM kernel" in entry["reason"]


def test_a_layer_kept_float_is_float_even_when_its_input_is_quantized() -> None:
    """fc0 is int8 and writes a quantized activation (Q/DQ), which feeds fc1; fc1 was kept float
    (its weight is float): the report counts it float once, with the reason, never on both
    sides (the budget loop's bookkeeping: int8 + float = the model's layers)."""
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.quant.report import analyze_qdq

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.int8), "w0_q"),
             numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["x_q"], name="q0"),
             helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x_dq"], name="dq0"),
             helper.make_node("DequantizeLinear", ["w0_q", "s", "z"], ["w0"], name="dqw0"),
             helper.make_node("Gemm", ["x_dq", "w0"], ["h"], name="fc0"),
             helper.make_node("QuantizeLinear", ["h", "s", "z"], ["h_q"], name="q1"),
             helper.make_node("DequantizeLinear", ["h_q", "s", "z"], ["h_dq"], name="dq1"),
             helper.make_node("Gemm", ["h_dq", "w1"], ["y"], name="fc1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    why = "kept in float by the accuracy budget (sensitivity rank 1 of 2)"
    report = analyze_qdq(model, kept_float={"fc1": why})
    assert [q["name"] for q in report["quantized_layers"]] == ["fc0"]
    assert report["float_layers"] == [{"name": "fc1", "op": "Gemm", "reason": why,
                                       "input_through_qdq": True}]
    assert report["counts"]["int8"] == 1 and report["counts"]["float"] == 1
    assert report["counts"]["compute_layers"] == 2


# ---------------------------------------------------------------- calibration sets
def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_calibration_set_errors(tmp_path: Path) -> None:
    from edgekit.quant.calibration import load_calibration_set

    images = np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 4)
    ok = _npz(tmp_path / "ok.npz", x=images, y=labels)
    data, info = load_calibration_set(ok, SPEC, size=20)
    assert data.x.shape == (20, 1, 8, 8) and info["count"] == 20
    assert info["per_class"] == {str(c): 2 for c in range(10)} and len(info["sha256"]) == 64

    with pytest.raises(DataError, match="40 samples, fewer than the 64 asked for"):
        load_calibration_set(ok, SPEC, size=64)
    wrong = _npz(tmp_path / "wrong.npz", x=np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(DataError, match=r"\(3, 32, 32\).*\(1, 8, 8\)"):
        load_calibration_set(wrong, SPEC)
    two_channels = _npz(tmp_path / "two.npz", x=np.zeros((4, 8, 8, 2), np.uint8))
    with pytest.raises(DataError, match=r"\(8, 8, 2\).*\(1, 8, 8\)"):
        load_calibration_set(two_channels, SPEC)
    bad = np.zeros((4, 1, 8, 8), np.float32)
    bad[1, 0, 2, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        load_calibration_set(_npz(tmp_path / "nan.npz", x=bad), SPEC)


def test_errors_are_told_apart_by_type_not_by_their_words(tmp_path: Path) -> None:
    """A calibration set's own shape error says which set it is, and a missing-labels eval set
    under an accuracy budget says why labels are needed, whatever the paths spell: a folder
    named 'calibration' or 'shapes', a file named 'no labels' change nothing."""
    from edgekit.data.given import DataSources
    from edgekit.errors import DataShapeError, MissingLabelsError
    from edgekit.passes import get_pass
    from edgekit.passes.base import PassContext
    from edgekit.quant.calibration import load_calibration_set

    (tmp_path / "calibration").mkdir()
    wrong = _npz(tmp_path / "calibration" / "set.npz", x=np.zeros((4, 3, 32), np.float32))
    with pytest.raises(DataShapeError) as shape:
        load_calibration_set(wrong, SPEC)
    assert shape.value.message.startswith(f"calibration set: {wrong}: float inputs must be")
    (tmp_path / "shapes").mkdir()  # labels of the wrong kind: not a shape error, no prefix
    labels = _npz(tmp_path / "shapes" / "set.npz", x=np.zeros((4, 8, 8), np.uint8),
                  y=np.zeros((4, 2), np.float32))
    with pytest.raises(DataError) as other:
        load_calibration_set(labels, SPEC)
    assert not isinstance(other.value, DataShapeError)
    assert other.value.message.startswith(f"{labels}: labels 'y' must be")

    images = np.zeros((20, 8, 8), np.uint8)
    quantize = get_pass("quantize")
    for name, budget, words in [("plain.npz", {"max_drop": 0.5}, "; the accuracy budget"),
                                ("plain.npz", {}, None),
                                ("shape no labels.npz", {"max_drop": 0.5}, None)]:
        arrays = {"x": images} if words or not budget else {
            "x": np.zeros((20, 1, 4, 4), np.float32), "y": np.zeros(20, np.int64)}
        source = _npz(tmp_path / name, **arrays)
        ctx = PassContext(out_dir=tmp_path, data=DataSources(eval=source))
        step = quantize(budget)
        with pytest.raises(DataError) as caught:
            step._eval_set(SPEC, ctx)
        if words:
            assert isinstance(caught.value, MissingLabelsError)
            assert caught.value.message == (f"{source} has no labels, and accuracy needs them; "
                                            "the accuracy budget (--max-drop) compares top-1, "
                                            "which needs labels")
        elif budget:  # a shape error in a file whose name says 'no labels': as it is
            assert isinstance(caught.value, DataShapeError)
            assert "accuracy budget" not in caught.value.message
        else:  # no budget: the missing labels as the eval set says them
            assert isinstance(caught.value, MissingLabelsError)
            assert caught.value.message == f"{source} has no labels, and accuracy needs them"


def test_default_calibration_set_only_for_fashion_mnist_models() -> None:
    from edgekit.quant.calibration import EMBEDDED_SET, default_calibration_source
    from edgekit.spec import FASHION_MNIST_CLASSES

    assert default_calibration_source(SPEC.model_copy(
        update={"class_names": FASHION_MNIST_CLASSES})) == str(EMBEDDED_SET)
    with pytest.raises(DataError, match="needs a calibration set"):
        default_calibration_source(SPEC)


def test_quantize_config_is_strict() -> None:
    from edgekit.passes import get_pass

    quantize = get_pass("quantize")
    assert quantize.kind == "onnx"
    with pytest.raises(ConfigError, match="did you mean 'max_drop'"):
        quantize({"max_dorp": 0.5})
    with pytest.raises(ConfigError):
        quantize({"method": "kl"})
    with pytest.raises(ConfigError):
        quantize({"max_drop_rel": 1.5})


@pytest.mark.parametrize(("machine", "flags", "expected"), [
    ("x86_64", {"avx2", "fma"}, True),              # AVX2 only: VPMADDUBSW's int16 sums saturate
    ("x86_64", {"avx2", "avx512f"}, True),          # AVX-512 without VNNI too
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),
    ("x86_64", {"avx2", "avx_vnni"}, False),
    ("aarch64", {"asimd", "asimddp"}, False),
    ("x86_64", set(), False),                       # flags unknown: the library's default
])
def test_reduce_range_defaults_to_the_cpu_that_checks_the_model(monkeypatch, machine, flags,
                                                                 expected) -> None:
    import platform

    from edgekit import cpu
    from edgekit.passes import get_pass
    from edgekit.quant.ort_qdq import default_reduce_range

    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: set(flags))
    assert default_reduce_range() is expected
    quantize = get_pass("quantize")
    assert quantize({})._settings().reduce_range is expected
    assert quantize({})._settings().describe()["reduce_range"] is expected  # the manifest says so
    # the user's choice wins, and TensorRT's QDQ (a GPU's kernels) never reduces
    assert quantize({"reduce_range": not expected})._settings().reduce_range is (not expected)
    assert quantize({"flavour": "tensorrt"})._settings().reduce_range is False


# ---------------------------------------------------------------- the budget loop
class FakeBackend:
    """The eval inputs are the fp32 logits themselves; each quantized layer adds its own error to
    them, and keeping a layer in float removes its share."""

    runtime = "fake"

    def __init__(self, damage: dict[str, float]) -> None:
        self.damage = damage
        self.excluded: dict[Path, set[str]] = {}
        self.live: set[Path] = set()
        self.made = 0

    def reference_logits(self, x: np.ndarray) -> np.ndarray:
        return x

    def quantize(self, exclude, out_stem: str) -> Path:
        self.made += 1
        path = Path(f"/fake/{out_stem}-{self.made}")
        self.live.add(path)
        self.excluded[path] = set(exclude)
        return path

    def logits(self, artifact: Path, x: np.ndarray) -> np.ndarray:
        noise = np.random.default_rng(len(x)).normal(0, 1, x.shape)
        return x + noise * sum(d for name, d in self.damage.items()
                               if name not in self.excluded[artifact])

    def candidates(self, artifact: Path) -> list[str]:
        return [n for n in self.damage if n not in self.excluded[artifact]]

    def discard(self, artifact: Path) -> None:
        self.live.discard(artifact)


@pytest.fixture()
def eval_data():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(10), 60)
    reference = rng.normal(0, 1, (600, 10))
    reference[np.arange(600), y] += 2.5  # ~90% top-1
    return reference, y


def test_budget_allowed_points() -> None:
    from edgekit.quant.budget import DropBudget

    assert not DropBudget().active and DropBudget().allowed_points(0.9) is None
    assert DropBudget(max_drop=0.5).allowed_points(0.9) == 0.5
    assert DropBudget(max_drop_rel=0.01).allowed_points(0.9) == pytest.approx(0.9)
    assert DropBudget(max_drop=0.5, max_drop_rel=0.01).allowed_points(0.9) == 0.5
    assert DropBudget(max_drop=2.0, max_drop_rel=0.01).allowed_points(0.9) == pytest.approx(0.9)


def test_budget_loop_keeps_most_sensitive_layers_float(eval_data) -> None:
    from edgekit.quant.budget import DropBudget, keep_budget

    reference, y = eval_data
    backend = FakeBackend({"conv1": 0.05, "conv2": 3.0, "fc1": 1.5, "fc2": 0.02})
    outcome = keep_budget(backend, reference, y, DropBudget(max_drop=1.0), sensitivity_samples=200)
    assert [s["layer"] for s in outcome.sensitivity] == ["conv2", "fc1", "conv1", "fc2"]
    assert outcome.held and outcome.float_layers == ["conv2", "fc1"]
    assert [t.added for t in outcome.trials] == [None, "conv2", "fc1"]
    assert [t.held for t in outcome.trials] == [False, False, True]
    assert outcome.drop_points <= 1.0 < outcome.trials[0].drop_points
    assert backend.live == {outcome.artifact}  # everything tried and not kept was discarded


def test_budget_loop_fails_with_the_table_when_it_cannot_hold(eval_data) -> None:
    from edgekit.quant.budget import DropBudget, keep_budget

    reference, y = eval_data
    backend = FakeBackend({"conv1": 0.05, "conv2": 3.0, "fc1": 1.5})
    with pytest.raises(GateError) as info:
        keep_budget(backend, reference, y, DropBudget(max_drop=-1.0))
    message = info.value.message
    assert info.value.exit_code == 1
    assert "kept up to 2 of 3 quantized layers in float" in message
    assert "one more would leave no layer in int8" in message
    lines = message.splitlines()
    assert "layer added to float" in lines[1]
    rows = [line.split() for line in lines[2:5]]
    assert [r[0] for r in rows] == ["0", "1", "2"] and [r[1] for r in rows] == ["-", "conv2", "fc1"]
    assert all(r[-1] == "misses" for r in rows)
    assert backend.live == set()  # no artifact is left behind


def test_budget_loop_without_eval_set_just_quantizes() -> None:
    from edgekit.quant.budget import DropBudget, keep_budget

    backend = FakeBackend({"conv1": 0.1})
    outcome = keep_budget(backend, None, None, DropBudget())
    assert outcome.top1 is None and outcome.held is None and backend.made == 1

"""The reference's own logits are its score: `edgekit validate` (and optimize's fp32 baseline on
ONNX Runtime) computes the fp32 original's logits over the eval set once, as the reference, and
reads its top-1 from them instead of predicting the same file on the same runtime again (on a
ResNet-18 at 28×28 on 2 cores, one pass over the 10,000 test images is ~70 s)."""

from __future__ import annotations

from collections import Counter

from edgekit.devices import load_profile
from edgekit.runtimes.base import Runner
from edgekit.validate.bench import benchmark


def _count_predictions(monkeypatch) -> Counter:
    calls: Counter = Counter()
    predict = Runner.predict

    def counted(self, x, *args, **kwargs):
        calls[(self.artifact.name, self.name)] += 1
        return predict(self, x, *args, **kwargs)

    monkeypatch.setattr(Runner, "predict", counted)
    return calls


def test_the_reference_is_predicted_once_and_scored_from_its_logits(tiny_folder, quick_profile,
                                                                    monkeypatch):
    folder, eval_npz = tiny_folder(noise=0.5)
    calls = _count_predictions(monkeypatch)
    records = benchmark(folder, device=load_profile(quick_profile()), eval_source=str(eval_npz))
    assert calls == {("model.onnx", "onnxruntime"): 1, ("model.int8.onnx", "onnxruntime"): 1}
    by_file = {r["artifact"].rsplit("/", 1)[-1]: r["accuracy"] for r in records}
    reference, noisy = by_file["model.onnx"], by_file["model.int8.onnx"]
    # the labels are the reference's argmax: read from its own logits, it scores 1.0, exactly
    assert reference["top1"] == reference["reference_top1"] == 1.0
    assert reference["fidelity"]["max_abs_diff"] == 0.0
    assert reference["top1_drop_points"] == 0.0
    # the other file is still predicted and compared with those logits
    assert noisy["fidelity"]["max_abs_diff"] > 0 and noisy["top1"] < 1.0



def test_onnx_runtime_options_compare_by_what_they_compute():
    from edgekit.runtimes.ort import OrtRunner

    def options(**given):
        return OrtRunner.parse_options(given)

    local = options(providers=["CPUExecutionProvider"], performance_hint="latency")
    assert OrtRunner.computes_alike(local, options(providers=["cpu"], performance_hint="latency"))
    assert OrtRunner.computes_alike(options(), options(providers=["CPUExecutionProvider"]))
    assert OrtRunner.computes_alike(options(providers=[]), options())  # the CPU provider added
    assert not OrtRunner.computes_alike(local, options(providers=["cuda"],
                                                       performance_hint="latency"))
    assert not OrtRunner.computes_alike(options(providers=["cpu", "cuda"]),
                                        options(providers=["cuda"]))

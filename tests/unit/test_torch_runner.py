"""PyTorch runner: checkpoints and folders on the CPU, its refusals, the device-timing hook of the
one timing loop; on a CUDA GPU (marked `gpu`): fp32/fp16/CUDA graphs agree with the CPU, both
end-to-end and CUDA-event times are recorded, and the numbers are not the implausibly low ones an
unsynchronised timing gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import InputError, MissingDependencyError
from edgekit.runtimes.base import DeviceTimed, Runner, get_runner
from edgekit.runtimes.latency import LatencyProtocol

torch = pytest.importorskip("torch", reason="torch not installed (pip install edgekit[torch])")

QUICK = LatencyProtocol(warmup_count=3, warmup_seconds=0.0, min_queries=30, min_seconds=0.0,
                        max_seconds=10.0)
HAVE_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA GPU visible to torch")


@pytest.fixture(scope="module")
def lenet_checkpoint(tmp_path_factory) -> Path:
    """An untrained lenet5 checkpoint (the runner's numbers, not the model's skill, are tested)."""
    from edgekit.io.models import save_checkpoint
    from edgekit.zoo import build

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("torch") / "lenet5.pt"
    save_checkpoint(build("lenet5"), path)
    return path


def images(n: int, shape=(1, 28, 28)) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)


def test_cpu_runner_matches_the_model(lenet_checkpoint: Path) -> None:
    from edgekit.io.models import load_model

    runner = get_runner("torch")(lenet_checkpoint, threads=1)
    assert runner.spec.shape == (1, 1, 28, 28)  # the checkpoint's own InputSpec
    x = images(10)
    with torch.no_grad():
        expected = load_model(lenet_checkpoint).model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runner.predict(x, batch_size=4), expected, atol=1e-5)
    info = runner.describe()
    assert info["device"] == "cpu" and info["precision"] == "fp32" and info["threads"] == 1
    stats = runner.measure_latency(x[:2], QUICK)
    assert stats["count"] >= 30 and "device_latency" not in stats
    assert "CPU" in stats["timing_scope"]


def test_folder_with_model_pt(lenet_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(lenet_checkpoint.read_bytes())
    assert get_runner("torch")(tmp_path).checkpoint == tmp_path / "model.pt"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no PyTorch checkpoint"):
        get_runner("torch")(empty)


@pytest.mark.parametrize("options,error,text", [
    ({"precision": "fp16"}, InputError, "fp16 in the torch runner needs a CUDA device"),
    ({"cuda_graphs": True}, InputError, "cuda_graphs needs a CUDA device"),
    ({"precision": "int8"}, InputError, "choose one of: fp32, fp16"),
    ({"device": "tpu"}, InputError, "unknown torch device"),
])
def test_refusals(lenet_checkpoint: Path, options, error, text: str) -> None:
    with pytest.raises(error, match=text) as err:
        get_runner("torch")(lenet_checkpoint, options=options)
    assert err.value.exit_code == 2


@pytest.mark.skipif(HAVE_CUDA, reason="a CUDA GPU is visible here")
def test_cuda_profile_without_a_gpu_is_a_clear_error(lenet_checkpoint: Path) -> None:
    with pytest.raises(MissingDependencyError, match="no CUDA GPU here") as err:
        get_runner("torch")(lenet_checkpoint, options={"device": "cuda"})
    assert "local-cpu" in str(err.value)


def test_device_timing_hook_keeps_timed_samples_only() -> None:
    """The base loop calls after_sample outside the timed span; a DeviceTimed runner reports the
    device samples of the timed queries (not the warm-up's) as stats['device_latency']."""
    from edgekit.spec import InputSpec

    class FakeGpu(DeviceTimed, Runner):
        name = "fake-gpu-test"

        def load(self) -> None:
            self.calls = 0

        def bind(self, x):
            self._read_device_ms = lambda: 0.5 + 0.001 * self.calls

            def run():
                self.calls += 1

            return run

    runner = FakeGpu("unused", InputSpec())
    protocol = LatencyProtocol(warmup_count=7, warmup_seconds=0.0, min_queries=25,
                               min_seconds=0.0, max_seconds=5.0)
    stats = runner.measure_latency(images(1), protocol)
    device = stats["device_latency"]
    assert device["count"] == stats["count"] == runner.calls - stats["warmup_queries"]
    assert device["min_ms"] == pytest.approx(0.5 + 0.001 * (stats["warmup_queries"] + 1))
    assert device["timing_scope"] and len(device["samples_ms"]) == device["count"]
    # each run reports its own samples only
    assert runner.measure_latency(images(1), protocol)["device_latency"]["count"] >= 25


# ---------------------------------------------------------------- on a CUDA GPU
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("options", [
    {"precision": "fp32"}, {"precision": "fp16"}, {"precision": "fp32", "cuda_graphs": True},
    {"precision": "fp16", "cuda_graphs": True},
])
def test_gpu_runner_agrees_with_cpu_and_times_both_ways(lenet_checkpoint: Path, options) -> None:
    cpu = get_runner("torch")(lenet_checkpoint)
    gpu = get_runner("torch")(lenet_checkpoint, options={"device": "cuda", **options})
    x = images(64)
    expected = cpu.predict(x)
    got = gpu.predict(x)
    tolerance = 1e-3 if options["precision"] == "fp32" else 5e-2
    assert np.abs(got - expected).max() <= tolerance * max(1.0, np.abs(expected).max())
    stats = gpu.measure_latency(x, QUICK)
    device = stats["device_latency"]
    assert device["count"] == stats["count"] >= 30
    # the host clock spans the events (plus both copies and the synchronisation)
    assert stats["p50_ms"] >= device["p50_ms"]
    assert "end-to-end" in stats["timing_scope"] and "CUDA events" in device["timing_scope"]
    assert ("CUDA graph" in stats["timing_scope"]) == bool(options.get("cuda_graphs"))
    info = gpu.describe()
    assert info["device"].startswith("cuda") and info["device_name"]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_numbers_are_not_implausibly_low(tmp_path: Path, precision: str) -> None:
    """resnet18, batch 64, eager and CUDA graphs. Our end-to-end p50 spans the device time, the
    FLOP rate our device time implies stays below 2 PFLOP/s (beyond any GPU's dense fp16 peak),
    and with CUDA graphs, where launching costs the host almost nothing, our p50 is far above
    an unsynchronised timing of the same replay (which only measures the launch)."""
    import time

    import torchvision

    from edgekit.io.models import IMAGENET_SPEC, ModelBundle, save_checkpoint
    from edgekit.passes.stats import model_cost

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    spec = IMAGENET_SPEC.with_shape((1, 3, 224, 224))
    path = save_checkpoint(ModelBundle(model, spec, "torchvision.models:resnet18", {}, [], None,
                                       {}), tmp_path / "resnet18.pt")
    macs = model_cost(model, spec)["macs"]
    x = images(64, (3, 224, 224))
    protocol = LatencyProtocol(warmup_count=10, warmup_seconds=0.5, min_queries=50,
                               min_seconds=1.0)
    for graphs in (False, True):
        runner = get_runner("torch")(path, options={"device": "cuda", "precision": precision,
                                                    "cuda_graphs": graphs})
        stats = runner.measure_latency(x, protocol)
        ours, device = stats["p50_ms"], stats["device_latency"]["p50_ms"]
        implied_flops = 2 * macs * 64 / (device / 1e3)
        line = (f"resnet18 b64 {precision} graphs={graphs}: end-to-end p50 {ours:.3f} ms, "
                f"device p50 {device:.3f} ms, implied {implied_flops / 1e12:.0f} TFLOP/s")
        print(line)
        assert implied_flops < 2e15, line
        assert ours >= device, line
    graph = runner._graphs[64]
    naive = []
    for _ in range(30):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        graph.replay()  # no synchronisation: the clock stops when the launch returns
        naive.append((time.perf_counter() - begin) * 1e3)
    torch.cuda.synchronize()
    naive_p50 = float(np.median(naive))
    print(f"unsynchronised replay of the same graph: {naive_p50:.3f} ms")
    assert ours > 5 * naive_p50, line


def test_runner_threads_are_scoped_to_its_own_calls(lenet_checkpoint: Path) -> None:
    """torch's thread count is process-wide: the runner's `threads` hold while it runs, and the
    caller's count is back afterwards (loading, inference, timing, describe)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runner = get_runner("torch")(lenet_checkpoint, threads=1)
        seen: list[int] = []
        forward = runner.bundle.model.forward
        runner.bundle.model.forward = lambda x: (seen.append(torch.get_num_threads()),
                                                 forward(x))[1]
        runner.predict(images(3), batch_size=2)
        assert seen == [1, 1] and torch.get_num_threads() == 2
        runner.measure_latency(images(1), QUICK)
        assert runner.describe()["threads"] == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

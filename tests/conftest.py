"""Shared fixtures. Anything trained is session-scoped and cached on disk under .cache/test-models
(keyed by its settings), so a rerun does not train again; CI starts from an empty cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Skips are counted and, under CI, only a missing GPU or TensorRT may skip (tests/skip_policy.py).
from tests.ci_budget import pytest_collection_modifyitems  # noqa: F401 - CI's time (see there)
from tests.skip_policy import (  # noqa: F401 - pytest registers the hooks from this module
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EDGEKIT_CACHE", ROOT / ".cache")) / "test-models"
os.environ.setdefault("EDGEKIT_NO_PROGRESS", "1")
# The suite's numbers were measured training on the CPU in fp32: "auto" would choose by this
# machine's GPU and a measured bf16 micro-benchmark (tests of that choice set it themselves).
os.environ.setdefault("EDGEKIT_TRAIN_DEVICE", "cpu")
os.environ.setdefault("EDGEKIT_TRAIN_PRECISION", "fp32")


def _fashion_mnist_installed() -> bool:
    from edgekit.data.sources import fashion_mnist_dir
    from edgekit.errors import DataError

    try:
        fashion_mnist_dir()
        return True
    except DataError:
        return False


requires_data = pytest.mark.skipif(not _fashion_mnist_installed(),
                                   reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def zoo_checkpoint():
    """zoo_checkpoint(name, limit=6000, epochs=1) -> Path of a small trained edgekit checkpoint.

    Trained on a stratified subset of Fashion-MNIST train, evaluated on 2,000 test images; good
    enough for tests of export, quantization, pruning (not for the issue's accuracy targets)."""
    if not _fashion_mnist_installed():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")

    def make(name: str, limit: int = 6000, epochs: int = 1) -> Path:
        import torch

        from edgekit.io.models import save_checkpoint
        from edgekit.zoo.train import TrainConfig, train_zoo_model

        path = CACHE / f"{name}-{limit}-{epochs}.pt"
        if not path.exists():
            torch.manual_seed(0)
            cfg = TrainConfig(epochs=epochs, limit=limit, num_threads=2, seed=0)
            bundle, _ = train_zoo_model(name, cfg, eval_limit=2000)
            save_checkpoint(bundle, path)
        return path

    return make


@pytest.fixture(scope="session")
def lenet5(zoo_checkpoint) -> Path:
    """The zoo's lenet5, trained as zoo_checkpoint trains it."""
    return zoo_checkpoint("lenet5")


@pytest.fixture(scope="session")
def fashion_test_small():
    """Fashion-MNIST test split, stratified 1,000 images, as a source string + loader."""
    if not _fashion_mnist_installed():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return "fashion-mnist:test"


# ---------------------------------------------------------------- validator fixtures (issue 7)
@pytest.fixture
def tiny_folder(tmp_path):
    """tiny_folder(noise=0.0, nan=False, classes=4, named=True) -> an edgekit output folder with
    two torch-free linear classifiers on 4×4 one-channel inputs, made with onnx.helper:
    `model.onnx` (fp32, the reference) and `model.int8.onnx` (labelled int8; its weights get
    `noise` added, and NaN outputs when `nan`), plus `eval.npz` (200 float inputs, labels = the
    reference's argmax). Class names c0, c1, ... are recorded unless `named` is False."""
    import numpy as np

    def make(noise: float = 0.0, nan: bool = False, classes: int = 4, named: bool = True):
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        from edgekit.io.manifest import Manifest
        from edgekit.io.onnxfile import save_onnx, set_spec
        from edgekit.spec import InputSpec

        rng = np.random.default_rng(0)
        weights = rng.standard_normal((16, classes)).astype(np.float32)
        spec = InputSpec(shape=(1, 1, 4, 4), mean=(0.0,), std=(1.0,),
                         class_names=tuple(f"c{i}" for i in range(classes)) if named else ())

        def linear(w: np.ndarray, path, make_nan: bool) -> None:
            nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
                     helper.make_node("MatMul", ["flat", "W"], ["mm"])]
            inits = [numpy_helper.from_array(w, "W")]
            if make_nan:
                inits.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan"))
                nodes.append(helper.make_node("Mul", ["mm", "nan"], ["logits"]))
            else:
                nodes[-1] = helper.make_node("MatMul", ["flat", "W"], ["logits"])
            graph = helper.make_graph(
                nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                              ["batch", 1, 4, 4])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
                inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            model.ir_version = 8
            onnx.checker.check_model(model)
            set_spec(model, spec)
            save_onnx(model, path)

        folder = tmp_path / "out"
        folder.mkdir(exist_ok=True)
        linear(weights, folder / "model.onnx", False)
        noisy = weights + noise * rng.standard_normal(weights.shape).astype(np.float32)
        linear(noisy, folder / "model.int8.onnx", nan)
        manifest = Manifest(folder)
        manifest.add_stage("export-onnx-fp32", outputs=[{"path": "model.onnx", "format": "onnx",
                                                         "precision": "fp32", "model": "tiny"}])
        manifest.add_stage("quantize-int8", inputs={"source": folder / "model.onnx"},
                           outputs=[{"path": "model.int8.onnx", "format": "onnx",
                                     "precision": "int8", "model": "tiny"}])
        x = rng.standard_normal((200, 1, 4, 4)).astype(np.float32)
        y = (x.reshape(200, 16) @ weights).argmax(1).astype(np.int64)
        np.savez(tmp_path / "eval.npz", x=x, y=y)
        return folder, tmp_path / "eval.npz"

    return make


@pytest.fixture
def quick_profile(tmp_path):
    """quick_profile(**overrides) -> path of a local-cpu-like profile with a short protocol."""
    import yaml

    def make(**overrides) -> str:
        data = {"schema_version": 1, "name": "quick-cpu", "kind": "cpu", "threads": 1,
                "batch_sizes": [1],
                "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}},
                "latency": {"warmup_count": 2, "warmup_seconds": 0.0, "min_queries": 20,
                            "min_seconds": 0.05, "max_seconds": 2.0}}
        data.update(overrides)
        path = tmp_path / f"{data['name']}.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)

    return make

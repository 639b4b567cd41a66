"""Shared fixtures. Anything trained is session-scoped and cached on disk under .cache/test-models
(keyed by its settings), so a rerun does not train again; CI starts from an empty cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EDGEKIT_CACHE", ROOT / ".cache")) / "test-models"
os.environ.setdefault("EDGEKIT_NO_PROGRESS", "1")


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
def fashion_test_small():
    """Fashion-MNIST test split, stratified 1,000 images, as a source string + loader."""
    if not _fashion_mnist_installed():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return "fashion-mnist:test"

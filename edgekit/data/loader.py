"""Training batches from an image folder through torch's DataLoader with worker processes:
each worker decodes and preprocesses its images (InputSpec.prepare_image + normalise, as every
other path does), so memory holds a few batches whatever the folder's size. Needs torch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgekit.data.folders import ImageIndex, decode
from edgekit.spec import InputSpec


class _FolderTorchDataset:
    """A map-style dataset (torch.utils.data.Dataset protocol) over an ImageIndex."""

    def __init__(self, index: ImageIndex, spec: InputSpec) -> None:
        self.index, self.spec = index, spec

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        x = self.spec.normalise(decode(self.index.files[i], self.spec)[None])[0]
        return torch.from_numpy(x), int(self.index.labels[i])


def default_workers() -> int:
    """DataLoader worker processes: EDGEKIT_DATA_WORKERS, else 0 (decoding in this process).
    Workers are opt-in: after a DataLoader with workers had run in a process that also runs
    ONNX Runtime and OpenVINO, that process later crashed (SIGSEGV) in an unrelated step;
    until that is understood, edgekit does not start them by itself."""
    env = os.environ.get("EDGEKIT_DATA_WORKERS")
    return max(0, int(env)) if env is not None else 0


def folder_batches(index: ImageIndex, spec: InputSpec, batch_size: int, *,
                   order: np.ndarray | None = None, workers: int | None = None
                   ) -> Iterator[tuple[Any, Any]]:
    """(x, y) tensors batch by batch in `order` (index positions; all in order when None)."""
    from torch.utils.data import DataLoader, Subset

    dataset: Any = _FolderTorchDataset(index, spec)
    if order is not None:
        dataset = Subset(dataset, [int(i) for i in order])
    workers = default_workers() if workers is None else workers
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        persistent_workers=False, prefetch_factor=2 if workers else None,
                        multiprocessing_context="spawn" if workers and os.name != "posix" else None)
    yield from loader

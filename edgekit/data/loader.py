"""Training batches from an image folder through torch's DataLoader with worker processes:
each worker decodes and preprocesses its images (InputSpec.prepare_image + normalise, as every
other path does), so memory holds a few batches whatever the folder's size. Needs torch.

One `FolderLoader` serves a whole training run: its workers start with the first epoch and stay
(persistent_workers), each epoch sets its own order, and `close()` stops them and puts back the
SIGCHLD handler that torch installs in the main process while workers run, so that no signal
handler outlives the training run in the caller's process (a notebook, a test session).
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgekit.data.folders import ImageIndex, decode
from edgekit.errors import DataError
from edgekit.spec import InputSpec

MAX_DEFAULT_WORKERS = 4


class _FolderTorchDataset:
    """A map-style dataset (torch.utils.data.Dataset protocol) over an ImageIndex. A file that
    fails to decode comes back as an error string rather than an exception, so the main process
    raises edgekit's own DataError naming it (torch would wrap a worker's exception in a
    traceback dump)."""

    def __init__(self, index: ImageIndex, spec: InputSpec) -> None:
        self.index, self.spec = index, spec

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Any, int, str, str]:
        import torch

        try:
            x = self.spec.normalise(decode(self.index.files[i], self.spec)[None])[0]
        except DataError as exc:
            return torch.zeros(self.spec.shape[1:]), -1, exc.message, exc.hint or ""
        return torch.from_numpy(x), int(self.index.labels[i]), "", ""


class _EpochBatches:
    """A batch sampler whose order is set before each epoch (iterated in the main process, so a
    persistent worker pool serves every epoch)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.order: list[int] = []

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, len(self.order), self.batch_size):
            yield self.order[start:start + self.batch_size]

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)


def default_workers() -> int:
    """DataLoader worker processes: EDGEKIT_DATA_WORKERS when set (0 decodes in this process),
    else one fewer than the CPUs, at least 1 and at most 4."""
    env = os.environ.get("EDGEKIT_DATA_WORKERS")
    if env is not None:
        try:
            return max(0, int(env))
        except ValueError:
            raise DataError(f"EDGEKIT_DATA_WORKERS={env!r} is not a number",
                            hint="set it to the number of data worker processes (0: none)") from None
    return max(1, min(MAX_DEFAULT_WORKERS, (os.cpu_count() or 1) - 1))


class FolderLoader:
    """(x, y) tensors of an image folder, epoch by epoch, decoded by `workers` processes."""

    def __init__(self, index: ImageIndex, spec: InputSpec, batch_size: int, *,
                 workers: int | None = None) -> None:
        self.index, self.spec = index, spec
        self.workers = default_workers() if workers is None else workers
        self._sampler = _EpochBatches(batch_size)
        self._loader: Any = None
        self._sigchld = _SigchldScope()

    def epoch(self, order: np.ndarray) -> Iterator[tuple[Any, Any]]:
        """This epoch's batches in `order` (index positions)."""
        from torch.utils.data import DataLoader

        self._sampler.order = [int(i) for i in order]
        if self._loader is None:
            self._sigchld.enter()
            self._loader = DataLoader(
                _FolderTorchDataset(self.index, self.spec), batch_sampler=self._sampler,
                num_workers=self.workers, persistent_workers=self.workers > 0,
                prefetch_factor=2 if self.workers else None)
        for x, y, errors, hints in self._loader:
            bad = next((n for n, e in enumerate(errors) if e), None)
            if bad is not None:
                raise DataError(errors[bad], hint=hints[bad] or None)
            yield x, y

    def close(self) -> None:
        """Stop the worker processes and restore the SIGCHLD handler found before them."""
        loader, self._loader = self._loader, None
        if loader is not None:
            iterator = getattr(loader, "_iterator", None)
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            del iterator, loader
        self._sigchld.exit()

    def __enter__(self) -> FolderLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SigchldScope:
    """torch installs a Python SIGCHLD handler in the main process the first time a DataLoader
    starts workers, and keeps it for the life of the process (a module flag stops it installing
    twice). While it is there, every child process that exits runs a handler in the main
    thread. Scoped here: the handler found before is put back, and torch's flag cleared so that
    the next DataLoader installs its own again."""

    def __init__(self) -> None:
        self.active = False
        self.previous: Any = None
        self.flag_was_set = True

    def enter(self) -> None:
        if os.name != "posix" or threading.current_thread() is not threading.main_thread():
            return
        from torch.utils.data._utils import signal_handling

        self.previous = signal.getsignal(signal.SIGCHLD)
        self.flag_was_set = bool(getattr(signal_handling, "_SIGCHLD_handler_set", True))
        self.active = True

    def exit(self) -> None:
        if not self.active or self.flag_was_set:
            return  # not ours to undo: the handler was already there before this loader
        from torch.utils.data._utils import signal_handling

        signal.signal(signal.SIGCHLD, signal.SIG_DFL if self.previous is None else self.previous)
        signal_handling._SIGCHLD_handler_set = False
        self.active = False

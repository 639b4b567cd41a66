"""Keep a library quiet while it works, without muting anything else in the process.

ONNX Runtime's quantization tools log warnings through the root logger and print progress on
stdout. `logging.disable` and `contextlib.redirect_stdout` would silence every logger and every
thread of the process for as long as calibration runs (a progress bar drawn by another thread,
a caller's own log lines). `quiet_library` drops only that library's log records (up to a
level) and only what the calling thread prints, and puts everything back on exit."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any


class _ThreadSink(io.TextIOBase):
    """Stands in for sys.stdout: writes from the quieted thread go nowhere, writes from any
    other thread reach the real stream."""

    def __init__(self, real: Any, owner: int) -> None:
        super().__init__()
        self._real, self._owner = real, owner

    def write(self, text: str) -> int:
        if threading.get_ident() == self._owner:
            return len(text)
        return self._real.write(text)

    def flush(self) -> None:
        if threading.get_ident() != self._owner:
            self._real.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, ... of the real one
        return getattr(self._real, name)


class _FromPackage(logging.Filter):
    """Drops records of one package (by logger name or source file) at or below `level`."""

    def __init__(self, package: str, folders: list[str], level: int) -> None:
        super().__init__()
        self.package, self.folders, self.level = package, tuple(folders), level

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == self.package or record.name.startswith(self.package + ".") \
            or (bool(self.folders) and str(record.pathname).startswith(self.folders))
        return not (ours and record.levelno <= self.level)


@contextlib.contextmanager
def quiet_library(package: str, level: int = logging.WARNING) -> Iterator[None]:
    """Silence `package` in this block: its log records up to `level` (errors still show),
    and what this thread prints on stdout."""
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    drop = _FromPackage(package, folders, level)
    root = logging.getLogger()
    # Logger filters see only records logged on that logger (ORT calls logging.warning(), the
    # root logger); handler filters also see records propagated from the package's loggers.
    holders: list[logging.Filterer] = [root, *root.handlers]
    if logging.lastResort is not None:
        holders.append(logging.lastResort)
    for holder in holders:
        holder.addFilter(drop)
    real = sys.stdout
    sys.stdout = _ThreadSink(real, threading.get_ident())
    try:
        yield
    finally:
        sys.stdout = real
        for holder in holders:
            holder.removeFilter(drop)

"""Atomic writes and hashing. An interrupted run never leaves a half-written artifact that a later
stage would take for whole: everything is written to a temp file beside the target and renamed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

UMASK = os.umask(0)
os.umask(UMASK)


def cache_dir() -> Path:
    """edgekit's cache folder ($EDGEKIT_CACHE, else .cache in the working directory)."""
    return Path(os.environ.get("EDGEKIT_CACHE", ".cache"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success it is renamed onto `target`,
    on any exception it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later run tell a killed run's leftovers from a live one's.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.pid{os.getpid()}.", suffix=".part",
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~UMASK)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode())


def atomic_write_json(target: str | Path, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def file_size(path: str | Path) -> int:
    """Size on disk, including an ONNX model's external data and an OpenVINO IR's .bin."""
    path = Path(path)
    total = path.stat().st_size
    from edgekit.kinds import weights_file

    sibling = weights_file(path, existing=True)
    if sibling is not None:
        total += sibling.stat().st_size
    return total


def format_size(n: float | None) -> str:
    """'95.3 KB': a byte count for people ('-' when unknown)."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)

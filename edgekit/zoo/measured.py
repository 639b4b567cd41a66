"""What this machine measured once and keeps (`train-plans.json` in edgekit's cache): the
training layout and precision of edgekit.zoo.accel and the teacher engine of
edgekit.zoo.teacher_engine, each entry keyed by everything the measurement depends on (device,
library versions, threads, model size class), so a key that differs measures again.

The file is JSON; a damaged or unreadable file reads as empty, and an entry is written to a
temporary file renamed over it, so a killed run never leaves half a file."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path

from edgekit.io.files import atomic_write_text, cache_dir

PLANS_FILE = "train-plans.json"


def _path() -> Path:
    return cache_dir() / PLANS_FILE


def _read(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recall(key: Mapping[str, object]) -> dict[str, object] | None:
    """What this machine stored under `key`, if anything."""
    entry = _read(_path()).get(json.dumps(key, sort_keys=True))
    return entry if isinstance(entry, dict) else None


def remember(key: Mapping[str, object], entry: Mapping[str, object]) -> None:
    """Store `entry` under `key` (with the key itself, for whoever reads the file)."""
    path = _path()
    data = _read(path)
    data[json.dumps(key, sort_keys=True)] = {**entry, "key": dict(key)}
    with contextlib.suppress(OSError):  # a read-only cache: measured again next time
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


__all__ = ["PLANS_FILE", "recall", "remember"]

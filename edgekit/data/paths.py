"""What a data source string reads on disk: for the output checks (no output may replace or land
inside an input) and for the check that every input exists before the first step runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgekit.data.sources import BUILTIN_SOURCES, fashion_mnist_dir
from edgekit.errors import DataError

# Where each built-in source's files live (raises DataError when it is not installed).
BUILTIN_DIRS: dict[str, Callable[[str | Path | None], Path]] = {"fashion-mnist": fashion_mnist_dir}


def _builtin(source: str) -> tuple[str, str] | None:
    name, _, split = source.partition(":")
    return (name, split) if name in BUILTIN_SOURCES and not Path(source).exists() else None


def source_paths(source: str | None, data_dir: str | Path | None = None) -> list[Path]:
    """The files or folders `source` reads ([] for none, or a built-in set not installed)."""
    if not source:
        return []
    builtin = _builtin(source)
    if builtin:
        try:
            return [BUILTIN_DIRS[builtin[0]](data_dir)]
        except DataError:
            return []
    if "," in source and not Path(source).exists():
        return [Path(p) for p in source.split(",", 1)]
    return [Path(source)]


def check_source_exists(source: str | None, what: str, data_dir: str | Path | None = None) -> None:
    """DataError (exit 2) when `source` names nothing there: checked for every input before the
    first step, so a typo in --train is not found after minutes of pruning."""
    if not source:
        return
    builtin = _builtin(source)
    if builtin:
        name, split = builtin
        splits = BUILTIN_SOURCES[name][0]
        if split not in splits:
            raise DataError(f"{what}: unknown split {split!r} of {name}",
                            hint=f"use one of: {', '.join(f'{name}:{s}' for s in splits)}")
        BUILTIN_DIRS[name](data_dir)  # raises when the set is not installed
        return
    missing = [p for p in source_paths(source, data_dir) if not p.exists()]
    if missing:
        raise DataError(f"{what} {source} does not exist"
                        + (f" ({', '.join(map(str, missing))} is missing)" if "," in source
                           else ""),
                        hint="check the path, or use a built-in source such as "
                             "fashion-mnist:train")

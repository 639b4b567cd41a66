"""What ships inside the package (edgekit/_data/): device profiles, the calibration set, the demo
recipes and the zoo's trained checkpoints, read with importlib.resources so that a wheel installed
on a device works without the repository. (The repository's top-level devices/, calibration/ and
recipes/ are links to these folders.)

A file a user names is looked up where the user would expect it first (beside the recipe, then
the working directory); a shipped one is found by its package-relative name, e.g.
`calibration/fashion-mnist-512.npz`, or explicitly as `package:calibration/fashion-mnist-512.npz`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE_PREFIX = "package:"
KINDS = ("devices", "calibration", "recipes", "zoo")


def shipped_dir(kind: str) -> Path:
    """The folder of shipped `kind` files (one of KINDS) on disk: edgekit is installed unzipped
    (zip-safe false), so the resource tree is a real folder."""
    if kind not in KINDS:
        raise ValueError(f"unknown shipped resource kind {kind!r} (known: {', '.join(KINDS)})")
    return Path(str(resources.files("edgekit").joinpath("_data", kind)))


def shipped_file(relative: str | Path) -> Path | None:
    """A shipped file by its package-relative name (`calibration/fashion-mnist-512.npz`, with or
    without the `package:` prefix); None when the package has no such file."""
    text = str(relative)
    if text.startswith(PACKAGE_PREFIX):
        text = text[len(PACKAGE_PREFIX):]
    parts = Path(text).parts
    if not parts or parts[0] not in KINDS or ".." in parts or Path(text).is_absolute():
        return None
    candidate = shipped_dir(parts[0]).joinpath(*parts[1:])
    return candidate if candidate.is_file() else None


def resolve_file(value: str, *, base: str | Path | None = None) -> str:
    """A file path as the user wrote it, resolved: `package:NAME` from the package; otherwise
    relative to `base` (a recipe's folder) when it exists there, as given when it exists from the
    working directory, else the shipped file of that name; unchanged when none exists (the caller
    reports it as missing)."""
    if value.startswith(PACKAGE_PREFIX):
        found = shipped_file(value)
        return str(found) if found else value
    path = Path(value)
    if path.is_absolute():
        return value
    if base is not None and (Path(base) / value).exists():
        return str(Path(base) / value)
    if path.exists():
        return value
    found = shipped_file(value)
    return str(found) if found else value

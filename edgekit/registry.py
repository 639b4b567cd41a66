"""Registries that fill themselves: a Runner, Target, Pass or Executor subclass registers by
name when its module is imported, and `load_modules(package)` imports every module of its
package once. No second list of names or modules to keep in sync: a new runtime or target is a
new file in its package."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil

_LOADED: set[str] = set()


def load_modules(package: str) -> None:
    """Import every module of `package` (not its subpackages), once, so that their classes
    register. Modules import their heavy libraries lazily (torch, onnxruntime, openvino,
    tensorrt), so this is cheap and works on a device that has only numpy and one runtime."""
    if package in _LOADED:
        return
    for name in module_names(package):
        importlib.import_module(f"{package}.{name}")
    _LOADED.add(package)


def module_names(package: str) -> list[str]:
    """The modules of `package` (not subpackages, not _private ones), found on disk without
    importing the package itself."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)
            if not m.ispkg and not m.name.startswith("_")]


def suggest(name: str, known: list[str] | tuple[str, ...] | set[str]) -> str:
    """'did you mean X?' for a near miss, else the list of known names (a hint line)."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean {close[0]!r}?" if close else f"choose one of: {', '.join(sorted(known))}"

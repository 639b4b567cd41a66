"""Compression passes. Each module defines one Pass subclass, which registers itself by name
when imported; `get_pass(name)` imports on demand. One registry, no second list."""

from __future__ import annotations

from edgekit.passes.base import PASS_MODULES, PASS_NAMES, PASSES, Pass, PassContext, get_pass

__all__ = ["PASSES", "PASS_MODULES", "PASS_NAMES", "Pass", "PassContext", "get_pass"]

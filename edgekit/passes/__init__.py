"""Compression passes. Each module defines one Pass subclass, which registers itself by name
when imported; `get_pass(name)` finds it, `pass_names()` lists every one. One registry, no second
list."""

from __future__ import annotations

from edgekit.passes.base import PASSES, Knob, Pass, PassContext, get_pass, pass_names

__all__ = ["PASSES", "Knob", "Pass", "PassContext", "get_pass", "pass_names"]

"""Export targets. Each module defines one Target subclass, which registers itself by name."""

from __future__ import annotations

from edgekit.targets.base import TARGETS, Artifact, Target, get_target

__all__ = ["TARGETS", "Artifact", "Target", "get_target"]

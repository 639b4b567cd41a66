"""Runtimes: one Runner per inference library. Lean: nothing here imports torch except torch.py."""

from __future__ import annotations

from edgekit.runtimes.base import RUNNERS, Runner, get_runner, runner_for_artifact

__all__ = ["RUNNERS", "Runner", "get_runner", "runner_for_artifact"]

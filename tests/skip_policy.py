"""Skips are counted, and in CI only the expected ones are allowed.

Every run ends with "skipped: N (allowed reasons: ...)" and lists each skip whose reason is not
allowed. With EDGEKIT_STRICT_SKIPS=1 (set by .ci/run) or CI set (GitHub Actions and most CI
systems set it), such a skip fails the session: on a CI machine every test runs except those that
need hardware or software that cannot be installed there, an NVIDIA GPU and TensorRT.
EDGEKIT_STRICT_SKIPS=0 turns it off even under CI.

tests/conftest.py imports these hooks, so pytest registers them."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

# What a CI machine without a GPU cannot have. Each pattern is matched (case-insensitive) against
# a skip's reason; keep them narrow, so that an unexpected skip is never taken for one of these.
ALLOWED_REASONS: dict[str, str] = {
    "a missing GPU": r"\bno (nvidia|cuda) gpu\b|\bonnxruntime-gpu\b|\bcuda-python not installed\b",
    "a missing TensorRT": r"\btensorrt not installed\b",
    # the other side of a GPU/TensorRT pair: a check of the machine *without* them
    "a GPU or TensorRT that is present": r"\b(cuda gpu|cuda execution provider|tensorrt) is "
                                          r"(visible|available|installed) here\b",
}

_skips: list[tuple[str, str]] = []  # (test id, reason)


def strict() -> bool:
    """EDGEKIT_STRICT_SKIPS=1 (or CI set, unless EDGEKIT_STRICT_SKIPS=0)."""
    flag = os.environ.get("EDGEKIT_STRICT_SKIPS")
    if flag is not None:
        return flag not in ("", "0")
    return bool(os.environ.get("CI"))


def allowed(reason: str) -> bool:
    return any(re.search(p, reason, re.IGNORECASE) for p in ALLOWED_REASONS.values())


def skip_reason(report: pytest.TestReport) -> str:
    """The reason pytest shows for a skip ("Skipped: " stripped)."""
    longrepr: Any = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def unexpected() -> list[tuple[str, str]]:
    return [(nodeid, reason) for nodeid, reason in _skips if not allowed(reason)]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips.append((report.nodeid, skip_reason(report)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if strict() and unexpected() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    bad = unexpected()
    terminalreporter.write_line(
        f"skipped: {len(_skips)} (allowed reasons: {'; '.join(ALLOWED_REASONS)})"
        + (f"; {len(bad)} unexpected" if bad else ""))
    for nodeid, reason in bad:
        terminalreporter.write_line(f"  unexpected skip: {nodeid}: {reason}",
                                    red=strict(), yellow=not strict())
    if bad and strict():
        terminalreporter.write_line(
            "FAILED: tests were skipped for reasons a CI machine must not have (EDGEKIT_STRICT_SKIPS"
            " / CI is set); install what they need or fix what skips them", red=True, bold=True)

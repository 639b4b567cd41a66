"""The CPU this process runs on, from Linux's /proc/cpuinfo: its model name and ISA flags (the
one parser: validate's environment record, int8's reduce_range default, bf16 training)."""

from __future__ import annotations

from pathlib import Path


def cpuinfo() -> tuple[str | None, set[str]]:
    """(model name, ISA flags) from Linux's /proc/cpuinfo (x86 `flags`, ARM `Features`); (None,
    empty) elsewhere."""
    model, flags = None, set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and value.strip() and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return cpuinfo()[1]

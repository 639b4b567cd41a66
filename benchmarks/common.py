"""Helpers shared by the benchmark scripts: writing results, timing anchors side by side."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def write_results(name: str, data: dict[str, Any], markdown: str) -> Path:
    """benchmarks/results/NAME.json and NAME.md (the Markdown is what the README quotes)."""
    from edgekit.validate.env import capture_environment

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name,
               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "environment": capture_environment(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown, flush=True)
    return RESULTS / f"{name}.md"


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"

"""The results table people read: rich on a terminal, Markdown for READMEs and CI."""

from __future__ import annotations

from typing import Any

COLUMNS = ("model", "format", "precision", "runtime", "batch", "top-1", "Δ top-1",
           "p50 ms", "p90 ms", "p99 ms", "throughput/s", "size", "valid")


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def row(record: dict[str, Any]) -> list[str]:
    lat, acc = record.get("latency", {}), record.get("accuracy", {})
    top1 = acc.get("top1")
    drop = acc.get("top1_drop_points")
    return [
        str(record.get("model", "")), str(record.get("format", "")), str(record.get("precision", "")),
        str(record.get("runtime", "")), str(record.get("batch", "")),
        f"{top1:.4f}" if top1 is not None else "-",
        f"{-drop + 0.0:+.2f}" if drop is not None else "-",
        f"{lat.get('p50_ms', float('nan')):.3f}", f"{lat.get('p90_ms', float('nan')):.3f}",
        f"{lat.get('p99_ms', float('nan')):.3f}",
        f"{lat.get('throughput_per_s', float('nan')):.0f}",
        _fmt_size(record.get("size_bytes")),
        "yes" if lat.get("valid") else "NO",
    ]


def print_records(records: list[dict[str, Any]], title: str = "") -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("model", "format", "precision", "runtime")
                         else "right")
    for r in records:
        table.add_row(*row(r))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in records]
    return "\n".join(lines) + "\n"


def print_compress_rows(rows: list[dict[str, Any]], title: str = "") -> None:
    """One row per step: params, MACs, top-1 (and whatever else a step reports)."""
    import sys

    from rich.console import Console
    from rich.table import Table

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    table = Table(title=title)
    for k in keys:
        table.add_column(k)
    base = rows[0] if rows else {}
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            if v is None:
                cells.append("-")
            elif k in ("macs", "params", "conv_macs") and base.get(k):
                cells.append(f"{v:,} ({base[k] / max(v, 1):.2f}×↓)" if r is not base else f"{v:,}")
            elif isinstance(v, float):
                cells.append(f"{v:.4f}")
            elif isinstance(v, list | tuple):
                cells.append(str(len(v)))  # e.g. prune's skipped layers: the count here
            else:
                cells.append(str(v))
        table.add_row(*cells)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


# ---------------------------------------------------------------- validation (gate) tables
GATE_COLUMNS = ("model", "artifact", "precision", "runtime", "batch", "top-1", "Δ top-1",
                "agree", "p50 ms", "p90 ms", "p99 ms", "throughput/s", "size", "valid", "gate")


def gate_row(record: dict[str, Any]) -> list[str]:
    """One validation record as table cells; p99 gets a † when too few samples back it."""
    lat, acc = record.get("latency", {}), record.get("accuracy", {})
    base = dict(zip(COLUMNS, row(record), strict=True))
    agree = (acc.get("fidelity") or {}).get("top1_agreement")
    gate = record.get("gate") or {}
    p99 = base["p99 ms"] + ("" if (lat.get("validity") or {}).get("p99_claimable", True) else "†")
    from pathlib import Path

    return [base["model"], record.get("artifact_name") or Path(str(record.get("artifact"))).name,
            base["precision"], base["runtime"], base["batch"], base["top-1"], base["Δ top-1"],
            f"{agree:.4f}" if agree is not None else "-", base["p50 ms"], base["p90 ms"], p99,
            base["throughput/s"], base["size"], base["valid"],
            "-" if not gate else ("PASS" if gate.get("passed") else "FAIL")]


def print_gate_records(records: list[dict[str, Any]], title: str = "") -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in GATE_COLUMNS:
        table.add_column(col, justify="left" if col in ("model", "artifact", "precision", "runtime")
                         else "right")
    for r in records:
        cells = gate_row(r)
        style = {"PASS": "green", "FAIL": "bold red"}.get(cells[-1])
        cells[-1] = f"[{style}]{cells[-1]}[/]" if style else cells[-1]
        table.add_row(*cells)
    Console(width=None if sys.stdout.isatty() else 220).print(table)


def gate_markdown(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(GATE_COLUMNS) + " |", "|" + "---|" * len(GATE_COLUMNS)]
    lines += ["| " + " | ".join(gate_row(r)) + " |" for r in records]
    return "\n".join(lines) + "\n"

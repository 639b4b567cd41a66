"""The results table people read: rich on a terminal, Markdown for READMEs and CI."""

from __future__ import annotations

from typing import Any

from edgekit.io.files import format_size
from edgekit.results.record import ResultRecord
from edgekit.runtimes.interference import (
    DISTURBED_MARK,
    disturbed_suffix,
    energy_cell,
    is_disturbed,
)

COLUMNS = ("model", "format", "precision", "runtime", "batch", "top-1", "Δ top-1",
           "p50 ms", "speed-up", "p90 ms", "p99 ms", "throughput/s", "size", "valid",
           "J/query", "machine")


def speedup_cell(record: ResultRecord) -> str:
    """p50 speed-up against the fp32 original on the same runtime and batch, e.g. 1.84×; with
    ⚠ when either side was measured while the machine was disturbed (issue 18)."""
    value = record.get("speedup")
    if value is None:
        return "-"
    return f"{value:.2f}×" + disturbed_suffix(speedup_disturbed(record), short=True)


def speedup_disturbed(record: ResultRecord) -> bool:
    """Whether the record's speed-up comes from a disturbed run (its own or the original's)."""
    return bool((record.get("speedup_vs") or {}).get("disturbed")) or is_disturbed(record)


def machine_cell(record: ResultRecord) -> str:
    """quiet / DISTURBED ⚠ / ? (not judged: no /proc, the sampler failed) / - (older record)."""
    lat = record.get("latency") or {}
    if "disturbed" not in lat:
        return "-"
    verdict = lat["disturbed"]
    reruns = lat.get("reruns") or 0
    note = f" ({reruns} rerun{'s' if reruns != 1 else ''})" if reruns else ""
    if verdict is None:
        return "?" + note
    return (f"DISTURBED {DISTURBED_MARK}" if verdict else "quiet") + note


# (issue 20) the mark on every time of an emulated device: its top-1 is real, its time is not.
EMULATED_MARK = " (emulated)"


def row(record: ResultRecord) -> list[str]:
    lat, acc = record.get("latency", {}), record.get("accuracy", {})
    top1 = acc.get("top1")
    drop = acc.get("top1_drop_points")
    emu = EMULATED_MARK if record.get("emulated") else ""
    return [
        str(record.get("model", "")), str(record.get("format", "")), str(record.get("precision", "")),
        str(record.get("runtime", "")), str(record.get("batch", "")),
        f"{top1:.4f}" if top1 is not None else "-",
        f"{-drop + 0.0:+.2f}" if drop is not None else "-",
        f"{lat.get('p50_ms', float('nan')):.3f}{emu}", speedup_cell(record) + emu,
        f"{lat.get('p90_ms', float('nan')):.3f}{emu}",
        f"{lat.get('p99_ms', float('nan')):.3f}{emu}",
        f"{lat.get('throughput_per_s', float('nan')):.0f}{emu}",
        format_size(record.get("size_bytes")),
        "emulated" if emu else ("yes" if lat.get("valid") else "NO"),
        energy_cell(lat.get("energy")) + (emu if lat.get("energy") else ""), machine_cell(record),
    ]


LEFT = ("model", "artifact", "format", "precision", "runtime", "step", "layer", "details",
        "PyTorch module", "ONNX node", "op", "candidate", "status", "why")

# Tables fit NARROW_WIDTH columns unless `--wide` (every command with --json has it) asks for
# every column: a table names the columns it keeps when narrow, the rest are left out (and a
# line under the table says which).
NARROW_WIDTH = 100
_wide = {"on": False}


def set_wide(on: bool) -> None:
    """Every column of every table from now on (`--wide`), else the narrow ones in 100 columns."""
    _wide["on"] = bool(on)


def is_wide() -> bool:
    import os

    return _wide["on"] or os.environ.get("EDGEKIT_WIDE") == "1"


def _print_table(columns: list[str] | tuple[str, ...], cell_rows: list[list[str]], title: str,
                 width: int = 200, narrow: tuple[str, ...] | None = None) -> None:
    """A rich table on the terminal: with `--wide`, every column (the terminal's width, `width`
    columns when piped); else the `narrow` columns (all when None) within 100 columns."""
    import shutil
    import sys

    from rich.console import Console
    from rich.table import Table

    wide = is_wide()
    keep = list(range(len(columns)))
    if not wide and narrow:
        keep = [i for i, c in enumerate(columns) if c in narrow]

    def build(widths: dict[int, int | None], whole: bool) -> Table:
        table = Table(title=title)
        for i, w in widths.items():
            col = columns[i]
            table.add_column(col, justify="left" if col in LEFT else "right",
                             overflow="fold", width=w, no_wrap=whole and col in NAME_COLUMNS)
        for cells in cell_rows:
            table.add_row(*(cells[i] for i in widths))
        return table

    tty = sys.stdout.isatty()
    if wide:  # every column: the names whole unless they alone fill the width
        console = Console(width=None if tty else width)
        names = sum(_widths(columns[i], cell_rows, i, True)[0] + 3 for i in keep
                    if columns[i] in NAME_COLUMNS)
        console.print(build(dict.fromkeys(keep), names + 3 * len(keep) < console.width))
        return
    limit = min(NARROW_WIDTH, shutil.get_terminal_size().columns) if tty else NARROW_WIDTH
    console = Console(width=limit)
    fitted = _fit(columns, cell_rows, keep, limit)
    console.print(build(fitted, True) if fitted is not None else build(dict.fromkeys(keep), False))
    keep = list(fitted or keep)
    hidden = [c for i, c in enumerate(columns) if i not in keep]
    if hidden:
        console.print(f"[dim]({', '.join(hidden)}: --wide shows them)[/dim]", highlight=False)


# (issue 27) a narrow table never breaks a model or artifact name across lines: the other
# columns shrink first, then are left out in this order (then right to left, the last column
# kept longest) until the names fit whole.
NAME_COLUMNS = ("model", "artifact")
DROP_FIRST = ("machine", "J/query", "throughput/s", "p90 ms", "size", "format", "batch", "valid",
              "p99 ms", "precision", "top-1", "top-1 %", "cost s", "agree", "runtime")


def _widths(header: str, cell_rows: list[list[str]], i: int, whole: bool) -> tuple[int, int]:
    """(narrowest, widest) a column prints: the narrowest breaks no word (`whole`: no cell) of its
    header or cells, the widest breaks none of its lines (markup left out)."""
    from rich.cells import cell_len
    from rich.text import Text

    texts = [header] + [Text.from_markup(c[i]).plain for c in cell_rows]
    widest = max(cell_len(t) for t in texts)
    return (widest if whole else max(cell_len(w) for t in texts for w in t.split() or [""]),
            widest)


def _fit(columns: list[str] | tuple[str, ...], cell_rows: list[list[str]], keep: list[int],
         width: int) -> dict[int, int] | None:
    """{column: width} of the fewest columns left out that lets the name columns print whole,
    and no other column break a word, within `width` (the others shrunk first); None when the
    table has no name column or even the names alone do not fit."""
    if not any(columns[i] in NAME_COLUMNS for i in keep):
        return None
    keep = list(keep)
    order = [i for c in DROP_FIRST for i in keep if columns[i] == c]
    order += [i for i in reversed(keep[:-1]) if i not in order and columns[i] not in NAME_COLUMNS]
    order += [keep[-1]] if keep[-1] not in order and columns[keep[-1]] not in NAME_COLUMNS else []
    span = {i: _widths(columns[i], cell_rows, i, columns[i] in NAME_COLUMNS) for i in keep}
    # each column: one space either side and a rule, plus the table's closing rule
    while sum(span[i][0] + 3 for i in keep) + 1 > width:
        if not order:
            return None
        keep.remove(order.pop(0))
    widths = {i: span[i][1] for i in keep}
    excess = sum(w + 3 for w in widths.values()) + 1 - width
    while excess > 0:  # shrink the column with the most room above its narrowest
        i = max(keep, key=lambda k: widths[k] - span[k][0])
        widths[i] -= 1
        excess -= 1
    return widths


def _markdown_table(columns: list[str] | tuple[str, ...], cell_rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cells) + " |" for cells in cell_rows]
    return "\n".join(lines) + "\n"


NARROW_COLUMNS = ("model", "precision", "runtime", "batch", "top-1", "Δ top-1", "p50 ms",
                  "speed-up", "p99 ms", "valid")


def print_records(records: list[ResultRecord], title: str = "") -> None:
    _print_table(COLUMNS, [row(r) for r in records], title, narrow=NARROW_COLUMNS)
    print_disturbed(records)


def disturbed_lines(records: list[ResultRecord]) -> list[str]:
    """One line per record measured while the machine was disturbed: which, and why."""
    from pathlib import Path

    out = []
    for r in records:
        lat = r.get("latency") or {}
        if lat.get("disturbed"):
            name = r.get("artifact_name") or Path(str(r.get("artifact"))).name
            out.append(f"{DISTURBED_MARK} {name} on {r.get('runtime')}, batch {r.get('batch')}: "
                       + "; ".join(lat.get("disturbed_reasons") or [])
                       + f" (kept after {lat.get('reruns') or 0} reruns)")
    return out


def print_disturbed(records: list[ResultRecord]) -> None:
    import sys

    for line in disturbed_lines(records):
        print(line, file=sys.stderr)


def markdown(records: list[ResultRecord]) -> str:
    return _markdown_table(COLUMNS, [row(r) for r in records])


COMPRESS_COLUMNS = ("step", "layer", "macs", "params", "top1")
# Every drop is against the ORIGINAL model; the step's own (against the row scored before it)
# stands beside it. Points of top-1; positive = lost.
COMPRESS_DROPS = {"drop_vs_original": "drop", "step_drop": "step drop"}
COMPRESS_HIDDEN = ("note", "conv_macs", "drop_pts")  # drop_pts: the int8 step's, in --json


def print_compress_rows(rows: list[dict[str, Any]], title: str = "") -> None:
    """One row per step (and per layer a step reports on): MACs and params with their ratio to
    the original, top-1, and everything else the step said as `key value` details."""
    base = rows[0] if rows else {}

    def cell(r: ResultRecord, k: str) -> str:
        v = r.get(k)
        if v is None:
            return "-"
        if k in ("macs", "params") and base.get(k) and r is not base:
            return f"{v:,} ({base[k] / max(v, 1):.2f}×↓)"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, list | tuple):
            return str(len(v))  # e.g. prune's skipped layers: the count here
        return str(v)

    def details(r: ResultRecord) -> str:
        rest = [f"{k} {r[k]:.4g}" if isinstance(r[k], float) else f"{k} {cell(r, k)}" for k in r
                if k not in COMPRESS_COLUMNS and k not in COMPRESS_DROPS
                and k not in COMPRESS_HIDDEN and r[k] is not None]
        return "; ".join(rest + ([str(r["note"])] if r.get("note") else []))

    def drop(r: dict[str, Any], k: str) -> str:
        return "-" if r.get(k) is None else f"{r[k] + 0.0:.2f}"

    shown = [k for k in COMPRESS_COLUMNS if k != "layer" or any(r.get(k) for r in rows)]
    drops = [k for k in COMPRESS_DROPS if any(r.get(k) is not None for r in rows)]
    columns = (*shown, *(COMPRESS_DROPS[k] for k in drops), "details")
    _print_table(columns, [[*(cell(r, k) for k in shown), *(drop(r, k) for k in drops),
                            details(r)] for r in rows], title)
    if drops:
        from rich.console import Console

        Console(width=NARROW_WIDTH).print(
            "[dim]drop: top-1 points lost against the original; step drop: against the row "
            "scored before it[/dim]", highlight=False)


# ---------------------------------------------------------------- validation (gate) tables
GATE_COLUMNS = ("model", "artifact", "precision", "runtime", "batch", "top-1", "Δ top-1",
                "agree", "p50 ms", "speed-up", "p90 ms", "p99 ms", "throughput/s", "size", "valid",
                "J/query", "machine", "gate")
GATE_NARROW = ("model", "artifact", "precision", "runtime", "batch", "Δ top-1", "agree",
               "p50 ms", "speed-up", "gate")
WINNER = "★"  # marks the gate cell of the artifact that decides (the fastest within the budget)


def gate_verdict(cell: str) -> str:
    """PASS / FAIL / - of a gate cell, without the winner mark."""
    return cell.replace(WINNER, "").strip()


def gate_row(record: ResultRecord) -> list[str]:
    """One validation record as table cells; p99 gets a † when too few samples back it."""
    lat, acc = record.get("latency", {}), record.get("accuracy", {})
    base = dict(zip(COLUMNS, row(record), strict=True))
    agree = (acc.get("fidelity") or {}).get("top1_agreement")
    gate = record.get("gate") or {}
    p99 = base["p99 ms"] + ("" if (lat.get("validity") or {}).get("p99_claimable", True) else "†")
    from pathlib import Path

    return [base["model"], record.get("artifact_name") or Path(str(record.get("artifact"))).name,
            base["precision"], base["runtime"], base["batch"], base["top-1"], base["Δ top-1"],
            f"{agree:.4f}" if agree is not None else "-", base["p50 ms"], base["speed-up"],
            base["p90 ms"], p99, base["throughput/s"], base["size"], base["valid"],
            base["J/query"], base["machine"],
            ("-" if not gate else ("PASS" if gate.get("passed") else "FAIL"))
            + (f" {WINNER}" if record.get("decisive") else "")]


def print_gate_records(records: list[ResultRecord], title: str = "") -> None:
    cell_rows = []
    for r in records:
        cells = gate_row(r)
        style = {"PASS": "green", "FAIL": "bold red"}.get(gate_verdict(cells[-1]))
        cells[-1] = f"[{style}]{cells[-1]}[/]" if style else cells[-1]
        cell_rows.append(cells)
    _print_table(GATE_COLUMNS, cell_rows, title, width=220, narrow=GATE_NARROW)
    print_disturbed(records)


def gate_markdown(records: list[ResultRecord]) -> str:
    return _markdown_table(GATE_COLUMNS, [gate_row(r) for r in records])


# ---------------------------------------------------------------- per-layer profiles
PROFILE_COLUMNS = ("layer", "PyTorch module", "ONNX node", "op", "precision", "ms", "share")


def profile_rows(record: ResultRecord, top: int | None = None) -> list[list[str]]:
    """One layer_profile record's layers as cells, slowest first."""
    layers = (record.get("profile") or {}).get("layers") or []
    return [[str(r["layer"]), r.get("module") or "-", r.get("onnx_node") or "(runtime's own)",
             str(r.get("op") or "-"), str(r.get("precision") or "?"), f"{r['ms']:.4f}",
             f"{100 * r['share']:.1f}%"] for r in layers[:top]]


def profile_title(record: ResultRecord) -> str:
    p = record.get("profile") or {}
    return (f"{record.get('artifact_name')} on {record.get('runtime')} ({record.get('device')}), "
            f"batch {p.get('batch')}: {p.get('total_ms', 0):.4f} ms in layers, median of "
            f"{p.get('runs')} runs")


def print_layer_profile(record: ResultRecord, top: int | None = None) -> None:
    _print_table(PROFILE_COLUMNS, profile_rows(record, top), profile_title(record), width=200)


# ---------------------------------------------------------------- fleets (issue 17)
FLEET_COLUMNS = ("device", "where", "status", "decides", "records", "s", "why")


def print_fleet_rows(rows: list[list[str]], title: str = "") -> None:
    """One row per device of a fleet validation (edgekit/cli/fleet.py)."""
    _print_table(FLEET_COLUMNS, rows, title, width=220)

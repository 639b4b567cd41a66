"""Progress bars (rich, on stderr) for anything that takes more than a couple of seconds."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr_console = Console(stderr=True)


def say(message: str, tag: str | None = None) -> None:
    """One line on stderr saying what edgekit is doing: `[tag] message`, or `… message` without
    a tag (dimmed on a terminal). The default sink of edgekit.events, the one channel the remote
    jobs, the fleet, optimize (`optimize`) and recipe runs (`edgekit run`) say things through.
    The message is printed as given: no rich markup or emoji codes read in it, no line breaks
    added."""
    from rich.markup import escape

    line = f"[dim]{escape(f'[{tag}]')}[/dim] {escape(message)}" if tag \
        else f"[dim]… {escape(message)}[/dim]"
    stderr_console.print(line, highlight=False, emoji=False, soft_wrap=True)


# --json (every command that has it) draws no live bars: stdout is for the JSON, and what stderr
# gets is the plain lines below. EDGEKIT_FORCE_PROGRESS draws bars even without a terminal.
_mode = {"plain": False}


def set_plain(on: bool) -> None:
    """No live bars from now on (`--json`): each stage says itself in a few plain lines."""
    _mode["plain"] = bool(on)


def _enabled() -> bool:
    """Live bars: on a terminal (stdout AND stderr: output piped to a file or a pager gets the
    plain lines), never under --json or EDGEKIT_NO_PROGRESS; EDGEKIT_FORCE_PROGRESS forces them."""
    if os.environ.get("EDGEKIT_FORCE_PROGRESS"):
        return True
    if _mode["plain"] or os.environ.get("EDGEKIT_NO_PROGRESS", ""):
        return False
    return sys.stderr.isatty() and sys.stdout.isatty()


# Plain lines: the start, each quarter of a stage with a known total, and the end.
PLAIN_STEPS = 4


def _fields(fields: dict[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def live() -> bool:
    """Whether progress bars are drawn (stderr is a terminal, EDGEKIT_NO_PROGRESS unset)."""
    return _enabled()


@contextlib.contextmanager
def _plain(description: str, total: float | None) -> Iterator[Callable[..., None]]:
    """Progress without a terminal: a few lines per stage (start, every quarter, end), so a log
    in CI says what is happening and a long stage is never silent, without bar noise."""
    from rich.markup import escape

    def line(text: str) -> None:
        stderr_console.print(f"[dim]{escape(text)}[/dim]", highlight=False, soft_wrap=True)

    line(f"… {description}")
    state: dict[str, Any] = {"done": 0.0, "said": 0, "fields": {}}

    def advance_plain(n: float = 1, **fields: object) -> None:
        state["done"] += n
        state["fields"].update(fields)
        if total:
            quarter = int(PLAIN_STEPS * state["done"] / total)
            if state["said"] < quarter < PLAIN_STEPS:
                state["said"] = quarter
                tail = _fields(state["fields"])
                line(f"… {description} {100 * quarter // PLAIN_STEPS}%" + (f" {tail}" if tail
                                                                           else ""))

    yield advance_plain
    tail = _fields(state["fields"])
    line(f"✓ {description}" + (f" {tail}" if tail else ""))


@contextlib.contextmanager
def progress(description: str, total: float | None) -> Iterator[Callable[..., None]]:
    """Yields `advance(n=1, **fields)`; `fields` show after the bar (e.g. loss=0.31).

    The one progress channel of edgekit (distillation, calibration, evaluation, timing): on a
    terminal a rich bar on stderr; otherwise (piped, --json) a few plain lines per stage.
    """
    if not _enabled():
        with _plain(description, total) as advance_plain:
            yield advance_plain
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=stderr_console, transient=False) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: float = 1, **fields: object) -> None:
            bar.update(task, advance=n, **({"info": _fields(fields)} if fields else {}))

        yield advance

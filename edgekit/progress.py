"""Progress bars (rich, on stderr) for anything that takes more than a couple of seconds."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator

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
    a tag (dimmed on a terminal). The default `on_event` of the remote jobs (`say`), optimize
    (`tagged("optimize")`) and recipe runs (`tagged("edgekit run")`). The message is printed as
    given: no rich markup or emoji codes read in it, no line breaks added."""
    from rich.markup import escape

    line = f"[dim]{escape(f'[{tag}]')}[/dim] {escape(message)}" if tag \
        else f"[dim]… {escape(message)}[/dim]"
    stderr_console.print(line, highlight=False, emoji=False, soft_wrap=True)


def tagged(tag: str) -> Callable[[str], None]:
    """`say` with `tag` before each message."""
    return functools.partial(say, tag=tag)


def _enabled() -> bool:
    return os.environ.get("EDGEKIT_NO_PROGRESS", "") == "" and sys.stderr.isatty() or bool(
        os.environ.get("EDGEKIT_FORCE_PROGRESS"))


def live() -> bool:
    """Whether progress bars are drawn (stderr is a terminal, EDGEKIT_NO_PROGRESS unset)."""
    return _enabled()


@contextlib.contextmanager
def progress(description: str, total: float | None) -> Iterator[callable]:
    """Yields `advance(n=1, **fields)`; `fields` show after the bar (e.g. loss=0.31).

    On a terminal it draws a bar; otherwise it prints one line at start and end, so logs in CI
    still say what is happening without carriage-return noise.
    """
    if not _enabled():
        stderr_console.print(f"[dim]… {description}[/dim]", highlight=False)
        state = {"fields": {}}

        def advance_plain(n: float = 1, **fields: object) -> None:
            state["fields"].update(fields)

        yield advance_plain
        tail = " ".join(f"{k}={v}" for k, v in state["fields"].items())
        stderr_console.print(f"[dim]✓ {description} {tail}[/dim]", highlight=False)
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=stderr_console, transient=False) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: float = 1, **fields: object) -> None:
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            bar.update(task, advance=n, **({"info": info} if fields else {}))

        yield advance

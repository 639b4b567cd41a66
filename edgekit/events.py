"""The one channel for what edgekit says while it works (a remote job copying files, a recipe
stage skipped, optimize dropping a choice, a fleet device done): `emit(message, tag)`.

Where the lines go is the current *sink*, held in a context variable: by default
`edgekit.progress.say`'s line on stderr (`[tag] message`, or `… message` without a tag). A caller
redirects it for what runs inside a `with`:

    with events.capture() as lines:      # a test, or an API user who wants the lines
        validate_fleet(job, devices)
    with events.sink(logger.info):       # any callable taking one line ("[tag] message")
        run_recipe("recipe.yaml")

Sinks nest; leaving the `with` puts the previous one back. A plain thread starts with the
default sink (context variables do not follow a thread): work handed to threads is wrapped
with `carried(fn)`, which runs it with the sink of the thread that wrapped it. On a Ray node (or
any other process) the default sink of that process applies; the executor that waits for the
node's answers says what came back, here (edgekit.executors.ray).

Standard library only, and nothing heavy imported: the ground floor."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

Sink = Callable[[str], None]
F = TypeVar("F", bound=Callable[..., Any])

# None: the default sink (progress.say on stderr); a callable: what a caller installed.
_SINK: contextvars.ContextVar[Sink | None] = contextvars.ContextVar("edgekit_sink", default=None)
_ONCE: set[tuple[str | None, str]] = set()  # what emit_once said already (in this process)
_ONCE_LOCK = threading.Lock()


def line(message: str, tag: str | None = None) -> str:
    """What a sink receives: `[tag] message`, or the message alone."""
    return f"[{tag}] {message}" if tag else message


def emit(message: str, tag: str | None = None) -> None:
    """Say `message` (with `tag`, e.g. "optimize") through the current sink."""
    current = _SINK.get()
    if current is None:
        from edgekit.progress import say  # lazily: rich

        say(message, tag)
    else:
        current(line(message, tag))


def emit_once(message: str, tag: str | None = None) -> None:
    """`emit`, unless the same message (and tag) was said before in this process."""
    with _ONCE_LOCK:
        if (tag, message) in _ONCE:
            return
        _ONCE.add((tag, message))
    emit(message, tag)


def discard(_line: str) -> None:
    """A sink that drops every line."""


@contextlib.contextmanager
def sink(target: Sink) -> Iterator[None]:
    """Send every line emitted inside the `with` (in this thread, and in threads given work
    through `carried`) to `target`."""
    token = _SINK.set(target)
    try:
        yield
    finally:
        _SINK.reset(token)


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """The lines emitted inside the `with`, in order, instead of on stderr."""
    lines: list[str] = []
    with sink(lines.append):
        yield lines


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Nothing on stderr (the Python API's rule): lines that would reach the default sink are
    dropped; a sink the caller installed keeps receiving them."""
    with sink(discard) if _SINK.get() is None else contextlib.nullcontext():
        yield


def carried(fn: F) -> F:
    """`fn`, to run in another thread with the sink current here, now (a thread pool's work)."""
    current = _SINK.get()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = _SINK.set(current)
        try:
            return fn(*args, **kwargs)
        finally:
            _SINK.reset(token)

    return run  # type: ignore[return-value]

"""One event channel (edgekit.events): what edgekit says goes to the current sink (by default
progress.say's line on stderr), a caller redirects it with a `with`, work handed to threads
carries it, and no function of edgekit takes an `on_event` callback or has a `_say` of its own."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import edgekit
from edgekit import events


def test_the_default_sink_writes_progress_say_s_line(capsys) -> None:
    from edgekit.progress import say

    events.emit("job 1/2 on [bench]: :smile: done")
    events.emit("trial [3] kept", "optimize")
    events.emit("stage quantize " + "x" * 120, tag="edgekit run")
    emitted = capsys.readouterr().err
    say("job 1/2 on [bench]: :smile: done")
    say("trial [3] kept", "optimize")
    say("stage quantize " + "x" * 120, tag="edgekit run")
    assert emitted == capsys.readouterr().err
    assert emitted.split("\n") == ["… job 1/2 on [bench]: :smile: done",
                                   "[optimize] trial [3] kept",
                                   "[edgekit run] stage quantize " + "x" * 120, ""]


def test_capture_and_nested_sinks_put_the_previous_one_back(capsys) -> None:
    seen: list[str] = []
    with events.sink(seen.append):
        events.emit("outer 1", "optimize")
        with events.capture() as inner:
            events.emit("inner")
            with events.sink(events.discard):
                events.emit("dropped")
            events.emit("inner again", "edgekit run")
        events.emit("outer 2")
    events.emit("on stderr")
    assert seen == ["[optimize] outer 1", "outer 2"]
    assert inner == ["inner", "[edgekit run] inner again"]
    assert capsys.readouterr().err == "… on stderr\n"


def test_quiet_drops_stderr_lines_but_not_a_callers_sink(capsys) -> None:
    with events.quiet():  # the Python API's optimize
        events.emit("not on stderr", "optimize")
    with events.capture() as lines, events.quiet():
        events.emit("kept", "optimize")
    assert capsys.readouterr().err == ""
    assert lines == ["[optimize] kept"]


def test_emit_once_says_a_message_once_per_process(monkeypatch) -> None:
    monkeypatch.setattr(events, "_ONCE", set())
    with events.capture() as lines:
        for _ in range(3):
            events.emit_once("note: 6 greyscale images are converted to RGB")
        events.emit_once("note: 6 greyscale images are converted to RGB", "other")
    assert lines == ["note: 6 greyscale images are converted to RGB",
                     "[other] note: 6 greyscale images are converted to RGB"]


def test_a_plain_thread_gets_the_default_sink_and_carried_work_the_callers(capsys) -> None:
    """Context variables do not follow a thread: a bare thread says on stderr (never into a
    sink of another thread, and never lost); work wrapped with `carried` (the fleet's and
    optimize's per-device threads) says into the sink of the thread that wrapped it."""
    from edgekit.validate.fleet import per_device

    with events.capture() as lines:
        bare = threading.Thread(target=events.emit, args=("from a bare thread",))
        bare.start()
        bare.join()
        wrapped = threading.Thread(target=events.carried(events.emit),
                                   args=("from a carried thread", "optimize"))
        wrapped.start()
        wrapped.join()
        names = per_device(["cpu-a", "cpu-b", "cpu-c"],
                           lambda name: events.emit(f"{name}: pass") or name)
    assert names == ["cpu-a", "cpu-b", "cpu-c"]
    assert lines[0] == "[optimize] from a carried thread"
    assert sorted(lines[1:]) == ["cpu-a: pass", "cpu-b: pass", "cpu-c: pass"]
    assert capsys.readouterr().err == "… from a bare thread\n"
    events.emit("after")  # the wrapped threads put nothing into this thread's context
    assert capsys.readouterr().err == "… after\n"


# Where a public Python API documents an `on_event` callback, it may keep one as a thin adapter
# that installs a sink (edgekit.events.sink). None does today.
ON_EVENT_ADAPTERS: set[str] = set()


def _functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda]]:
    root = Path(edgekit.__file__).parent
    return [(f"{path.relative_to(root).as_posix()}:{getattr(node, 'name', '<lambda>')}", node)
            for path in sorted(root.rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)]


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    return {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}


def test_no_function_takes_an_on_event_callback_or_has_its_own_say() -> None:
    taking = sorted(name for name, node in _functions() if "on_event" in _params(node))
    assert taking == sorted(ON_EVENT_ADAPTERS)
    # nor a `say=` callback (zoo.teacher.TeacherLogits and zoo.accel.plan_training took one)
    assert sorted(name for name, node in _functions() if "say" in _params(node)) == []
    own = sorted(name for name, node in _functions()
                 if getattr(node, "name", "") in ("_say", "_say_once", "say")
                 and name != "progress.py:say")
    assert own == []



# Where a line may still go to stderr (or stdout) by itself, outside cli/ (the commands' own output)
# and progress.py (the default sink and the bars): "path:function" -> why.
OWN_STDERR = {
    "results/table.py:print_disturbed": "the footnotes of a result table (which runs were "
    "disturbed), printed right under the table that the CLI's print_records/print_gate_records "
    "draw; a sink would separate them from their table",
    "remote/agent.py:_become_runner": "the lean agent's detached runner on a device, whose stderr "
    "is its job log (no edgekit sink exists in that process)",
    "validate/device_program.py:main": "the device program's own command line (usage and a "
    "refused input, exit 2), read by the executor that ran it",
}


def _writes_by_itself(call: ast.Call) -> bool:
    """print(...), sys.stderr.write(...) or stderr_console.print(...)."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id == "print"
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return (func.value.id, func.attr) == ("stderr_console", "print")
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute):
        inner = func.value
        return isinstance(inner.value, ast.Name) and inner.value.id == "sys" \
            and inner.attr == "stderr" and func.attr == "write"
    return False


def test_nothing_outside_the_cli_prints_lines_of_its_own() -> None:
    """What edgekit says goes through events.emit (a caller's sink gets it, the API's quiet()
    drops it): no bare print(), sys.stderr.write() or stderr_console.print() outside cli/ and
    progress.py but the justified OWN_STDERR."""
    root = Path(edgekit.__file__).parent
    found: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root).as_posix()
        if where.startswith("cli/") or where == "progress.py":
            continue
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                found |= {f"{where}:{function.name}" for call in ast.walk(function)
                          if isinstance(call, ast.Call) and _writes_by_itself(call)}
    assert sorted(found) == sorted(OWN_STDERR)


def test_the_teachers_notes_and_announced_lines_reach_the_callers_sink(tmp_path,
                                                                      monkeypatch) -> None:
    """The teacher's notes (distill's) and a command's announced lines (preprocessing, calib,
    budget) were written to stderr by functions of their own; now a caller's sink gets them.
    announce still says a line once per command, and nothing outside a command."""
    from torch import nn

    from edgekit.io.models import announce, preprocessing_from_cli
    from edgekit.zoo.accel import TrainPlan
    from edgekit.zoo.teacher import TeacherLogits

    monkeypatch.setenv("EDGEKIT_TEACHER_CACHE_MB", "0")
    with events.capture() as lines:
        TeacherLogits(nn.Linear(4, 2)).start(TrainPlan(), {"data": "x"}, rows=4, epochs=1)
        announce("calib: outside a command")
        with preprocessing_from_cli({}):
            announce("calib: none given")
            announce("calib: none given")
    assert lines == ["note: the teacher runs on the fly (the cache is off "
                     "($EDGEKIT_TEACHER_CACHE_MB=0))", "calib: none given"]

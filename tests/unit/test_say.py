"""One progress channel: the remote jobs, optimize and recipe runs print their default events
through edgekit.progress.say (no `_say` of their own), and a message is printed as given."""

from __future__ import annotations

import ast
from pathlib import Path

import edgekit


def test_say_prints_the_message_as_given_with_its_tag(capsys) -> None:
    from edgekit.progress import say, tagged

    say("job 1/2 on [bench]: :smile: done")
    tagged("optimize")("trial [3] kept")
    tagged("edgekit run")("stage quantize " + "x" * 120)
    err = capsys.readouterr().err
    assert err.split("\n") == ["… job 1/2 on [bench]: :smile: done", "[optimize] trial [3] kept",
                               "[edgekit run] stage quantize " + "x" * 120, ""]


def test_the_default_event_printers_are_the_one_channel() -> None:
    from edgekit import recipe_run
    from edgekit.optimize import search
    from edgekit.progress import say
    from edgekit.remote import alternate, job

    assert job.sync_blobs.__defaults__[-1] is say
    assert alternate.alternate_remote.__kwdefaults__["on_event"] is say
    assert search._say.func is say and search._say.keywords == {"tag": "optimize"}
    assert recipe_run._say.func is say and recipe_run._say.keywords == {"tag": "edgekit run"}
    own = [f"{path.relative_to(Path(edgekit.__file__).parent).as_posix()}:{node.name}"
           for path in sorted(Path(edgekit.__file__).parent.rglob("*.py"))
           for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, ast.FunctionDef) and node.name == "_say"]
    assert own == []

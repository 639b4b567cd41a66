"""progress.say, the default sink of edgekit.events (tests/unit/test_events.py): a message is
printed as given, with its tag."""

from __future__ import annotations


def test_say_prints_the_message_as_given_with_its_tag(capsys) -> None:
    from edgekit.progress import say

    say("job 1/2 on [bench]: :smile: done")
    say("trial [3] kept", tag="optimize")
    say("stage quantize " + "x" * 120, tag="edgekit run")
    err = capsys.readouterr().err
    assert err.split("\n") == ["… job 1/2 on [bench]: :smile: done", "[optimize] trial [3] kept",
                               "[edgekit run] stage quantize " + "x" * 120, ""]

"""Long work is never silent (issue 27): distillation, calibration and evaluation show rich
progress bars on a terminal (stdout and stderr both terminals, driven here through two
pseudo-terminals); under --json, or piped, no bar is drawn and each stage says itself in a few
plain lines on stderr (start, every quarter, end), so stdout stays pure JSON."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import edgekit, edgekit_on_terminal, fashion_train_subset

BAR = "━"  # rich's bar segments


def test_plain_lines_say_each_quarter_of_a_stage(capsys, monkeypatch):
    from edgekit import progress as p

    monkeypatch.delenv("EDGEKIT_FORCE_PROGRESS", raising=False)
    with p.progress("Stage", total=8) as advance:
        for i in range(8):
            advance(1, loss=f"0.{i}")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["… Stage", "… Stage 25% loss=0.1", "… Stage 50% loss=0.3",
                     "… Stage 75% loss=0.5", "✓ Stage loss=0.7"]


def _compress_args(zoo_checkpoint, tmp_path, out: str) -> list[str]:
    train = fashion_train_subset(tmp_path, 300)
    return ["compress", str(zoo_checkpoint("lenet5")), "--prune", "0.3", "--distill-epochs", "1",
            "--train", str(train), "--eval", "fashion-mnist:test", "--eval-limit", "200",
            "--int8", "--calib-size", "64", "--max-drop", "100", "-o", str(tmp_path / out)]


@pytest.mark.slow
def test_compress_on_a_terminal_draws_bars_and_json_draws_none(zoo_checkpoint, tmp_path):
    args = _compress_args(zoo_checkpoint, tmp_path, "tty")
    code, out, err = edgekit_on_terminal(*args)
    assert code == 0, err
    # a bar per stage, each run to its end (rich's M/N column)
    for stage, done in (("Evaluating the original lenet5 on 200 images", "200/200"),
                        ("Distilling lenet5", None), ("Calibrating (percentile, 64 samples)",
                                                      "64/64")):
        lines = [line for line in re.split(r"[\r\n]+", err) if stage in line]
        assert lines and any(BAR in line for line in lines), (stage, err[-2000:])
        if done:
            assert any(done in line for line in lines), (stage, lines[-1:])
    assert "… Distilling" not in err  # the plain lines are for non-terminals only
    assert "edgekit compress" in out and "step drop" in out  # the table on stdout

    code, out, err = edgekit_on_terminal(*args[:-1], str(tmp_path / "json"), "--json")
    assert code == 0, err
    assert BAR not in err and BAR not in out
    assert "… Distilling lenet5" in err and "✓ Distilling lenet5" in err
    assert "✓ Calibrating (percentile, 64 samples)" in err
    rows = json.loads(out)["rows"]
    assert [r["step"] for r in rows][:3] == ["original", "prune", "distill"]


@pytest.mark.slow
def test_piped_compress_says_each_stage_in_plain_lines(zoo_checkpoint, tmp_path):
    proc = edgekit(*_compress_args(zoo_checkpoint, tmp_path, "piped"))
    assert proc.returncode == 0, proc.stderr
    assert BAR not in proc.stderr
    for stage in ("Evaluating the original lenet5 on 200 images", "Distilling lenet5",
                  "Calibrating (percentile, 64 samples)"):
        assert f"… {stage}" in proc.stderr and f"✓ {stage}" in proc.stderr, stage
    assert re.search(r"✓ Evaluating the original lenet5 on 200 images top1=0\.\d{4}",
                     proc.stderr)

"""`edgekit compress --max-drop` bounds the whole chain against the original (issue 15, part
4): a chain that already spent the budget before int8 fails (exit 1) naming the step that spent
it, and int8 gets what prune/dwsep/distill left, on a tiny trained LeNet-5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import edgekit

ROOT = Path(__file__).resolve().parent.parent.parent
CALIB = ROOT / "calibration" / "fashion-mnist-512.npz"
EVAL = ("--eval", "fashion-mnist:test", "--eval-limit", "500")


def test_quant_budget_is_what_the_chain_left():
    from edgekit.quant.budget import Budget

    b = Budget(max_drop=1.0, original_top1=0.897)
    assert b.spent_points(0.8915) == pytest.approx(0.55)
    assert b.allowed_points(0.8915) == pytest.approx(0.45)  # int8 may drop what is left
    assert b.allowed_points(0.8615) == pytest.approx(-2.55)  # already spent: nothing left
    rel = Budget(max_drop_rel=0.01, original_top1=0.9)  # 1% of the original's top-1: 0.9 pt
    assert rel.allowed_points(0.895) == pytest.approx(0.4)
    assert Budget(max_drop=1.0).allowed_points(0.5) == 1.0  # no original: the step alone


def test_a_chain_that_spent_the_budget_fails_and_names_the_step(zoo_checkpoint, tmp_path):
    out = tmp_path / "out"
    proc = edgekit("compress", str(zoo_checkpoint("lenet5")), "--prune", "0.8",
                   "--distill-epochs", "0", "--int8", "--calib", str(CALIB), "--calib-size", "64",
                   *EVAL, "--max-drop", "0.5", "-o", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "the compression chain misses the accuracy budget" in proc.stderr
    assert "prune spent the most" in proc.stderr and "Top-1 by step: original" in proc.stderr
    # It failed before exporting: no compressed model, no int8 model to take for a good one.
    assert not (out / "model.onnx").exists() and not (out / "model.int8.onnx").exists()
    # Without int8 the same budget bounds the chain too (it used to be ignored without --int8).
    proc = edgekit("compress", str(zoo_checkpoint("lenet5")), "--prune", "0.8",
                   "--distill-epochs", "0", *EVAL, "--max-drop", "0.5", "-o", str(tmp_path / "b"))
    assert proc.returncode == 1 and "prune spent the most" in proc.stderr


def test_int8_gets_the_budget_the_chain_left(zoo_checkpoint, tmp_path):
    out = tmp_path / "out"
    proc = edgekit("compress", str(zoo_checkpoint("lenet5")), "--prune", "0.2",
                   "--distill-epochs", "0", "--int8", "--calib", str(CALIB), "--calib-size", "128",
                   *EVAL, "--max-drop", "6.0", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    original = next(r for r in rows if r["step"] == "original")["top1"]
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    metrics = next(s for s in stages if s["stage"] == "quantize-int8")["metrics"]
    budget, acc = metrics["budget"], metrics["accuracy"]
    assert budget["original_top1"] == pytest.approx(original)
    spent = 100 * (original - acc["fp32_top1"])
    assert budget["spent_before_int8_points"] == pytest.approx(spent)
    assert budget["allowed_points"] == pytest.approx(6.0 - spent)
    assert "whole chain" in budget["scope"] and budget["held"] is True
    # The final artifact is within the budget of the original, not just of its fp32 parent.
    assert 100 * (original - acc["int8_top1"]) <= 6.0 + 1e-9

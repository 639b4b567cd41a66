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
    from edgekit.quant.budget import DropBudget

    b = DropBudget(max_drop=1.0, original_top1=0.897)
    assert b.spent_points(0.8915) == pytest.approx(0.55)
    assert b.allowed_points(0.8915) == pytest.approx(0.45)  # int8 may drop what is left
    assert b.allowed_points(0.8615) == pytest.approx(-2.55)  # already spent: nothing left
    rel = DropBudget(max_drop_rel=0.01, original_top1=0.9)  # 1% of the original's top-1: 0.9 pt
    assert rel.allowed_points(0.895) == pytest.approx(0.4)
    assert DropBudget(max_drop=1.0).allowed_points(0.5) == 1.0  # no original: the step alone


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


def test_without_max_drop_the_default_budget_of_one_point_holds(zoo_checkpoint, tmp_path):
    """(issue 27) compress without --max-drop is held to 1.0 point against the original, said
    on stderr: a chain that spends more fails (exit 1) before exporting, naming the default."""
    out = tmp_path / "out"
    proc = edgekit("compress", str(zoo_checkpoint("lenet5")), "--prune", "0.8",
                   "--distill-epochs", "0", *EVAL, "-o", str(out))
    assert "budget: 1 point against the original (the default" in proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "drop ≤ 1 points against the original" in proc.stderr
    assert "loosen --max-drop (default 1)" in proc.stderr
    assert not (out / "model.onnx").exists()
    # Without --eval nothing measures top-1: no budget, and it says so.
    proc = edgekit("compress", str(zoo_checkpoint("lenet5")), "--prune", "0.8",
                   "--distill-epochs", "0", "-o", str(tmp_path / "noeval"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "budget: not checked (no --eval" in proc.stderr


def test_every_drop_is_against_the_original_with_the_step_beside_it(zoo_checkpoint, tmp_path):
    """(issue 27) The int8 row's drop is against the ORIGINAL, not the fp32 model it quantized
    (after prune that is another model); the step's own drop stands beside it, in the table,
    in --json and in the manifest's stages."""
    out = tmp_path / "out"
    args = ["compress", str(zoo_checkpoint("lenet5")), "--prune", "0.3", "--distill-epochs", "0",
            "--int8", "--calib", str(CALIB), "--calib-size", "64", *EVAL, "--max-drop", "100"]
    proc = edgekit(*args, "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["step"]: r for r in json.loads(proc.stdout)["rows"]}
    original = rows["original"]["top1"]
    fp32, int8 = rows["fp32 onnx on onnxruntime"], rows["int8 onnxruntime"]
    for row in (rows["prune"], fp32, int8):
        assert row["drop_vs_original"] == pytest.approx(100 * (original - row["top1"]), abs=0.006)
    assert rows["prune"]["step_drop"] == rows["prune"]["drop_vs_original"]
    assert int8["step_drop"] == pytest.approx(100 * (fp32["top1"] - int8["top1"]), abs=0.006)
    stages = {s["stage"]: s for s in json.loads((out / "manifest.json").read_text())["stages"]}
    assert stages["compress"]["config"]["budget"] == {"max_drop": 100.0, "max_drop_rel": None,
                                                      "against": "original"}
    assert stages["prune"]["metrics"]["rows"][0]["drop_vs_original"] == \
        rows["prune"]["drop_vs_original"]
    recorded = {r["step"]: r for r in stages["quantize-int8"]["metrics"]["rows"]}
    assert recorded["int8 onnxruntime"]["drop_vs_original"] == int8["drop_vs_original"]
    assert recorded["int8 onnxruntime"]["step_drop"] == int8["step_drop"]
    # The table: both drops in their columns, the int8 step's "drop_pts" not among the details.
    table = edgekit(*args, "-o", str(tmp_path / "table"))
    assert table.returncode == 0, table.stderr
    assert "step drop" in table.stdout and "drop_pts" not in table.stdout
    table_lines = [x for x in table.stdout.splitlines() if x[:1] in "┏┃┡│└"]
    assert table_lines and max(len(x) for x in table_lines) <= 100  # fits 100 columns
    line = next(x for x in table.stdout.splitlines() if "int8" in x and "│" in x)
    cells = [c.strip() for c in line.split("│")]
    assert f"{int8['drop_vs_original'] + 0.0:.2f}" in cells
    assert f"{int8['step_drop'] + 0.0:.2f}" in cells

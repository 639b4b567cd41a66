"""The accuracy gate: each check's numbers, NaN failing, which artifact decides, and
`edgekit validate` end to end on tiny torch-free ONNX models (exit codes 0/1/2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import InputError
from edgekit.validate.accuracy import accuracy_section
from edgekit.validate.gate import Budget, evaluate_gate, pick_decisive
from tests.helpers import cli


def _section(candidate_correct: int, n: int = 1000, nan: bool = False):
    """Labels 0..9; the reference is right on 900 of n, the candidate on candidate_correct."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    ref = np.eye(10)[labels] * 5.0 + rng.normal(0, 0.1, (n, 10))
    ref[900:] = np.eye(10)[(labels[900:] + 1) % 10] * 5.0  # 90% right
    cand = ref.copy()
    wrong = np.arange(n)[:900][: 900 - candidate_correct]  # flip some right answers
    cand[wrong] = np.eye(10)[(labels[wrong] + 2) % 10] * 5.0
    if nan:
        cand[3, 4] = np.nan
    return accuracy_section(cand.astype(np.float32), labels, ref.astype(np.float32))


def test_absolute_drop_in_points():
    acc = _section(895)  # 0.900 -> 0.895: 0.5 points
    assert acc["top1_drop_points"] == pytest.approx(0.5)
    assert evaluate_gate(acc, Budget(max_drop=0.5))["passed"]
    verdict = evaluate_gate(acc, Budget(max_drop=0.4))
    assert not verdict["passed"]
    assert verdict["reasons"] == ["top1_drop_points 0.5 not ≤ 0.4"]


def test_relative_drop():
    acc = _section(891)  # 0.9 -> 0.891 = 1% relative
    assert evaluate_gate(acc, Budget(max_drop_rel=0.0101))["passed"]
    assert not evaluate_gate(acc, Budget(max_drop_rel=0.0099))["passed"]
    both = evaluate_gate(acc, Budget(max_drop=2.0, max_drop_rel=0.005))
    assert [c["check"] for c in both["checks"] if not c["passed"]] == ["top1_drop_rel"]


def test_agreement_and_fidelity_checks():
    acc = _section(880)  # 20 of 1000 answers changed
    assert acc["fidelity"]["top1_agreement"] == pytest.approx(0.98)
    assert evaluate_gate(acc, Budget(min_agreement=0.98))["passed"]
    assert not evaluate_gate(acc, Budget(min_agreement=0.99))["passed"]
    assert not evaluate_gate(acc, Budget(min_cosine=0.999))["passed"]
    assert evaluate_gate(acc, Budget(max_abs_diff=10.0))["passed"]
    assert not evaluate_gate(acc, Budget(max_abs_diff=1.0))["passed"]


def test_nan_outputs_fail_even_with_no_budget():
    acc = _section(900, nan=True)
    assert acc["outputs_finite"] is False
    verdict = evaluate_gate(acc, Budget())
    assert not verdict["passed"] and verdict["reasons"] == ["NaN or Inf in the outputs"]


def test_a_check_that_cannot_be_evaluated_fails():
    acc = accuracy_section(np.eye(3, dtype=np.float32), np.arange(3), None)  # no reference
    verdict = evaluate_gate(acc, Budget(max_drop=1.0, min_agreement=0.9))
    assert not verdict["passed"]
    assert any("no fp32 reference" in r for r in verdict["reasons"])


def test_budget_rejects_nonsense():
    with pytest.raises(ValueError):
        Budget(max_drop=-1)
    with pytest.raises(ValueError):
        Budget(max_drop_rel=1.5)
    with pytest.raises(ValueError):
        Budget(max_dorp=1)  # extra keys are errors


def test_decisive_artifact_is_the_most_compressed_unless_chosen():
    arts = [{"name": "model.onnx", "precision": "fp32", "stage": "export-onnx-fp32"},
            {"name": "model.int8.onnx", "precision": "int8", "stage": "quantize-int8"},
            {"name": "model.fp16.xml", "precision": "fp16", "stage": "export-openvino-fp16"},
            {"name": "model.int8.xml", "precision": "int8", "stage": "export-openvino-int8"}]
    chosen, why = pick_decisive(arts)
    assert chosen["name"] == "model.int8.xml" and "most compressed" in why
    chosen, why = pick_decisive(arts, "model.fp16.xml")
    assert chosen["name"] == "model.fp16.xml" and "--artifact" in why
    assert pick_decisive(arts, "quantize-int8")[0]["name"] == "model.int8.onnx"
    with pytest.raises(InputError, match="not among"):
        pick_decisive(arts, "nope.onnx")


# ---------------------------------------------------------------- edgekit validate, end to end
def test_validate_passes_and_fails_on_the_budget(tiny_folder, quick_profile, capsys, tmp_path):
    folder, eval_npz = tiny_folder(noise=0.6)
    profile = quick_profile()
    store = tmp_path / "results.db"
    code, out, err = cli(capsys, "validate", str(folder), "--device", profile, "--eval", str(eval_npz),
                                "--max-drop", "0.5", "--store", str(store), "--json")
    result = json.loads(out)
    assert code == 1, err  # the noisy "int8" model decides, and it drops far more than 0.5 pt
    assert result["decisive"]["artifact"] == "model.int8.onnx" and not result["passed"]
    by_name = {a["name"]: a for a in result["artifacts"]}
    assert by_name["model.onnx"]["passed"] and not by_name["model.int8.onnx"]["passed"]
    ref = next(r for r in result["records"] if r["artifact_name"] == "model.onnx")
    assert ref["accuracy"]["top1"] == 1.0 and ref["accuracy"]["top1_drop_points"] == 0.0
    assert ref["latency"]["count"] >= 20 and ref["latency"]["valid"]
    assert "timing_scope" in ref["latency"] and "eval.npz" in ref["latency"]["inputs"]
    assert "cpu" in ref["environment"] and ref["environment"]["versions"]["onnxruntime"]
    assert "fails the budget" in err
    # The fp32 reference decides when chosen; it passes.
    code, out, _ = cli(capsys, "validate", str(folder), "--device", profile, "--eval", str(eval_npz),
                              "--max-drop", "0.5", "--artifact", "model.onnx", "--store",
                              str(store), "--json")
    assert code == 0 and json.loads(out)["passed"]
    from edgekit.results.store import open_store

    with open_store(store) as db:
        assert db.count() == 4  # 2 artifacts × 1 batch × 2 runs


def test_validate_fails_on_nan_outputs(tiny_folder, quick_profile, capsys):
    folder, eval_npz = tiny_folder(nan=True)
    code, out, err = cli(capsys, "validate", str(folder), "--device", quick_profile(), "--eval",
                                str(eval_npz), "--json")
    assert code == 1
    assert "NaN or Inf" in " ".join(json.loads(out)["decisive"]["reasons"])


def test_validate_refuses_labels_outside_the_model_classes(tiny_folder, quick_profile, capsys,
                                                           tmp_path):
    folder, _ = tiny_folder()
    x = np.zeros((10, 1, 4, 4), np.float32)
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(10))  # labels 0..9, model has 4 classes
    code, out, err = cli(capsys, "validate", str(folder), "--device", quick_profile(), "--eval",
                                str(tmp_path / "bad.npz"))
    assert code == 2 and "labels 0..9" in err and out == ""


def test_validate_without_eval_or_with_unknown_artifact_is_bad_input(tiny_folder, quick_profile,
                                                                     capsys):
    folder, eval_npz = tiny_folder()
    code, _, err = cli(capsys, "validate", str(folder), "--device", quick_profile())
    assert code == 2 and "--eval" in err
    code, _, err = cli(capsys, "validate", str(folder), "--device", quick_profile(), "--eval", str(eval_npz),
                              "--artifact", "nope.onnx")
    assert code == 2 and "choose one of" in err


def test_one_accuracy_tolerance_for_the_gate_and_the_int8_budget() -> None:
    """The validator's gate and the int8 budget loop meet a limit with the same float slack:
    one TOLERANCE, defined once in edgekit (not a copy per module that could drift)."""
    import ast
    from pathlib import Path

    import edgekit
    from edgekit import metrics
    from edgekit.quant import budget
    from edgekit.validate import gate

    assert gate.TOLERANCE is budget.TOLERANCE is metrics.TOLERANCE == 1e-9
    defined = [path.relative_to(Path(edgekit.__file__).parent).as_posix()
               for path in sorted(Path(edgekit.__file__).parent.rglob("*.py"))
               for node in ast.parse(path.read_text()).body
               if isinstance(node, ast.Assign)
               and any(getattr(t, "id", None) == "TOLERANCE" for t in node.targets)]
    assert defined == ["metrics.py"]

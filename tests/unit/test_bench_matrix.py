"""The model matrix's int8 fidelity (benchmarks/bench_matrix.py, matrix_worker.py; issue 27):
random weights leave near-tied logits where top-1 agreement says little, so each int8 cell also
carries the margin-aware agreement and the logits' SQNR, and the README section names the cells
whose SQNR is low. And its bookkeeping: where a model's seconds go (each second counted in one
phase), which columns start from load's fp32 ONNX model, and the seconds table the section
shows."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_matrix  # noqa: E402
import matrix_worker  # noqa: E402
from bench_matrix import section  # noqa: E402
from matrix_worker import margin_agreement  # noqa: E402


def test_margin_agreement_counts_the_images_whose_margin_exceeds_their_own_error():
    reference = np.array([[3.0, 0.0, 0.0],     # margin 3, error 0.1: clear, agrees
                          [3.0, 0.0, 0.0],     # margin 3, error 2 (flip to class 1): clear
                          [1.0, 0.99, 0.0]])   # margin 0.01, error 0.02: a near-tie
    candidate = np.array([[3.1, 0.0, 0.0],
                          [1.0, 2.0, 0.0],
                          [0.98, 1.0, 0.0]])
    assert margin_agreement(reference, candidate) == (pytest.approx(0.5), 2)


def cell(agreement: float, **extra) -> dict:
    return {"status": "pass", "agreement": agreement, **extra}


def test_the_section_reports_margin_aware_agreement_and_sqnr_and_names_low_sqnr_cells():
    columns = ("load", "inspect", "prune", "dwsep", "export_openvino", "validate")
    good = {"decisive_agreement": 1.0, "decisive_images": 40, "sqnr_db": 24.5}
    bad = {"decisive_agreement": 0.2, "decisive_images": 96, "sqnr_db": -0.02}
    data = {"listed": {"tv": 1, "timm": 1}, "images": 96, "results": [
        {"model": "tv:a", "columns": {**{k: cell(1.0) for k in columns},
                                      "int8_ort": cell(0.6, **good),
                                      "int8_openvino": cell(0.55, **good)}},
        {"model": "timm:b", "data": {"input_step": {"sqnr_db": 2.29, "agreement": 0.83}},
         "columns": {**{k: cell(1.0) for k in columns},
                                        "int8_ort": cell(0.5, **good),
                                        "int8_openvino": cell(0.094, **bad)}}]}
    text = section(data)
    assert ("top-1 agreement on the images that are not near-ties (edgekit's parity rule) "
            "median 1.000, lowest 0.200; the logits' SQNR median 24.5 dB, lowest -0.0 dB. The "
            "fp32 original itself, every pixel moved by one uint8 step: SQNR median 2.3 dB, "
            "lowest 2.3 dB" in text)
    assert ("int8 cells under 10 dB SQNR (the logits' error a third of the logits or more: a "
            "fidelity problem, not near-ties; in brackets the fp32 original's own SQNR under a "
            "one-step input change): `timm:b` OpenVINO (-0.0 dB, agreement 0.094, 0.200 on 96 "
            "decisive images; [2.3 dB])." in text)
    # results measured before the worker recorded SQNR render as they did
    for result in data["results"]:
        for key in ("int8_ort", "int8_openvino"):
            result["columns"][key] = cell(result["columns"][key]["agreement"])
    text = section(data)
    assert "SQNR" not in text and "median 0.550, lowest 0.094." in text


def test_input_step_measures_how_far_the_original_moves_under_one_uint8_step():
    """A linear model with a clear winner per image does not move under ±1/255 (SQNR far
    above 40 dB, every top-1 kept); a chaotic one (the sine of a thousand times a pixel, as a
    random deep network can be) is moved entirely by it."""
    import torch
    from matrix_worker import input_step, normalized, structured_images

    x = structured_images(16, 8, 0)
    steady = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    with torch.no_grad():
        steady[1].bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
        logits = steady(normalized(x)).numpy()
    measured = input_step(steady, x, logits)
    assert measured["agreement"] == 1.0 and measured["sqnr_db"] > 40

    class Chaotic(torch.nn.Module):
        def forward(self, t):
            return torch.sin(1e3 * t.flatten(1)[:, :4])

    chaotic = Chaotic()
    with torch.no_grad():
        logits = chaotic(normalized(x)).numpy()
    measured = input_step(chaotic, x, logits)
    assert measured["sqnr_db"] < 3 and measured["agreement"] < 0.7


def test_a_phase_inside_another_is_counted_once():
    ticks = iter([0.0, 2.0, 5.0, 6.0, 10.0, 11.0])
    clock = matrix_worker.PhaseClock(clock=lambda: next(ticks))
    inner = clock.wrap("openvino_convert", lambda: "ir")
    outer = clock.wrap("nncf_quantize", lambda: inner() + "-int8")
    assert outer() == "ir-int8"  # 0 → 2 outer, 2 → 5 inner, 5 → 6 outer
    assert clock.wrap("onnx_export", lambda: None)() is None  # 10 → 11
    assert clock.take(15.0) == {"nncf_quantize": 3.0, "openvino_convert": 3.0,
                                "onnx_export": 1.0, "other": 8.0}
    assert clock.take(2.0) == {"other": 2.0}  # a take starts the next column from zero


def test_the_int8_and_openvino_columns_start_from_loads_onnx_model(tmp_path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"onnx")
    onnx = tmp_path / "onnx" / "model.onnx"
    reuse = matrix_worker.commands_for("tv:resnet18", tmp_path, 64, {"num_classes": 10}, True)
    for column in ("int8_ort", "int8_openvino"):
        assert reuse[column][:2] == ["compress", onnx]
        assert "--arch" not in reuse[column]  # the ONNX file records its InputSpec
    assert reuse["export_openvino"][:2] == ["export", tmp_path / "onnx"]
    # torch passes and the export itself still start from the checkpoint
    for column in ("load", "inspect", "prune", "dwsep"):
        assert reuse[column][1] == tmp_path / "model.pt"
    # every export's parity runs on the matrix's own images
    for column in ("load", "export_openvino"):
        assert reuse[column][reuse[column].index("--parity-data") + 1] == \
            str(tmp_path / "eval.npz")
    # load did not pass: each column from the checkpoint, as before, with the model's flags
    alone = matrix_worker.commands_for("tv:resnet18", tmp_path, 64, {"num_classes": 10}, False)
    for column in ("int8_ort", "int8_openvino", "export_openvino"):
        assert alone[column][1] == tmp_path / "model.pt"
        assert alone[column][alone[column].index("--arch") + 1] == "torchvision.models:resnet18"


def record(model: str, seconds: dict[str, float], export: float) -> dict:
    columns = {k: {"status": "pass", "seconds": s,
                   "phases": {"onnx_export": export, "other": s - export}}
               for k, s in seconds.items()}
    return {"model": model, "setup": {"import": 4.0, "build": 1.0, "data": 1.0},
            "columns": columns}


def test_the_section_shows_the_median_seconds_of_each_column():
    cols = matrix_worker.COLUMNS
    results = [record("tv:a", dict.fromkeys(cols, 10.0), 2.0),
               record("tv:b", dict.fromkeys(cols, 30.0), 6.0),
               record("tv:c", dict.fromkeys(cols, 20.0), 4.0)]
    text = bench_matrix.timing(results)
    assert "median of the 3 models" in text
    assert "| 6 | " + " | ".join(["20"] * len(cols)) + " |" in text
    # per model, the phase summed over its 8 columns: 16, 48, 32 s of export → median 32
    assert "onnx_export 32 s" in text and "other 128 s" in text
    # results of the worker before per-column phases render as they did
    assert bench_matrix.timing([{"model": "tv:a", "columns": {}}]) == ""


def test_the_prune_column_adds_the_flags_inspect_names() -> None:
    """A model whose attention heads cannot be removed: inspect's JSON names `--prune-heads 0`
    and the prune column runs with it, as a user reading inspect's next command would; nothing
    when the pass does not apply or inspect's output is not JSON."""
    prune_flags_from_inspect = matrix_worker.prune_flags_from_inspect
    report = {"passes": {"prune": {"applies": True, "flags": ["--prune-heads", "0"]}}}
    assert prune_flags_from_inspect(json.dumps(report)) == ["--prune-heads", "0"]
    report["passes"]["prune"]["applies"] = False
    assert prune_flags_from_inspect(json.dumps(report)) == []
    assert prune_flags_from_inspect("Error: no model") == []
    assert prune_flags_from_inspect(json.dumps({"passes": {}})) == []


@pytest.mark.parametrize("keep", ["", "1"])
def test_a_models_work_folder_is_deleted_once_its_row_is_read(tmp_path, monkeypatch, keep):
    """70 models' checkpoints, exports and int8 models filled 21 GB: each folder goes once its
    row is read (BENCH_MATRIX_KEEP=1 keeps it), whether the worker finished or not."""
    monkeypatch.setattr(bench_matrix, "WORK", tmp_path)
    monkeypatch.setenv("BENCH_MATRIX_KEEP", keep)

    def worker(model_id, work):
        work.mkdir(parents=True)
        (work / "model.pt").write_bytes(b"x" * 1024)
        if model_id.endswith("crash"):
            raise RuntimeError("worker died")
        return {"model": model_id, "columns": {}}

    monkeypatch.setattr(bench_matrix, "_run_worker", worker)
    assert bench_matrix.run_one("tv:ok") == {"model": "tv:ok", "columns": {}}
    with pytest.raises(RuntimeError):
        bench_matrix.run_one("tv:crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["tv-crash", "tv-ok"] if keep else [])


def test_a_worker_killed_mid_row_keeps_the_columns_it_finished(tmp_path, monkeypatch):
    """tv:maxvit_t's worker was SIGKILLed (out of memory) after 392 s and its row said nothing
    of the columns it had finished: they keep their verdicts, and the rest are bugs."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import json, os, signal, sys\n"
        "from pathlib import Path\n"
        "work = Path(sys.argv[2]); work.mkdir(parents=True, exist_ok=True)\n"
        "cell = {'status': 'pass', 'exit': 0, 'seconds': 1.0, 'reason': ''}\n"
        "(work / 'partial.json').write_text(json.dumps({'model': sys.argv[1], 'columns': "
        "{'load': cell, 'inspect': cell}}))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.setattr(bench_matrix, "WORKER", worker)
    result = bench_matrix._run_worker("tv:big", tmp_path / "work")
    assert "SIGKILL" in result["crash"] and result["seconds"] >= 0
    cells = bench_matrix.verdict(result)
    assert cells["load"] == cells["inspect"] == "pass"
    assert {cells[c] for c in cells if c not in ("load", "inspect")} == {"bug"}
    assert bench_matrix.model_verdict(cells) == "bug"


def test_an_export_whose_own_check_failed_is_refused_not_passed(monkeypatch):
    """Exit 1 of `compress` is a budget not met (the column passes: the matrix measures the
    artifact); exit 1 of `export` is its parity check failing, with no artifact written
    (tv:efficientnet_b4's load column was counted a PASS)."""
    import edgekit.cli

    def fails(args):
        print("error: parity check of the ONNX export against torch failed: max abs diff 1.67",
              file=sys.stderr)
        raise SystemExit(1)

    monkeypatch.setattr(edgekit.cli, "main", fails)
    cell = matrix_worker.run_cli(["export", "model.pt"])
    assert cell["status"] == "refused" and cell["exit"] == 1
    assert cell["reason"].startswith("error: parity check of the ONNX export")
    assert matrix_worker.run_cli(["compress", "model.pt"])["status"] == "pass"

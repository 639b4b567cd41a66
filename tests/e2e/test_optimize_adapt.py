"""`edgekit optimize` on a model with squeeze-excite layers under a device's round_to (issue 27):
the space is fitted before any candidate is built (a ratio that repeats an architecture and a
dwsep that substitutes nothing are dropped, said once, with the reason), round_to keeps the
narrow squeeze whole instead of failing every pruned candidate, ONNX Runtime fp16 is built by
the ONNX target, and the report, optimize.json and the 100-column terminal table say all of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    pytest.importorskip("optuna")
    torch = pytest.importorskip("torch")
    from edgekit.api import as_bundle
    from edgekit.io.models import save_checkpoint
    from tests.helpers import tiny_se_model

    folder = tmp_path_factory.mktemp("adapt")
    torch.manual_seed(0)
    model = tiny_se_model().eval()
    bundle = as_bundle(model, input_shape=(1, 3, 16, 16), arch="tests.helpers:tiny_se_model",
                       preprocessing={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    save_checkpoint(bundle, folder / "se.pt")
    x = torch.nn.functional.interpolate(torch.randn(240, 3, 4, 4, generator=torch.Generator()
                                                    .manual_seed(1)), size=16, mode="bilinear")
    with torch.no_grad():  # agreement labels: the original's own predictions
        y = model(x).argmax(1)
    np.savez(folder / "data.npz", x=x.numpy().astype(np.float32), y=y.numpy().astype(np.int64))
    profile = {"schema_version": 1, "name": "se-cpu", "kind": "cpu", "threads": 1,
               "batch_sizes": [1], "round_to": 8,
               "runtimes": {"onnxruntime": {"precisions": ["fp32", "fp16"]}},
               "latency": {"warmup_count": 3, "warmup_seconds": 0.0, "min_queries": 30,
                           "min_seconds": 0.02, "max_seconds": 1.0}}
    (folder / "se-cpu.yaml").write_text(yaml.safe_dump(profile))
    space = {"prune": [0, 0.2, 0.25], "dwsep": ["off", 1],
             "distill": {"short_limit": 120, "full_limit": 120}}
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    data = str(folder / "data.npz")
    out = folder / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKIT_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit", "optimize", str(folder / "se.pt"), "--arch",
         "tests.helpers:tiny_se_model", "--device", str(folder / "se-cpu.yaml"), "--train", data,
         "--eval", data, "--space", str(folder / "space.yaml"), "--trials", "8", "-o", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=900)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc, json.loads((out / "optimize.json").read_text())


def test_knobs_that_cannot_apply_are_dropped_once_before_any_candidate(searched):
    proc, summary = searched
    result = summary["devices"]["se-cpu"]
    dropped = {(d["knob"], d["value"]): d["why"] for d in result["dropped"]}
    assert dropped == {
        ("prune", 0.25): "the same architecture as prune 0.2 with round_to 8 (the same channel "
                         "counts)",
        ("dwsep", 1): "dwsep r1 substitutes no conv of this model (4 1×1; 1 already grouped): "
                      "the candidate would be the original"}
    assert result["space"]["prune"] == [0.0, 0.2] and result["space"]["dwsep"] == ["off"]
    err = " ".join(proc.stderr.split())  # said once each, however many candidates use them
    assert err.count("prune 0.25 dropped from the space") == 1
    assert err.count("dwsep 1 dropped from the space") == 1
    # round_to keeps the 8-channel squeeze whole (it failed every pruned candidate before)
    assert any("round_to 8 keeps" in n and "5.fc1 (8)" in n for n in result["notes"])


def test_every_remaining_candidate_is_built_and_none_fails_for_bookkeeping(searched):
    _, summary = searched
    result = summary["devices"]["se-cpu"]
    names = {c["name"]: c for c in result["candidates"]}
    assert set(names) == {"original onnxruntime:fp32", "original onnxruntime:fp16",
                          "prune 0.2 onnxruntime:fp32", "prune 0.2 onnxruntime:fp16"}
    assert not [c for c in result["candidates"] if c["status"] in ("failed", "skipped")]
    fp16 = names["original onnxruntime:fp16"]  # built by the ONNX target, not "onnxruntime"
    assert fp16["artifact"].endswith(".fp16.onnx") and fp16["p50_ms"] > 0
    # timed before it is scored: a screen cut (fp16 on a CPU is often slower) scores nothing
    assert fp16["values"] is not None or (fp16["rung"] == "screen" and fp16["cut"]), fp16
    for c in result["candidates"]:  # every pruned one was made and timed
        assert c["steps"] and c["steps"][0]["p50_ms"] > 0


def test_report_and_terminal_say_what_was_dropped_within_100_columns(searched):
    proc, summary = searched
    page = Path(summary["report"]).read_text()
    assert "Dropped from the search space (2)" in page
    assert "dwsep r1 substitutes no conv of this model" in page and "5.fc1 (8)" in page
    table = [line for line in proc.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 100, proc.stdout
    assert "(top-1 %, cost s: --wide shows them)" in proc.stdout
    assert "se-cpu: prune 0.25 dropped from the space: the same architecture as prune 0.2" \
        in proc.stdout

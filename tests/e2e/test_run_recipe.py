"""`edgekit run` end to end on a small recipe (pruned + int8 LeNet-5, ONNX Runtime and OpenVINO):
stages in the manifest, records in the store, the report; then killed after its first real stage
and rerun: it resumes (the finished stages are not redone) and reaches the same final result."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, zoo_checkpoint):
    """A quick recipe around the small test LeNet-5: prune 25%, int8, OpenVINO fp32."""
    ckpt = zoo_checkpoint("lenet5")
    folder = tmp_path_factory.mktemp("recipe")
    data = {
        "recipe_version": 1, "name": "lenet5-quick",
        "model": {"path": str(ckpt)},
        "data": {"eval": "fashion-mnist:test", "eval_limit": 500,
                 "calib": str(ROOT / "calibration" / "fashion-mnist-512.npz")},
        "steps": [{"prune": {"ratio": 0.25}}, {"quantize": {"calib_size": 64}}],
        "exports": [{"target": "openvino", "precision": "fp32"}] if HAS_OPENVINO else [],
        "devices": [{"profile": "local-cpu", "threads": 1, "batch_sizes": [1],
                     "latency": {"warmup_count": 2, "warmup_seconds": 0.0, "min_queries": 30,
                                 "min_seconds": 0.1, "max_seconds": 5.0}}],
        # No speed-up demand: which artifact is faster than the original is the machine's
        # call; the never-slower rule is tested on models built to differ (test_speedup_gate).
        "budget": {"max_drop": 10.0, "min_speedup": None},
    }
    path = folder / "lenet5-quick.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _edgekit(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "EDGEKIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "edgekit", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run(*args: str) -> tuple[int, dict | None, str]:
    proc = _edgekit(*args)
    out, err = proc.communicate(timeout=900)
    return proc.returncode, (json.loads(out) if out.strip().startswith("{") else None), err


def _top1s(result: dict) -> dict[tuple[str, str], float]:
    from edgekit.results.store import open_store

    with open_store(result["store"]) as store:
        return {(r["artifact_name"], r["runtime"]): r["accuracy"]["top1"]
                for d in result["devices"].values() for r in store.records(run_id=d["run_id"])}


@pytest.fixture(scope="module")
def finished(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    code, result, err = _run("run", str(recipe), "-o", str(out), "--json")
    assert code == 0, err[-3000:]
    return out, result


def test_run_writes_stages_records_and_report(finished):
    out, result = finished
    stages = [s["stage"] for s in result["stages"]]
    expected = ["model", "compress"] + (["export-openvino-fp32"] if HAS_OPENVINO else []) + \
        ["validate-local-cpu", "report"]
    assert stages == expected and all(s["status"] == "done" for s in result["stages"])
    manifest = json.loads((out / "manifest.json").read_text())
    names = [s["stage"] for s in manifest["stages"]]
    assert {"run:model", "run:compress", "run:validate-local-cpu", "prune",
            "export-onnx-fp32-original", "quantize-int8"} <= set(names)
    summary = result["devices"]["local-cpu"]
    arts = {a["name"]: a for a in summary["artifacts"]}
    assert {"original.onnx", "model.onnx", "model.int8.onnx"} <= set(arts)
    # The fastest artifact within the budget decides (the original is what they are measured
    # against, so it does not compete), and every record carries its speed-up against it.
    competing = [a for a in summary["artifacts"] if a["passed"] and not a["is_reference"]]
    assert summary["decisive"]["artifact"] == min(competing, key=lambda a: a["p50_ms"])["name"]
    assert "fastest artifact within the budget" in summary["decisive"]["why"]
    top1 = _top1s(result)
    assert top1[("original.onnx", "onnxruntime")] > 0.6  # the original, the fp32 reference
    assert abs(top1[("model.int8.onnx", "onnxruntime")] - top1[("model.onnx", "onnxruntime")]) \
        < 0.05
    from edgekit.results.store import open_store

    with open_store(result["store"]) as store:
        records = store.records(run_id=summary["run_id"])
    assert all(r["speedup"] == pytest.approx(r["speedup_vs"]["reference_p50_ms"]
                                             / r["speedup_vs"]["p50_ms"]) for r in records)
    for r in records:  # the p50s of the record's own run, unless a "slower" verdict of the two
        # runs was timed again with the original in alternating rounds
        vs = r["speedup_vs"]
        assert vs["ci_low"] <= r["speedup"] <= vs["ci_high"]
        if not vs.get("rounds"):
            assert vs["p50_ms"] == r["latency"]["p50_ms"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "model.int8.onnx" in html
    assert "speed-up" in html and "★" in html
    assert "| lenet5 |" in (out / "report.md").read_text()


def test_results_and_report_commands_on_the_run_store(finished, tmp_path):
    out, result = finished
    proc = _edgekit("results", result["store"], "--runtime", "onnxruntime", "--json")
    rows = json.loads(proc.communicate(timeout=120)[0])
    assert rows and {r["runtime"] for r in rows} == {"onnxruntime"}
    proc = _edgekit("report", result["store"], "-o", str(tmp_path / "r.html"), "--markdown",
                    str(tmp_path / "r.md"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert (tmp_path / "r.html").stat().st_size > 10_000 and (tmp_path / "r.md").exists()
    proc = _edgekit("results", str(tmp_path / "r.html"))  # not a store: refused, untouched
    before = (tmp_path / "r.html").read_bytes()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "not an edgekit results store" in err
    assert (tmp_path / "r.html").read_bytes() == before


def test_killed_run_resumes_from_the_last_finished_stage(recipe, finished, tmp_path):
    out = tmp_path / "out"
    proc = _edgekit("run", str(recipe), "-o", str(out), "--json")
    manifest = out / "manifest.json"
    deadline = time.time() + 600
    killed_after = None
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists():
            try:
                stages = [s["stage"] for s in json.loads(manifest.read_text())["stages"]]
            except (json.JSONDecodeError, KeyError):
                stages = []
            if "run:compress" in stages:
                proc.send_signal(signal.SIGKILL)
                killed_after = stages
                break
        time.sleep(0.05)
    proc.communicate(timeout=60)
    assert killed_after is not None, "the run finished before it could be interrupted"
    assert "run:validate-local-cpu" not in killed_after
    assert not (out / "report.html").exists()
    compressed = {p: (out / p).read_bytes() for p in ("model.onnx", "model.int8.onnx")}
    code, result, err = _run("run", str(recipe), "-o", str(out), "--json")
    assert code == 0, err[-3000:]
    status = {s["stage"]: s["status"] for s in result["stages"]}
    assert status["model"] == "resumed" and status["compress"] == "resumed"
    assert status["validate-local-cpu"] == "done" and "finished earlier" in err
    assert {p: (out / p).read_bytes() for p in compressed} == compressed  # not redone
    _, reference = finished
    assert _top1s(result) == _top1s(reference)  # the same final result as an uninterrupted run
    # Which artifact is fastest was measured again (validation had not run before the kill):
    # the same rule decides, on the same verdicts.
    summary = result["devices"]["local-cpu"]
    competing = [a for a in summary["artifacts"] if a["passed"] and not a["is_reference"]]
    assert summary["decisive"]["artifact"] == min(competing, key=lambda a: a["p50_ms"])["name"]
    assert {a["name"]: a["passed"] for a in summary["artifacts"]} == {
        a["name"]: a["passed"] for a in reference["devices"]["local-cpu"]["artifacts"]}
    # A third run finds everything finished and stores nothing twice.
    code, again, _ = _run("run", str(recipe), "-o", str(out), "--json")
    assert code == 0 and all(s["status"] == "resumed" for s in again["stages"][:-1])
    from edgekit.results.store import open_store

    with open_store(again["store"]) as store:
        assert store.count() == len(store.records(run_id=again["devices"]["local-cpu"]["run_id"]))

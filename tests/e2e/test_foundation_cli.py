"""The foundation's path through the CLI: export a trained model, benchmark it, read the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import edgekit, fast_cpu_profile


@pytest.fixture(scope="module")
def exported(zoo_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    proc = edgekit("export", str(zoo_checkpoint("lenet5")), "--target", "onnx", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "top-1 agreement 1.000" in proc.stdout
    return out


def test_bench_json_record(exported: Path, tmp_path: Path) -> None:
    profile = fast_cpu_profile(tmp_path / "fast.yaml", threads=2, batch_sizes=(1, 4))
    proc = edgekit("bench", str(exported), "--eval", "fashion-mnist:test", "--limit", "1000",
                   "--device", str(profile), "--json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert [r["batch"] for r in records] == [1, 4]
    r = records[0]
    assert r["model"] == "lenet5" and r["format"] == "onnx" and r["runtime"] == "onnxruntime"
    lat = r["latency"]
    assert lat["count"] >= 30 and lat["duration_s"] >= 0.2 and lat["valid"]
    assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert len(lat["samples_ms"]) == lat["count"]
    acc = r["accuracy"]
    assert acc["samples"] == 1000 and 0.6 < acc["top1"] <= 1.0
    assert acc["fidelity"]["top1_agreement"] == 1.0 and acc["top1_drop_points"] == 0.0
    env = r["environment"]
    assert env["cpu"]["model"] and "vnni" in env["cpu"] and env["versions"]["onnxruntime"]
    assert r["runtime_details"]["providers_used"] == ["CPUExecutionProvider"]
    assert records[1]["latency"]["throughput_per_s"] > 0


def test_bench_table_and_bad_inputs(exported: Path, tmp_path: Path) -> None:
    profile = fast_cpu_profile(tmp_path / "fast.yaml", threads=2, batch_sizes=(1, 4))
    proc = edgekit("bench", str(exported / "model.onnx"), "--device", str(profile), "--batch", "1")
    assert proc.returncode == 0, proc.stderr
    assert "p50 ms" in proc.stdout and "lenet5" in proc.stdout
    bad = edgekit("bench", str(exported), "--eval", "fashion-mnist:nope", "--device", str(profile))
    assert bad.returncode == 2 and "fashion-mnist:test" in bad.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text(profile.read_text().replace("threads: 2", "thread: 2"))
    bad = edgekit("bench", str(exported), "--device", str(typo))
    assert bad.returncode == 2 and "did you mean 'threads'" in bad.stderr
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not opened")
    bad = edgekit("bench", str(checkpoint), "--device", str(profile))
    assert bad.returncode == 2 and f"edgekit export {checkpoint} --target onnx" in bad.stderr


def test_help_is_fast_and_lists_commands() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgekit", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("export", "bench", "zoo", "calib", "compress"):
        assert command in proc.stdout
    imported = proc.stderr
    for heavy in ("torch", "onnxruntime", "openvino", "nncf"):
        assert f" {heavy}\n" not in imported and f"| {heavy}\n" not in imported, heavy

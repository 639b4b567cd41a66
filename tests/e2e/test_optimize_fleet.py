"""`edgekit optimize` on several devices in one command (edgekit/optimize/search.py with
validate/fleet.py's threads and locks): two local profiles (one from a fleet file) take turns on
this machine while an unreachable SSH device fails; its failure is reported, the local winners
land, and one merged summary lists every device. `--cluster` refusals happen before anything is
written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CALIB = str(ROOT / "calibration" / "fashion-mnist-512.npz")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKIT_NO_PROGRESS": "1"}
LATENCY = {"warmup_count": 2, "warmup_seconds": 0.0, "min_queries": 20, "min_seconds": 0.05,
           "max_seconds": 1.0}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_profile(folder: Path, name: str, threads: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "schema_version": 1, "name": name, "kind": "cpu", "threads": threads,
        "batch_sizes": [1], "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}},
        "latency": LATENCY}))
    return path


def args(model: str, out: Path, *devices: str) -> list[str]:
    return [sys.executable, "-m", "edgekit", "optimize", model, *devices,
            "--eval", "fashion-mnist:test", "--eval-limit", "200", "--calib", CALIB,
            "--prune", "0", "--dwsep", "off", "--runtimes", "onnxruntime",
            "--precisions", "fp32,int8", "--fallback", "none", "--trials", "2", "-o", str(out)]


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=ENV, text=True, capture_output=True, check=False)


def test_devices_are_searched_in_one_command_and_a_failing_one_is_reported(zoo_checkpoint,
                                                                          tmp_path):
    pytest.importorskip("optuna")
    model = str(zoo_checkpoint("lenet5"))
    local_profile(tmp_path, "cpu-a", 2)
    local_profile(tmp_path, "cpu-b", 1)
    gone = tmp_path / "gone.yaml"  # an SSH device whose host does not answer
    gone.write_text(yaml.safe_dump({
        "schema_version": 1, "name": "gone", "kind": "cpu", "host": "me@127.0.0.1",
        "port": closed_port(), "connect_timeout": 2, "batch_sizes": [1],
        "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}}, "latency": LATENCY}))
    fleet = tmp_path / "fleet-two.yaml"
    fleet.write_text(yaml.safe_dump({"schema_version": 1, "name": "two", "devices": [
        {"profile": "cpu-b.yaml", "name": "cpu-one-thread"}, {"profile": "gone.yaml"}]}))
    out = tmp_path / "out"
    proc = run(args(model, out, "--device", str(tmp_path / "cpu-a.yaml"), "--fleet",
                    str(fleet),
                    "--json"))
    assert proc.returncode == 1, proc.stderr[-3000:]  # a device failed: the command fails
    summary = json.loads(proc.stdout)
    assert list(summary["devices"]) == ["cpu-one-thread", "gone", "cpu-a"]
    lost = summary["devices"]["gone"]
    assert lost["lost"] and "gone" in lost["lost"] and not lost["winner"]
    assert lost["where"].startswith("ssh 127.0.0.1:")
    for name in ("cpu-a", "cpu-one-thread"):  # the others finished, each with its winner
        result = summary["devices"][name]
        assert not result["lost"] and result["where"] == "local on this machine"
        timed = {c["name"]: c for c in result["candidates"] if c["p50_ms"]}
        assert set(timed) == {"original onnxruntime:fp32", "original onnxruntime:int8"}
        # the int8 is timed first and scored only when that timing leaves it a chance
        assert all(c["values"] or (c["rung"] == "screen" and c["cut"]) for c in timed.values())
        winner = result["winner"]
        assert winner and Path(winner["path"]).is_file()
        assert Path(winner["path"]).parent == out / name
        assert winner["p50_ms"] <= result["fastest_fp32_ms"] or winner.get("confirmed")
        # each device's records carry its own profile (threads), measured on its own
        for c in result["candidates"]:
            record = json.loads((out / "cache" / "measurements" / f"{c['key']}.json")
                                .read_text())
            assert record["device"] == name
    written = json.loads((out / "optimize.json").read_text())
    assert set(written["devices"]) == {"cpu-a", "cpu-one-thread", "gone"}
    assert summary["cache"]["measured"] == 4  # 2 candidates x 2 local devices, nothing twice

    # the same command again: one merged table, the local devices from the cache
    again = run(args(model, out, "--device", str(tmp_path / "cpu-a.yaml"), "--fleet",
                     str(fleet)))
    assert again.returncode == 1, again.stderr[-3000:]
    table = again.stdout
    assert "on 3 devices" in table
    for name, status in (("cpu-a", "WINNER"), ("cpu-one-thread", "WINNER"), ("gone", "LOST")):
        line = next(row for row in table.splitlines() if row.strip("│ ").startswith(name)
                    and status in row)
        assert line
    assert ", 0 measured;" in table  # resumed: nothing measured twice
    assert "gone: the search stopped" in again.stderr


@pytest.mark.parametrize("address, extra, message", [
    ("8.8.8.8:10001", [], "is not on a private network"),
    ("127.0.0.1:{port}", [], "does not answer"),
    ("nonsense", [], "is not ray://HOST:PORT"),
])
def test_cluster_address_is_refused_before_anything_is_written(zoo_checkpoint, tmp_path,
                                                               address, extra, message):
    out = tmp_path / "out"
    argv = args(str(zoo_checkpoint("lenet5")), out, "--cluster",
                address.format(port=closed_port()), *extra)
    proc = run(argv)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr
    assert not out.exists()


"""`edgekit optimize` on a remote device: candidates measured over SSH (a real sshd on 127.0.0.1,
tests/sshd.py, with this machine as the device) through edgekit's remote path; a device that
disappears mid-search keeps its partial front and the rerun resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.sshd import SKIP_REASON, LoopbackSSHD

pytestmark = [pytest.mark.ssh, pytest.mark.slow,
              pytest.mark.skipif(bool(SKIP_REASON), reason=SKIP_REASON or "n/a")]
ROOT = Path(__file__).resolve().parents[2]
CALIB = str(ROOT / "calibration" / "fashion-mnist-512.npz")


@pytest.fixture
def sshd(tmp_path):
    pytest.importorskip("optuna")
    if os.geteuid() != 0 and not Path("/run/sshd").is_dir():
        pytest.skip("sshd needs /run/sshd, which only root can create (CI runs as root)")
    server = LoopbackSSHD(tmp_path / "sshd").start()
    yield server
    server.stop()


def write_profile(path: Path, server: LoopbackSSHD, workdir: Path) -> str:
    data = {"schema_version": 1, "name": "loopback", "kind": "cpu", "threads": 1,
            "batch_sizes": [1], "python": sys.executable, "workdir": str(workdir),
            "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"],
                                         "providers": ["CPUExecutionProvider"]}},
            "latency": {"warmup_count": 2, "warmup_seconds": 0.0, "min_queries": 20,
                        "min_seconds": 0.05, "max_seconds": 2.0},
            **server.profile_fields()}
    path.write_text(yaml.safe_dump(data))
    return str(path)


def args(model: str, profile: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "edgekit", "optimize", model, "--device", profile,
            "--eval", "fashion-mnist:test", "--eval-limit", "200", "--calib", CALIB,
            "--prune", "0", "--dwsep", "off", "--fallback", "none,first-conv", "--trials", "3",
            "--json", "-o", str(out)]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKIT_NO_PROGRESS": "1"}


def test_remote_device_lost_mid_search_keeps_its_front_and_resumes(sshd, zoo_checkpoint,
                                                                    tmp_path):
    from edgekit.optimize.trials import trial_count

    model = str(zoo_checkpoint("lenet5"))
    profile = write_profile(tmp_path / "loopback.yaml", sshd, tmp_path / "device")
    out = tmp_path / "out"
    proc = subprocess.Popen(args(model, profile, out), cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while trial_count(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    sshd.stop()  # the device goes away with two candidates left
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]
    assert "the search stopped" in stderr and "rerun" in stderr
    lost = json.loads(stdout)["devices"]["loopback"]
    assert lost["lost"] and lost["baselines"]
    partial = {c["name"] for c in lost["candidates"] if c["values"]}
    assert "original onnxruntime:fp32" in partial  # the partial front is kept
    measured_before = {p.stem for p in (out / "cache" / "measurements").glob("*.json")}
    baseline = json.loads((out / "cache" / "measurements" /
                           f"{lost['baselines']['onnxruntime']['key']}.json").read_text())
    assert baseline["remote"]["host"].endswith("@127.0.0.1")  # measured on the device

    # the device is back (a new server on a new port): the rerun resumes
    server = LoopbackSSHD(tmp_path / "sshd2").start()
    try:
        profile = write_profile(tmp_path / "loopback.yaml", server, tmp_path / "device")
        rerun = subprocess.run(args(model, profile, out), cwd=ROOT, env=ENV, text=True,
                               capture_output=True, check=False)
    finally:
        server.stop()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    result = summary["devices"]["loopback"]
    assert not result["lost"] and result["winner"]
    assert len(result["candidates"]) == 3
    assert not set(summary["cache"]["measured_keys"]) & measured_before
    for c in result["candidates"]:
        record = json.loads((out / "cache" / "measurements" / f"{c['key']}.json").read_text())
        assert record["remote"]["job_id"] and record["runtime"] == "onnxruntime"
    assert result["winner"]["p50_ms"] <= result["fastest_fp32_ms"]


def test_tensorrt_candidates_on_a_device_without_tensorrt_are_skipped_with_its_reason(
        sshd, zoo_checkpoint, tmp_path):
    """The profile lists TensorRT; the device (this machine, over SSH) has none: the first
    TensorRT candidate's remote job builds no engine, the device's own report says why, and
    the other TensorRT candidates are skipped with that reason without another job."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here, so the loopback device can build engines")
    path = Path(write_profile(tmp_path / "loopback.yaml", sshd, tmp_path / "device"))
    data = yaml.safe_load(path.read_text())
    data["runtimes"]["tensorrt"] = {"precisions": ["fp16", "int8"]}
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    argv = [a if a != "none,first-conv" else "none" for a in args(str(zoo_checkpoint("lenet5")),
                                                                 str(path), out)]
    argv[argv.index("--trials") + 1] = "4"
    proc = subprocess.run(argv, cwd=ROOT, env=ENV, text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)["devices"]["loopback"]
    assert {"tensorrt:fp16", "tensorrt:int8"} <= set(result["targets"])
    trt = [c for c in result["candidates"] if c["params"]["target"].startswith("tensorrt:")]
    assert len(trt) == 2 and all(c["status"] == "skipped" for c in trt)
    assert all("TensorRT is not usable on the device" in c["why"] for c in trt)
    assert "tensorrt candidates skipped" in proc.stderr
    assert result["winner"]["params"]["target"].startswith("onnxruntime:")


def test_remote_winner_is_confirmed_on_the_device_and_a_rerun_times_nothing(
        sshd, zoo_checkpoint, tmp_path):
    """A winner that is not the original (LeNet-5 pruned by 75 %, timed at batch 32, where it
    is clearly faster) is timed again with the original in alternating rounds on the device,
    by a job there; the rerun takes the confirmation from the cache and starts no job. With
    the device gone and the confirmation not cached, the winner stands on its two-run
    interval and the why says the confirmation failed and why."""
    path = Path(write_profile(tmp_path / "loopback.yaml", sshd, tmp_path / "device"))
    data = yaml.safe_load(path.read_text())
    data["runtimes"]["onnxruntime"]["precisions"] = ["fp32"]
    path.write_text(yaml.safe_dump(data))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "prune": [0, 0.75], "dwsep": ["off"], "precisions": ["fp32"], "batch": 32,
        "distill": {"short_limit": 200, "full_limit": 200, "promote_margin": 100.0}}))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "edgekit", "optimize", str(zoo_checkpoint("lenet5")),
            "--device", str(path), "--space", str(space), "--train", "fashion-mnist:train",
            "--eval", "fashion-mnist:test", "--eval-limit", "200", "--max-drop", "100",
            "--trials", "2", "--json", "-o", str(out)]
    first = subprocess.run(argv, cwd=ROOT, env=ENV, text=True, capture_output=True, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout)["devices"]["loopback"]
    winner, original = result["winner"], result["baselines"]["onnxruntime"]
    assert winner["name"] == "prune 0.75 onnxruntime:fp32" and winner["key"] != original["key"]
    confirmed = winner["confirmed"]
    assert confirmed["rounds"] == 6 and confirmed["segments"] == [6, 6]
    assert confirmed["method"] == "t interval over 6 alternating rounds (paired)"
    assert confirmed["verdict"] in ("meets", "indistinguishable")
    assert confirmed["ci_low"] <= confirmed["speedup"] <= confirmed["ci_high"]
    # timed on the device, by a job of its own, with the original's samples beside the winner's
    assert confirmed["remote"]["host"].endswith("@127.0.0.1") and not confirmed["remote"]["reused"]
    jobs = {p.name for p in (tmp_path / "device" / "jobs").iterdir()}
    assert confirmed["remote"]["job_id"] in jobs
    assert confirmed["speedup"] == pytest.approx(confirmed["reference_p50_ms"]
                                                 / confirmed["p50_ms"], rel=0.2)
    assert "confirmed against the original" in result["why"]
    assert "in 6 alternating rounds" in result["why"]
    manifest = json.loads((out / "loopback" / "manifest.json").read_text())
    stage = next(s for s in manifest["stages"] if s["stage"] == "optimize")
    assert stage["metrics"]["winner"]["confirmed"] == confirmed
    cached = list((out / "cache" / "confirmations").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == confirmed

    rerun = subprocess.run(argv, cwd=ROOT, env=ENV, text=True, capture_output=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    again = json.loads(rerun.stdout)
    assert again["devices"]["loopback"]["winner"]["confirmed"] == confirmed
    assert again["cache"]["measured_keys"] == []  # nothing measured again ...
    assert {p.name for p in (tmp_path / "device" / "jobs").iterdir()} == jobs  # ... nor timed
    assert "alternating rounds)" not in rerun.stderr  # no "timing ... together" either

    # the device is gone and the confirmation is not cached: the winner stands, and says why
    sshd.stop()
    cached[0].unlink()
    lost = subprocess.run(argv, cwd=ROOT, env=ENV, text=True, capture_output=True, check=False)
    assert lost.returncode == 0, lost.stderr[-3000:]
    result = json.loads(lost.stdout)["devices"]["loopback"]
    assert result["winner"]["name"] == winner["name"] and "confirmed" not in result["winner"]
    assert "127.0.0.1" in result["winner"]["confirmation_failed"]
    assert "not confirmed against the original" in result["why"]
    assert result["winner"]["confirmation_failed"] in result["why"]
    assert "stands on the interval of its two separate runs" in result["why"]
    assert not list((out / "cache" / "confirmations").glob("*.json"))  # a rerun tries again

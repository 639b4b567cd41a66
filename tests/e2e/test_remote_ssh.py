"""On-device validation over SSH, against a real sshd on 127.0.0.1 (tests/sshd.py) with this
machine as the "device". Its Python is a wrapper around this venv's interpreter that makes
`import torch` fail, so every test also proves the device side needs no torch.

Covers: a whole remote validation of ONNX models (same numbers as a local validation on the same
eval sample, records tagged, nothing sent or recorded twice on a rerun, through the CLI too); a
wrong or unknown host key refused; a dropped copy retried; a killed job reported partial and
resumed; a job timeout; a device without edgekit or without Python; an unreachable host; profile
and path errors (no host, '..', a symlink out of the workdir, artifact names that escape)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.sshd import LoopbackSSHD, free_port, serve_module_sshd

# Only the tests that take the `sshd` fixture need an OpenSSH server (and, run as root, the
# privilege-separation folder the fixture creates); the others need at most the ssh client.
pytestmark = [pytest.mark.ssh]

ROOT = Path(__file__).resolve().parents[2]
FAST_LATENCY = {"warmup_count": 2, "warmup_seconds": 0.0, "min_queries": 20,
                "min_seconds": 0.05, "max_seconds": 5.0}


# ------------------------------------------------------------------------------ fixtures
def make_output_folder(out: Path, n_per_class: int = 60) -> Path:
    """A nearest-template linear classifier as ONNX (fp32) and its dynamic int8 quantization,
    with a manifest; returns a labelled eval .npz of noisy template images (top-1 well below 1,
    so agreement between local and remote numbers means something)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgekit.io.manifest import Manifest
    from edgekit.io.onnxfile import save_onnx, set_spec
    from edgekit.spec import InputSpec

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    templates = rng.integers(0, 256, (10, 28, 28)).astype(np.uint8)
    labels = np.tile(np.arange(10), n_per_class)
    noisy = templates[labels] + rng.normal(0, 600, (len(labels), 28, 28))
    images = np.clip(noisy, 0, 255).astype(np.uint8)
    spec = InputSpec(shape=(1, 1, 28, 28), class_names=tuple(f"c{i}" for i in range(10)))
    t = spec.preprocess(templates).reshape(10, -1)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["mm"]),
         helper.make_node("Add", ["mm", "b"], ["logits"])],
        "template_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.ascontiguousarray(t.T, np.float32), "w"),
         numpy_helper.from_array((-0.5 * (t ** 2).sum(1)).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    set_spec(model, spec)
    onnx.checker.check_model(model)
    save_onnx(model, out / "model.onnx")
    quantize_dynamic(str(out / "model.onnx"), str(out / "model.int8.onnx"),
                     weight_type=QuantType.QInt8)
    entry = {"format": "onnx", "input_spec": spec.model_dump(mode="json")}
    manifest = Manifest(out)
    manifest.add_stage("export", outputs=[{**entry, "path": "model.onnx", "precision": "fp32"}])
    manifest.add_stage("quantize", inputs={"source": out / "model.onnx"},
                       outputs=[{**entry, "path": "model.int8.onnx", "precision": "int8"}])
    eval_path = out.parent / "eval.npz"
    np.savez(eval_path, x=images, y=labels.astype(np.int64))
    return eval_path


sshd = pytest.fixture(scope="module", name="sshd")(serve_module_sshd)


@pytest.fixture(scope="module")
def device_python(tmp_path_factory) -> str:
    """This venv's Python with `import torch` made to fail: the device has no torch."""
    folder = tmp_path_factory.mktemp("device-python")
    (folder / "notorch" / "torch").mkdir(parents=True)
    (folder / "notorch" / "torch" / "__init__.py").write_text(
        "raise ImportError('torch is not installed on this device (edgekit test)')\n")
    wrapper = folder / "python"
    # The device runs the edgekit under test (the test's own PYTHONPATH after the torch block).
    path = ":".join(filter(None, [str(folder / "notorch"), os.environ.get("PYTHONPATH")]))
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={path} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("artifacts")
    eval_path = make_output_folder(base / "out")
    return base / "out", eval_path


def device_profile(sshd: LoopbackSSHD, python: str, workdir: Path, **latency):
    from edgekit.devices import DeviceProfile

    return DeviceProfile.model_validate({
        "name": "loopback", "kind": "cpu", "threads": 1, "batch_sizes": [1],
        "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"],
                                     "providers": ["CPUExecutionProvider"]}},
        "latency": {**FAST_LATENCY, **latency}, "python": python, "workdir": str(workdir),
        **sshd.profile_fields()})


def remote(target, profile, eval_path, **kwargs):
    from edgekit.data.given import DataSources
    from edgekit.executors import ValidationJob
    from edgekit.remote import validate_remote

    kwargs.setdefault("poll_s", 0.3)
    job = {k: kwargs.pop(k) for k in ("budget", "batches", "artifact", "run_id", "rerun")
           if k in kwargs}
    data = DataSources(eval=str(eval_path), data_dir=kwargs.pop("data_dir", None),
                       eval_limit=kwargs.pop("limit", None))
    return validate_remote(ValidationJob(target=target, device=profile, data=data, **job),
                           **kwargs)


# --------------------------------------------------------------------------------- tests
def test_remote_validation_matches_local_and_is_not_repeated(sshd, device_python, artifacts,
                                                             tmp_path):
    from edgekit.data.given import DataSources
    from edgekit.events import capture
    from edgekit.executors import ValidationJob
    from edgekit.validate.gate import Budget
    from edgekit.validate.validator import validate

    out, eval_path = artifacts
    profile = device_profile(sshd, device_python, tmp_path / "device")
    budget = Budget(max_drop=5.0)
    with capture() as said:  # what the job says reaches the caller's sink (edgekit.events)
        result = remote(out, profile, eval_path, budget=budget)
    assert said[0].startswith(f"checking {profile.name} at ")
    assert said[1].startswith("copying 5 file(s), ") and said[1].endswith(" (0 already there)")
    assert said[2] == f"job {result.job_id[:12]} started on {profile.host}"

    assert result.job_state == "complete" and not result.partial
    assert result.device_report["edgekit"]["imports_torch"] is False
    assert [r["precision"] for r in result.records] == ["fp32", "int8"]
    assert [Path(r["artifact"]) for r in result.records] == [out / "model.onnx",
                                                             out / "model.int8.onnx"]
    # The same validation run here: the same top-1, agreement and gate, on the same images.
    local = validate(ValidationJob(target=out, device=profile.model_copy(update={"host": None}), budget=budget,
                                   data=DataSources(eval=str(eval_path))))
    for mine, theirs in zip(result.records, local.records, strict=True):
        assert mine["accuracy"]["top1"] == theirs["accuracy"]["top1"]
        assert mine["accuracy"]["fidelity"]["top1_agreement"] == \
            theirs["accuracy"]["fidelity"]["top1_agreement"]
        assert mine["gate"]["passed"] == theirs["gate"]["passed"]
        assert 0.2 < mine["accuracy"]["top1"] < 0.99
        assert mine["artifact_sha256"] == theirs["artifact_sha256"]
    assert result.decisive["artifact"] == local.decisive["artifact"] == "model.int8.onnx"
    assert result.passed == local.passed
    # Tagged with where and how it was measured; latency samples came back for the report.
    for i, record in enumerate(result.records):
        assert record["remote"]["host"] == profile.host
        assert record["remote"]["job_id"] == result.job_id
        assert record["record_key"] == f"{result.job_id}/{i}/0"
        assert record["run_id"] == result.run_id
        assert record["environment"]["hostname"]
        assert "clocks" in record["environment"]
        assert record["accuracy"]["eval_sample"]["count"] == 600
        assert len(record["latency"]["samples_ms"]) >= FAST_LATENCY["min_queries"]
        # A tiny linear model meets FAST_LATENCY's minimums long before its max_seconds.
        assert record["latency"]["valid"] is True
        assert record["latency"]["validity"]["min_queries_met"] is True
        assert record["latency"]["count"] == len(record["latency"]["samples_ms"])
    assert result.copied["sent"] == result.copied["files"] == 5  # 2 models, manifest, eval set, program
    blobs = sorted(p.name for p in (tmp_path / "device" / "blobs").iterdir()
                   if not p.name.startswith("."))
    assert len(blobs) == 5

    store = tmp_path / "results.db"
    assert len(result.store_new_records(store)) == 2
    # A rerun: nothing is sent again, the job is not run again, nothing is recorded twice.
    with capture() as said:
        again = remote(out, profile, eval_path, budget=budget)
    assert said[-1] == f"job {result.job_id[:12]} already ran on {profile.host}; collecting it"
    assert again.reused and again.job_id == result.job_id
    assert again.copied["sent"] == 0 and again.copied["already_there"] == 5
    assert [r["record_key"] for r in again.records] == [r["record_key"] for r in result.records]
    assert [r["latency"]["p50_ms"] for r in again.records] == \
        [r["latency"]["p50_ms"] for r in result.records]
    assert again.store_new_records(store) == []
    from edgekit.results.store import open_store

    with open_store(store) as db:
        assert db.count() == 2
    # Another budget (or a recipe stage's own run id) is another job; the files are there.
    other = remote(out, profile, eval_path, budget=Budget(max_drop=0.0), run_id="recipe-stage-1")
    assert other.job_id != result.job_id and not other.reused
    assert other.copied["sent"] == 0
    assert other.run_id == "recipe-stage-1"
    assert {r["run_id"] for r in other.records} == {"recipe-stage-1"}


def test_cli_validate_on_remote_profile_stores_once(sshd, device_python, artifacts, tmp_path):
    import yaml

    out, eval_path = artifacts
    profile = device_profile(sshd, device_python, tmp_path / "device")
    profile_path = tmp_path / "loopback.yaml"
    profile_path.write_text(yaml.safe_dump(profile.model_dump(mode="json", exclude_none=True)))
    store = tmp_path / "results.db"
    argv = [sys.executable, "-m", "edgekit", "validate", str(out), "--device", str(profile_path),
            "--eval", str(eval_path), "--store", str(store), "--json"]
    env = {**os.environ, "EDGEKIT_NO_PROGRESS": "1"}
    first = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert len(data["stored_ids"]) == 2 and data["remote"]["job_state"] == "complete"
    assert data["remote"]["host"] == profile.host
    second = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert second.returncode == 0, second.stderr
    data2 = json.loads(second.stdout)
    assert data2["stored_ids"] == [] and data2["remote"]["reused"] is True
    assert "already ran" in second.stderr
    third = subprocess.run([*argv, "--rerun"], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=300)
    assert third.returncode == 0, third.stderr
    data3 = json.loads(third.stdout)
    assert data3["remote"]["reused"] is False and data3["remote"]["job_state"] == "complete"
    assert data3["remote"]["job_id"] != data["remote"]["job_id"]
    assert len(data3["stored_ids"]) == 2  # measured again: new records


def test_wrong_or_unknown_host_key_is_refused(sshd, device_python, artifacts, tmp_path):
    from edgekit.remote import HostKeyError, check_remote
    from tests.sshd import keygen

    out, eval_path = artifacts
    other_key = keygen(tmp_path / "impostor")
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other_key.split()[:2])}\n")
    profile = device_profile(sshd, device_python, tmp_path / "device")
    with pytest.raises(HostKeyError) as err:
        remote(out, profile.model_copy(update={"known_hosts": str(wrong)}), eval_path)
    assert "does not match" in err.value.message and "ssh-keygen -R" in err.value.hint
    unknown = tmp_path / "known_hosts_empty"
    unknown.write_text("")
    with pytest.raises(HostKeyError) as err:
        check_remote(profile.model_copy(update={"known_hosts": str(unknown)}))
    assert "not in" in err.value.message and "ssh-keyscan" in err.value.hint
    assert not (tmp_path / "device").exists()  # nothing ran on the device


def test_dropped_copy_is_retried(sshd, device_python, artifacts, tmp_path):
    """The first scp is cut off after part of the file went over; the retry completes it."""
    from edgekit.remote import SSHTransport
    from edgekit.validate.gate import Budget

    out, eval_path = artifacts
    log = tmp_path / "scp.log"
    wrapper = tmp_path / "flaky-scp"
    wrapper.write_text(f"""#!/bin/bash
# First call: copy slowly and cut the connection half-way. Later calls: plain scp.
marker={tmp_path}/cut-once
dest="${{@: -1}}"; dest="${{dest#*:}}"; src="${{@: -2:1}}"
if [ ! -e "$marker" ] && [ "$(stat -c %s "$src")" -gt 1000000 ]; then
  touch "$marker"
  scp -l 400 "$@" & pid=$!
  sleep 1; kill -9 $pid; wait $pid 2>/dev/null
  echo "cut $(stat -c %s "$dest" 2>/dev/null || echo 0)" >> {log}
  echo "Connection closed by 127.0.0.1 port 22 (simulated)" >&2
  exit 1
fi
echo "ok" >> {log}
exec scp "$@"
""")
    wrapper.chmod(0o755)
    big = tmp_path / "big"
    big.mkdir()
    # A larger eval set so the cut lands mid-file.
    x = np.random.default_rng(1).integers(0, 256, (2000, 28, 28)).astype(np.uint8)
    y = np.tile(np.arange(10), 200).astype(np.int64)
    np.savez(big / "eval.npz", x=x, y=y)
    profile = device_profile(sshd, device_python, tmp_path / "device")
    with SSHTransport(profile, scp=str(wrapper), backoff_s=0.1) as transport:
        # random labels: the model is at chance on them, so no accuracy gate (max_drop 100)
        result = remote(out, profile, big / "eval.npz", transport=transport,
                        budget=Budget(max_drop=100.0))
    lines = log.read_text().split("\n")
    cut = [int(line.split()[1]) for line in lines if line.startswith("cut")]
    assert len(cut) == 1 and cut[0] > 0, "the first copy should have been cut mid-file"
    eval_sha = result.records[0]["accuracy"]["eval_sample"]["sha256"]
    blob = tmp_path / "device" / "blobs" / eval_sha
    assert cut[0] < blob.stat().st_size
    from edgekit.io.files import sha256_file

    assert sha256_file(blob) == eval_sha
    assert result.copied["copy_attempts"] == result.copied["files"] + 1
    assert result.job_state == "complete" and len(result.records) == 2


def _wait_for(predicate, timeout: float = 120.0, step: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def test_killed_job_reports_partial_and_resumes(sshd, device_python, artifacts, tmp_path):
    out, eval_path = artifacts
    workdir = tmp_path / "device"
    # Each artifact's latency run takes >= 2 s, so the kill lands in the second one.
    profile = device_profile(sshd, device_python, workdir, min_seconds=2.0)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(
        result=remote(out, profile, eval_path)), daemon=True)
    thread.start()
    _wait_for(lambda: any(workdir.glob("jobs/*/records/0.json")))
    job_folder = next(workdir.glob("jobs/*/records/0.json")).parent.parent
    _wait_for(lambda: (job_folder / "logs" / "1.log").exists())
    owner = json.loads((workdir / "device.lock.json").read_text())
    os.killpg(owner["pgid"], signal.SIGKILL)  # the device "dies": runner and validator gone
    thread.join(timeout=120)
    partial = box["result"]
    assert partial.partial and partial.job_state == "partial"
    assert "stopped without finishing" in partial.partial_reason
    assert [r["artifact_name"] for r in partial.records] == ["model.onnx"]
    assert all(r["partial"] for r in partial.records)
    assert any(s["artifact"] == "model.int8.onnx" and "not measured" in s["reason"]
               for s in partial.skipped)
    assert partial.passed is False and "partial result" in partial.decisive["reasons"][-1]
    store = tmp_path / "results.db"
    assert len(partial.store_new_records(store)) == 1
    # Rerun: the same job resumes; the finished artifact is not measured again.
    resumed = remote(out, profile, eval_path)
    assert resumed.job_id == partial.job_id and resumed.job_state == "complete"
    assert [r["artifact_name"] for r in resumed.records] == ["model.onnx", "model.int8.onnx"]
    assert resumed.records[0]["latency"]["p50_ms"] == partial.records[0]["latency"]["p50_ms"]
    assert resumed.job_status["attempt"] == 2
    assert len(resumed.store_new_records(store)) == 1  # only the int8 record is new


def test_job_timeout_returns_partial(sshd, device_python, artifacts, tmp_path):
    out, eval_path = artifacts
    profile = device_profile(sshd, device_python, tmp_path / "device", min_seconds=4.0)
    result = remote(out, profile, eval_path, job_timeout=2.0)
    assert result.partial and "timeout" in result.partial_reason
    assert result.records == []
    assert {s["artifact"] for s in result.skipped} == {"model.onnx", "model.int8.onnx"}
    assert not result.passed


def test_one_job_per_device_at_a_time(sshd, device_python, artifacts, tmp_path):
    out, eval_path = artifacts
    profile = device_profile(sshd, device_python, tmp_path / "device", min_seconds=0.5)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(
        remote(out, profile, eval_path, rerun=True))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 2 and results[0].job_id != results[1].job_id
    spans = sorted((r.job_status["started"], r.job_status["finished"]) for r in results)
    assert spans[0][1] <= spans[1][0], f"jobs overlapped on the device: {spans}"
    assert all(r.job_state == "complete" and len(r.records) == 2 for r in results)


def test_device_without_edgekit_is_reported_with_the_fix(sshd, artifacts, tmp_path):
    from edgekit.errors import MissingDependencyError
    from edgekit.remote import check_remote

    out, eval_path = artifacts
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    profile = device_profile(sshd, str(bare / "bin" / "python"), tmp_path / "device")
    report = check_remote(profile)
    assert not report.ok
    assert report.missing[0]["what"].startswith("edgekit")
    assert f"{bare}/bin/python -m pip install 'edgekit" in report.missing[0]["fix"]
    assert any(m["what"] == "runtime onnxruntime" and "pip install 'onnxruntime'" in m["fix"]
               for m in report.missing)
    with pytest.raises(MissingDependencyError) as err:
        remote(out, profile, eval_path)
    assert "missing edgekit" in err.value.message and "pip install" in err.value.hint
    with pytest.raises(MissingDependencyError) as err:
        check_remote(profile.model_copy(update={"python": "/nonexistent/bin/python3"}))
    assert "no Python at" in err.value.message and "python:" in err.value.hint


@pytest.mark.skipif(shutil.which("ssh") is None,
                    reason="needs the OpenSSH client (apt-get install openssh-client)")
def test_unreachable_host_is_reported(device_python, artifacts, tmp_path):
    from edgekit.devices import DeviceProfile
    from edgekit.remote import DeviceUnreachableError

    out, eval_path = artifacts
    profile = DeviceProfile.model_validate({
        "name": "gone", "kind": "jetson", "runtimes": {"onnxruntime": {}},
        "host": "nobody@127.0.0.1", "port": free_port(), "python": device_python,
        "workdir": str(tmp_path / "device")})
    with pytest.raises(DeviceUnreachableError) as err:
        remote(out, profile, eval_path, connect_timeout=2)
    assert "is not reachable within 2s" in err.value.message
    assert "Connection refused" in err.value.message


def test_profile_and_path_errors(sshd, device_python, artifacts, tmp_path):
    from edgekit.errors import ConfigError, InputError
    from edgekit.remote import RemotePathError

    out, eval_path = artifacts
    profile = device_profile(sshd, device_python, tmp_path / "device")
    with pytest.raises(ConfigError, match="has no host"):
        remote(out, profile.model_copy(update={"host": None}), eval_path)
    with pytest.raises(ConfigError, match=r"contains '\.\.'"):
        remote(out, profile.model_copy(update={"workdir": "~/.edgekit/../../etc"}), eval_path)
    # A symlink inside the device's workdir that leads out of it is refused there.
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "blobs").symlink_to(outside)
    with pytest.raises(RemotePathError, match="outside the workdir"):
        remote(out, profile, eval_path)
    assert list(outside.iterdir()) == []
    # An artifact whose manifest name escapes the folder is refused before connecting.
    evil = tmp_path / "evil"
    (tmp_path / "escape.onnx").write_bytes((out / "model.onnx").read_bytes())
    evil.mkdir()
    from edgekit.io.manifest import Manifest

    Manifest(evil).add_stage("export", outputs=[{"path": "../escape.onnx", "format": "onnx",
                                                 "precision": "fp32"}])
    with pytest.raises(InputError, match="outside the output folder"):
        remote(evil, profile.model_copy(update={"port": free_port()}), eval_path)

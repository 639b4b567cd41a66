"""The remote confirmation's two sides without a network: the job that times two artifacts in
alternating rounds (edgekit.remote.alternate) is prepared and run by the device-side agent's own
functions in a workdir here, with torch made unimportable, and the workstation turns the
agent's answer into the sample sets `speedup.compare` takes, as for a local device. Over a real
sshd, inside `edgekit optimize`: tests/e2e/test_optimize_remote.py."""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace

import numpy as np
import pytest

from edgekit.devices import DeviceProfile
from edgekit.remote import RemoteError, agent
from edgekit.remote.alternate import AlternationJob, alternate_payload, collect_timed
from edgekit.runtimes.speedup import compare


def device(workdir) -> DeviceProfile:
    return DeviceProfile.model_validate({
        "name": "bench", "kind": "cpu", "threads": 1, "host": "user@bench.local",
        "workdir": str(workdir), "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}},
        "latency": {"warmup_count": 2, "warmup_seconds": 0.0, "min_queries": 24,
                    "min_seconds": 0.02, "max_seconds": 1.0}})


def python_without_torch(folder) -> str:
    """This Python with `import torch` failing, as on a device without torch."""
    import os

    (folder / "notorch" / "torch").mkdir(parents=True)
    (folder / "notorch" / "torch" / "__init__.py").write_text(
        "raise ImportError('torch is not installed on this device (edgekit test)')\n")
    path = ":".join(filter(None, [str(folder / "notorch"), os.environ.get("PYTHONPATH")]))
    wrapper = folder / "python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={path} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def test_alternating_job_runs_on_the_device_side_and_comes_back_paired(tiny_folder, tmp_path):
    from edgekit.io.artifacts import spec_for

    folder, _ = tiny_folder(noise=0.1)
    profile = device(tmp_path / "device")
    spec = spec_for(folder / "model.onnx")
    artifacts = {"candidate": (folder / "model.int8.onnx", "onnxruntime"),
                 "original": (folder / "model.onnx", "onnxruntime")}
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    job = AlternationJob(artifacts, profile, spec=spec, x=x, rounds=4, seed=0)
    payload = alternate_payload(job, None, workdir=tmp_path / "a", job_timeout=120.0)
    # each artifact under its label (two files of the same name never meet), one input batch
    assert {"candidate/model.int8.onnx", "original/model.onnx", "inputs.npz"} <= set(payload.files)
    assert [t["kind"] for t in payload.tasks] == ["alternate"]
    # the job id is the measurement's identity: the same inputs give the same job (a rerun
    # collects it), other rounds another one
    same = alternate_payload(job, None, workdir=tmp_path / "b", job_timeout=120.0)
    other = alternate_payload(replace(job, rounds=5), None, workdir=tmp_path / "b",
                              job_timeout=120.0)
    assert same.job_id == payload.job_id != other.job_id

    # the device: blobs in its workdir, the job prepared and run by the agent's own functions
    root = agent.resolve_workdir(str(tmp_path / "device"))
    (tmp_path / "device" / "blobs").mkdir()
    for rel, sha in payload.sha.items():
        shutil.copyfile(payload.files[rel], tmp_path / "device" / "blobs" / sha)
    job = {"tasks": payload.tasks, "timeout": 120,
           "python": python_without_torch(tmp_path / "py")}
    agent.cmd_prepare({"workdir": root, "job_id": payload.job_id, "files": payload.sha,
                       "device_profile": payload.device_yaml, "job": job})
    job_folder = agent.job_dir(root, payload.job_id)
    agent.run_job(job_folder, agent.read_json(f"{job_folder}/job.json"), 1)
    answer = agent.cmd_result({"workdir": root, "job_id": payload.job_id})
    assert answer["status"]["state"] == "complete", answer["tasks"]

    timed = collect_timed(answer, payload, profile, {"candidate", "original"})
    for stats in timed.values():
        assert len(stats["round_counts"]) == 4 and stats["rounds"] == 4
        assert len(stats["samples_ms"]) == sum(stats["round_counts"]) == stats["count"]
        assert stats["count"] >= 24  # the device's protocol, shared over the rounds
        assert stats["p50_ms"] == pytest.approx(float(np.median(stats["samples_ms"])))
        assert stats["remote"] == {"host": "user@bench.local", "job_id": payload.job_id,
                                   "reused": False, "finished": answer["status"]["finished"]}
    result = compare(timed["candidate"], timed["original"], min_speedup=1.0)
    assert result["method"] == "t interval over 4 alternating rounds (paired)"
    assert result["segments"] == [4, 4] and result["verdict"] in ("slower", "indistinguishable",
                                                                  "meets")
    assert result["speedup"] == pytest.approx(timed["original"]["p50_ms"]
                                              / timed["candidate"]["p50_ms"])


def test_a_job_that_did_not_finish_or_failed_says_why(tmp_path):
    profile = device(tmp_path / "device")
    from edgekit.remote.payload import Payload

    payload = Payload(tmp_path, {}, {}, [], [], {}, {}, [], "", job_id="ab" * 12)
    labels = {"candidate", "original"}
    with pytest.raises(RemoteError, match="did not finish on user@bench.local: the job's "
                                          "timeout"):
        collect_timed({"status": {"state": "partial",
                                  "reason": "the job's timeout (5s) ran out during task 0"},
                       "tasks": [None]}, payload, profile, labels)
    with pytest.raises(RemoteError, match="failed on user@bench.local: ModuleNotFoundError: "
                                          "No module named 'edgekit.runtimes.speedup'"):
        collect_timed({"status": {"state": "complete"}, "tasks": [{
            "rc": 1, "output": None, "error": "Traceback ...\nModuleNotFoundError: No module "
            "named 'edgekit.runtimes.speedup'\n"}]}, payload, profile, labels)
    with pytest.raises(RemoteError, match="failed on user@bench.local: no output"):
        collect_timed({"status": {"state": "complete"}, "tasks": [{
            "rc": 0, "output": {"timed": {"candidate": {}}}}]}, payload, profile, labels)

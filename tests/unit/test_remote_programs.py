"""The device-side program (edgekit/validate/device_program.py) is a module of the lean path,
not source text, and a leaf that the workstation ships by path: a job's tasks run the shipped file with their parameters (the run id included) as one JSON argument, and
its commands are called here directly on tiny ONNX models, in a job folder laid out as the agent
lays it out. Through the agent: tests/unit/test_remote_alternate.py; over a real sshd:
tests/e2e/test_remote_ssh.py and tests/e2e/test_optimize_remote.py."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.devices import DeviceProfile
from edgekit.io.files import sha256_file
from edgekit.remote.alternate import alternate_payload
from edgekit.remote.payload import (
    PROGRAM_COMMANDS,
    PROGRAM_NAME,
    build_payload,
    program_argv,
    program_file,
)
from edgekit.validate import device_program
from tests.unit.test_remote_alternate import device

PROGRAM_FILE = Path(device_program.__file__).resolve()


def job_folder(payload, where: Path) -> Path:
    """The job's files under `where` as the agent lays them out (device.yaml included)."""
    for rel, local in payload.files.items():
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, where / rel)
    (where / "device.yaml").write_text(payload.device_yaml)
    return where


def run_main(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    rc = device_program.main([PROGRAM_NAME, *argv])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out else None), err


def test_validation_tasks_run_the_shipped_program_with_the_run_id_as_an_argument(
        tiny_folder, tmp_path, monkeypatch, capsys):
    from edgekit.validate.gate import Budget
    from edgekit.validate.validator import validate

    folder, eval_path = tiny_folder(noise=0.05)
    profile = device(tmp_path / "device")
    common = dict(eval_source=str(eval_path), limit=None, data_dir=None,
                  budget={"max_drop": 1.0}, batches=None, job_timeout=120.0)
    (tmp_path / "w1").mkdir()
    payload = build_payload(folder, profile, None, workdir=tmp_path / "w1", **common)
    # the program travels as a file of the job, by content
    assert payload.files[PROGRAM_NAME] == PROGRAM_FILE
    assert payload.sha[PROGRAM_NAME] == sha256_file(PROGRAM_FILE)
    assert payload.run_id == f"remote-{payload.job_id[:16]}"
    assert len(payload.tasks) == 2  # model.onnx and model.int8.onnx
    for task in payload.tasks:
        python, program, command, args = task["argv"]
        assert (python, program, command) == ("{python}", PROGRAM_NAME, "validate")
        assert json.loads(args)["run_id"] == payload.run_id
        assert "{run_id}" not in args
    # a given run id (a recipe's stage) is an argument too, and part of the job id
    (tmp_path / "w2").mkdir()
    staged = build_payload(folder, profile, None, workdir=tmp_path / "w2", run_id="stage-7",
                           **common)
    assert staged.run_id == "stage-7" and staged.job_id != payload.job_id
    assert {json.loads(t["argv"][-1])["run_id"] for t in staged.tasks} == {"stage-7"}

    # the device side: the task's command called directly, in the job's folder
    monkeypatch.chdir(job_folder(staged, tmp_path / "job"))
    index = staged.task_artifacts.index("model.int8.onnx")  # the noisy one
    rc, answer, err = run_main(staged.tasks[index]["argv"][2:], capsys)
    assert rc == 0, err
    [result] = answer["results"]
    assert result["run_id"] == "stage-7"
    [record] = result["records"]
    assert len(record["latency"]["samples_ms"]) == record["latency"]["count"] >= 24
    # the same numbers as the validator run here on the same artifact and eval set
    here = validate(folder / "model.int8.onnx", profile.model_copy(update={"host": None}),
                    eval_source=str(eval_path), budget=Budget(max_drop=1.0))
    [local] = [r for r in here.records if Path(r["artifact"]).name == "model.int8.onnx"]
    assert record["accuracy"]["top1"] == local["accuracy"]["top1"]
    assert record["accuracy"]["samples"] == local["accuracy"]["samples"] == 200
    assert record["accuracy"]["fidelity"] == local["accuracy"]["fidelity"]
    assert record["accuracy"]["fidelity"]["max_abs_diff"] > 0  # the noise is seen


def test_a_refused_input_is_an_error_message_and_exit_2(tiny_folder, tmp_path, monkeypatch,
                                                         capsys):
    folder, eval_path = tiny_folder()
    profile = device(tmp_path / "device")
    payload = build_payload(folder, profile, None, eval_source=str(eval_path), limit=None,
                            data_dir=None, budget={}, batches=None, workdir=tmp_path,
                            job_timeout=120.0)
    monkeypatch.chdir(job_folder(payload, tmp_path / "job"))
    args = {**json.loads(payload.tasks[0]["argv"][-1]), "eval": "missing.npz"}
    rc, answer, err = run_main(["validate", json.dumps(args)], capsys)
    assert rc == 2 and answer is None
    assert err.startswith("error: missing.npz does not exist")  # with its hint, no traceback
    assert "Traceback" not in err
    rc, answer, err = run_main(["explode", "{}"], capsys)
    assert rc == 2 and answer is None and err.startswith("usage: ")


def test_alternate_command_times_both_artifacts_in_rounds(tiny_folder, tmp_path, monkeypatch,
                                                          capsys):
    from edgekit.io.artifacts import spec_for

    folder, _ = tiny_folder(noise=0.1)
    profile = device(tmp_path / "device")
    artifacts = {"candidate": (folder / "model.int8.onnx", "onnxruntime"),
                 "original": (folder / "model.onnx", "onnxruntime")}
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    payload = alternate_payload(artifacts, profile, None, spec=spec_for(folder / "model.onnx"),
                                x=x, rounds=3, seed=0, workdir=tmp_path, job_timeout=120.0)
    assert payload.files[PROGRAM_NAME] == PROGRAM_FILE
    [task] = payload.tasks
    assert task["argv"][:3] == ["{python}", PROGRAM_NAME, "alternate"]
    monkeypatch.chdir(job_folder(payload, tmp_path / "job"))
    rc, answer, err = run_main(task["argv"][2:], capsys)
    assert rc == 0, err
    assert set(answer["timed"]) == {"candidate", "original"}
    for stats in answer["timed"].values():
        assert len(stats["round_counts"]) == 3 == stats["rounds"]
        assert len(stats["samples_ms"]) == sum(stats["round_counts"]) == stats["count"] >= 24


def test_the_program_is_a_leaf_shipped_by_path_with_the_commands_the_workstation_names():
    """The workstation never imports it (remote/ sits below validate/): payload.py ships the file
    by path and names its commands; its top imports only the standard library, so a usage
    error answers before the device's edgekit is imported."""
    assert program_file() == PROGRAM_FILE
    assert PROGRAM_COMMANDS == tuple(device_program.COMMANDS)
    importers = [path.name for path in PROGRAM_FILE.parents[1].rglob("*.py")
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ImportFrom | ast.Import)
                 and "device_program" in ast.unparse(node)]
    assert importers == []
    tree = ast.parse(PROGRAM_FILE.read_text())
    top = [a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    top += [n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert top and set(top) <= sys.stdlib_module_names
    with pytest.raises(ValueError):
        program_argv("rm", {})


def test_the_shipped_file_run_as_the_device_runs_it_validates_without_torch(tiny_folder,
                                                                             tmp_path):
    """`PYTHON edgekit_program.py validate ARGS_JSON` in the job's folder, in a fresh
    interpreter: the answer is the validator's, and no torch module was imported (the lean path
    a device with numpy and a runtime has)."""
    folder, eval_path = tiny_folder()
    built = build_payload(folder, device(tmp_path / "device"), None, eval_source=str(eval_path),
                          limit=None, data_dir=None, budget={}, batches=None, workdir=tmp_path,
                          job_timeout=120.0)
    job = job_folder(built, tmp_path / "job")
    argv = [sys.executable if a == "{python}" else a for a in built.tasks[0]["argv"]]
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], cwd=job,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [result] = json.loads(done.stdout)["results"]
    assert result["records"][0]["accuracy"]["samples"] == 200
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert {"edgekit", "numpy", "onnxruntime"} <= imported
    assert not imported & {"torch", "torchvision"}


def test_tensorrt_tasks_build_then_validate_with_the_program(tiny_folder, tmp_path):
    """On a device that can use TensorRT: an `edgekit export` step per precision (no program,
    left as it is), then the program validates the engines it finds, with the run id."""
    from edgekit.remote.device import DeviceReport

    folder, eval_path = tiny_folder()
    profile = DeviceProfile.model_validate({
        "name": "orin", "kind": "jetson", "host": "user@orin.local",
        "workdir": str(tmp_path / "device"),
        "runtimes": {"onnxruntime": {"precisions": ["fp32"]},
                     "tensorrt": {"precisions": ["fp16", "int8"]}}})
    report = DeviceReport(host="user@orin.local", workdir="~/.edgekit", python={},
                          edgekit={}, runtimes={"onnxruntime": {"importable": True},
                                                "tensorrt": {"importable": True}},
                          packages={}, environment={})
    payload = build_payload(folder, profile, report, eval_source=str(eval_path), limit=None,
                            data_dir=None, budget={}, batches=None, workdir=tmp_path,
                            job_timeout=60.0, run_id="stage-2")
    steps = [t["argv"] for t in payload.tasks if t.get("kind") == "step"]
    assert [a[:6] for a in steps] == [["{python}", "-m", "edgekit", "export", "out", "--target"]] * 2
    assert [a[a.index("--precision") + 1] for a in steps] == ["fp16", "int8"]
    [engines] = [t for t in payload.tasks if t.get("globs_engines")]
    python, program, command, args = engines["argv"]
    assert (python, program, command) == ("{python}", PROGRAM_NAME, "validate")
    args = json.loads(args)
    assert args["run_id"] == "stage-2" and args["globs"] and args["target"] == "out"

"""The executor interface: the validator builds a ValidationJob and hands it to the executor the
profile asks for (local, or ssh for a profile with a host); an executor registers by
subclassing and receives the validator's in-process `run_here`, which is what a Ray executor
will ship to a node; a result stores its records once, by run or by record key."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from edgekit.devices import DeviceProfile
from edgekit.errors import InputError
from edgekit.executors import EXECUTORS, Executor, ValidationJob, executor_name, get_executor
from edgekit.results.validation import ValidationResult
from edgekit.validate.gate import Budget
from edgekit.validate.validator import run_here, validate

LOCAL = {"name": "cpu", "kind": "cpu", "runtimes": {"onnxruntime": {}}}


def test_the_profile_chooses_the_executor() -> None:
    local = DeviceProfile.model_validate(LOCAL)
    remote = DeviceProfile.model_validate({**LOCAL, "host": "me@jetson.local"})
    assert executor_name(local) == "local" and executor_name(remote) == "ssh"
    assert type(get_executor("local", run_here)).__name__ == "LocalExecutor"
    assert type(get_executor("ssh", run_here)).__name__ == "SSHExecutor"
    with pytest.raises(InputError) as exc:
        get_executor("sssh", run_here)
    assert exc.value.hint == "did you mean 'ssh'?"


def test_an_executor_gets_the_job_and_the_work(tmp_path: Path) -> None:
    """What a Ray executor will do: receive a picklable job and the function to run on it."""
    seen: list[ValidationJob] = []

    class Recording(Executor):
        name = "recording-test"

        def run(self, job: ValidationJob) -> ValidationResult:
            seen.append(pickle.loads(pickle.dumps(job)))  # travels to another process intact
            return ValidationResult(job.device.name, job.budget, job.run_id or "r1")

    try:
        device = DeviceProfile.model_validate(LOCAL)
        job = ValidationJob(target=tmp_path, device=device, eval_source="fashion-mnist:test",
                            budget=Budget(max_drop=1.0), batches=[1], run_id="r1")
        executor = get_executor("recording-test", run_here)
        assert executor.run_here is run_here
        result = executor.run(job)
        assert seen == [job] and result.run_id == "r1" and seen[0].budget.max_drop == 1.0
    finally:
        EXECUTORS.pop("recording-test", None)


def test_validate_hands_a_local_profile_to_the_local_executor(tmp_path: Path) -> None:
    device = DeviceProfile.model_validate(LOCAL)
    with pytest.raises(InputError, match="holds no runnable artifact"):  # run_here ran here
        validate(tmp_path, device, eval_source="fashion-mnist:test")


def _record(key: str | None = None) -> dict:
    record = {"artifact": "model.onnx", "runtime": "onnxruntime", "batch": 1,
              "latency": {"p50_ms": 1.0}, "accuracy": {"top1": 0.9}}
    return {**record, "record_key": key} if key else record


def test_results_are_stored_once(tmp_path: Path) -> None:
    from edgekit.results.store import open_store

    store = tmp_path / "results.db"
    local = ValidationResult("cpu", Budget(), "run-a", records=[_record(), _record()])
    assert len(local.store(store)) == 2
    assert local.store(store) == []  # the same run is not stored again
    remote = ValidationResult("jetson", None, "run-b", records=[_record("job/0/0")])
    assert len(remote.store(store)) == 1
    resumed = ValidationResult("jetson", None, "run-b",
                               records=[_record("job/0/0"), _record("job/1/0")])
    assert len(resumed.store(store)) == 1  # only the new record of the resumed job
    with open_store(store) as db:
        assert db.count() == 4


# ------------------------------------------------------------- one place knows where work runs
WHERE_WORK_RUNS = ("edgekit.remote", "ray", "edgekit.executors.local", "edgekit.executors.ssh",
                   "edgekit.executors.ray")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, lazy ones inside functions included; `from
    edgekit import remote` counts as edgekit.remote."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            if node.module == "edgekit":
                found += [(node.lineno, f"edgekit.{alias.name}") for alias in node.names]
    return found


def reaches_past_the_executors(root: Path) -> list[str]:
    """Every import, outside edgekit/executors/ (and edgekit/remote/, the SSH executor's own
    implementation), of edgekit.remote, Ray or one executor's module: callers use
    edgekit.executors' interface (executor_for, Executor) only."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("executors/", "remote/")):
            continue
        for line, module in _imports(path):
            if any(module == m or module.startswith(m + ".") for m in WHERE_WORK_RUNS):
                bad.append(f"edgekit/{rel}:{line} imports {module}")
    return sorted(set(bad))


def test_only_the_executors_know_where_work_runs(tmp_path: Path) -> None:
    import edgekit

    assert reaches_past_the_executors(Path(edgekit.__file__).resolve().parent) == []
    # the check itself sees every way of reaching past the interface
    (tmp_path / "executors").mkdir()
    (tmp_path / "executors" / "ray.py").write_text("import ray\n")  # the executor itself: fine
    (tmp_path / "optimize").mkdir()
    (tmp_path / "optimize" / "measure.py").write_text(
        "from edgekit.executors import executor_for\n"
        "def f():\n    from edgekit.remote import RemoteError\n    import ray.util\n"
        "    from edgekit.executors.ray import ClusterError\n    from edgekit import remote\n")
    assert reaches_past_the_executors(tmp_path) == [
        "edgekit/optimize/measure.py:3 imports edgekit.remote",
        "edgekit/optimize/measure.py:4 imports ray.util",
        "edgekit/optimize/measure.py:5 imports edgekit.executors.ray",
        "edgekit/optimize/measure.py:6 imports edgekit.remote"]

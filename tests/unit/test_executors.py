"""The executor interface: the validator builds a ValidationJob and hands it to the executor the
profile asks for (local, or ssh for a profile with a host); an executor registers by
subclassing and receives the validator's in-process `run_here`, which is what a Ray executor
will ship to a node; a result stores its records once, by run or by record key."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from edgekit.data.given import DataSources
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

        def validate(self, job: ValidationJob) -> ValidationResult:
            seen.append(pickle.loads(pickle.dumps(job)))  # travels to another process intact
            return ValidationResult(job.device.name, job.budget, job.run_id or "r1")

    try:
        device = DeviceProfile.model_validate(LOCAL)
        job = ValidationJob(target=tmp_path, device=device,
                            budget=Budget(max_drop=1.0), batches=[1], run_id="r1",
                            data=DataSources(eval="fashion-mnist:test"))
        executor = get_executor("recording-test", run_here)
        assert executor.run_here is run_here
        result = executor.validate(job)
        assert seen == [job] and result.run_id == "r1" and seen[0].budget.max_drop == 1.0
    finally:
        EXECUTORS.pop("recording-test", None)


def test_validate_hands_a_local_profile_to_the_local_executor(tmp_path: Path) -> None:
    device = DeviceProfile.model_validate(LOCAL)
    with pytest.raises(InputError, match="holds no runnable artifact"):  # run_here ran here
        validate(ValidationJob(target=tmp_path, device=device,
                               data=DataSources(eval="fashion-mnist:test")))


def test_the_factory_picks_the_executor_from_the_device_and_the_cluster() -> None:
    from edgekit.executors import executor_class, executor_for
    from edgekit.validate.validator import HERE

    local = DeviceProfile.model_validate(LOCAL)
    remote = DeviceProfile.model_validate({**LOCAL, "name": "orin", "host": "me@jetson.local"})
    cluster = object()  # (only held until a task runs)
    picked = {name: type(executor_for(d, HERE, cluster=c)).__name__
              for name, d, c in (("local", local, None), ("ssh", remote, None),
                                 ("ray", remote, cluster))}
    assert picked == {"local": "LocalExecutor", "ssh": "SSHExecutor", "ray": "RayExecutor"}
    with executor_for(remote, HERE, cluster=cluster) as ray:
        assert ray.resource == "edgekit-device:orin" and ray.here is HERE
    # what callers ask instead of the kind: who times the work, who builds the engines
    assert [executor_class(d, clustered=c).measures_here for d, c in
            ((local, False), (remote, False), (local, True))] == [True, False, False]
    assert [executor_class(d, clustered=c).builds_on_device(d) for d, c in
            ((local, False), (remote, False), (local, True), (remote, True))] == \
        [False, True, False, True]
    assert pickle.loads(pickle.dumps(HERE)) == HERE  # it travels to a Ray node


def test_the_local_executor_checks_and_times_two_artifacts_together(tmp_path: Path) -> None:
    """`check` is the validator's runtime status here; `alternate` times both artifacts in
    alternating rounds with the device's protocol and closes the runners it opened."""
    import numpy as np

    from edgekit.executors import executor_for
    from edgekit.runtimes.base import open_runners
    from edgekit.spec import InputSpec
    from edgekit.validate.validator import HERE, runtime_status
    from tests.helpers import tiny_onnx

    spec = InputSpec(shape=(1, 1, 8, 8), mean=(0.0,), std=(1.0,))
    a, b = tiny_onnx(tmp_path / "a.onnx", spec), tiny_onnx(tmp_path / "b.onnx", spec)
    device = DeviceProfile.model_validate({
        **LOCAL, "threads": 1, "latency": {"warmup_count": 2, "warmup_seconds": 0.0,
                                           "min_queries": 12, "min_seconds": 0.0,
                                           "max_seconds": 2.0}})
    before = open_runners()
    with executor_for(device, HERE) as executor:
        assert executor.check(device) == runtime_status(device)
        assert [(s.name, s.usable) for s in executor.check(device)] == [("onnxruntime", True)]
        timed = executor.alternate({"candidate": (a, "onnxruntime"), "original":
                                    (b, "onnxruntime")}, device, spec=spec,
                                   x=np.zeros((1, 1, 8, 8), np.float32), rounds=3)
    assert set(timed) == {"candidate", "original"}
    for stats in timed.values():  # every round of the protocol's queries, split in 3 rounds
        assert len(stats["round_counts"]) == 3 and sum(stats["round_counts"]) >= 12
        assert len(stats["samples_ms"]) == sum(stats["round_counts"])
    assert open_runners() == before


@pytest.mark.skipif(shutil.which("ssh") is None,
                    reason="needs the OpenSSH client (apt-get install openssh-client)")
def test_the_ssh_executor_translates_a_device_that_does_not_answer(tmp_path: Path) -> None:
    """Nothing listens on the port: the transport's DeviceUnreachableError comes out of the
    executor as a DeviceLostError with the same message, hint and exit code (what optimize and
    the fleet catch), for each of validate, alternate and check."""
    import socket

    import numpy as np

    from edgekit.executors import DeviceLostError, executor_for
    from edgekit.spec import InputSpec
    from edgekit.validate.validator import HERE
    from tests.helpers import tiny_onnx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    device = DeviceProfile.model_validate({
        **LOCAL, "name": "gone", "host": "nobody@127.0.0.1", "port": port,
        "connect_timeout": 2, "known_hosts": str(tmp_path / "known_hosts")})
    spec = InputSpec(shape=(1, 1, 8, 8), mean=(0.0,), std=(1.0,))
    model = tiny_onnx(tmp_path / "model.onnx", spec)
    np.savez(tmp_path / "eval.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    with executor_for(device, HERE) as executor:
        calls = {
            "validate": lambda: executor.validate(ValidationJob(
                target=model, device=device,
                budget=Budget(), data=DataSources(eval=str(tmp_path / "eval.npz")))),
            "alternate": lambda: executor.alternate({"a": (model, "onnxruntime")}, device,
                                                    spec=spec, x=np.zeros((1, 1, 8, 8),
                                                                          np.float32), rounds=2),
            "check": lambda: executor.check(device)}
        for what, call in calls.items():
            with pytest.raises(DeviceLostError) as err:
                call()
            assert "is not reachable within 2s" in err.value.message, what
            assert "Connection refused" in err.value.message, what
            assert err.value.exit_code == 2, what  # the transport's (bad input: the address)


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


@pytest.mark.skipif(shutil.which("ssh") is None,
                    reason="needs the OpenSSH client (apt-get install openssh-client)")
def test_devices_remote_checks_through_the_executor(tmp_path: Path, monkeypatch, capsys) -> None:
    """`edgekit devices --remote` asks each profile's executor: this machine's runtimes for a
    local profile, the device (over SSH) for one with a host; a device that does not answer
    marks its runtimes with why, and the listing goes on."""
    import json
    import socket

    import yaml

    from edgekit.cli import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "gone-box.yaml").write_text(yaml.safe_dump({
        "schema_version": 1, "name": "gone-box", "kind": "cpu",
        "runtimes": {"onnxruntime": {}}, "host": "nobody@127.0.0.1", "port": port,
        "connect_timeout": 2, "known_hosts": str(tmp_path / "known_hosts")}))
    monkeypatch.chdir(tmp_path)
    main(["devices", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["gone-box"]["runtimes"]["onnxruntime"] == {
        "precisions": ["fp32"], "usable_here": None,
        "reason": "on the device; checked when validating (or with --remote)"}
    assert rows["local-cpu"]["runtimes"]["onnxruntime"]["usable_here"] is True
    main(["devices", "--remote", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    gone = rows["gone-box"]["runtimes"]["onnxruntime"]
    assert gone["usable_here"] is False and gone["reason"].startswith("device check failed: ")
    assert "is not reachable within 2s" in gone["reason"]
    assert rows["local-cpu"]["runtimes"]["onnxruntime"]["usable_here"] is True

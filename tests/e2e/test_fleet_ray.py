"""A fleet across a real Ray cluster on loopback (ray.cluster_utils.Cluster: a head and two
worker nodes, real raylets and object stores, reached through Ray Client at ray://127.0.0.1),
each node owning one device through a custom resource: two local CPU devices and the loopback
sshd device (tests/sshd.py), reached over SSH from the worker that owns it.

Covers: several artifacts validated across three devices, the merged records equal a sequential
run's top-1 and pass/fail and land in one store; a device no node offers is reported, the rest
run; a worker killed mid-run leaves the other devices' results in the store and reports the lost
device's jobs; a node with another edgekit version is refused with both versions; an address that
does not answer and a public one are refused before anything runs."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from edgekit.data.given import DataSources
from edgekit.executors import ValidationJob
from edgekit.net import free_port, wait_for_port
from tests.e2e import test_remote_ssh as ssh_tests
from tests.e2e.test_remote_ssh import FAST_LATENCY, make_output_folder

# The loopback sshd device and its torch-less Python, as the SSH tests make them.
sshd = ssh_tests.sshd
device_python = ssh_tests.device_python

ray = pytest.importorskip("ray", reason='needs Ray: pip install "edgekit[fleet]"')
pytestmark = [pytest.mark.ray, pytest.mark.ssh]

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (owns cpu-a) + worker 1 (owns cpu-b) + worker 2 (owns the sshd device), all bound
    to 127.0.0.1; yields (Cluster, ray://address, {device: node})."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"  # keep 127.0.0.1 as the address, as edgekit does for loopback
    base = tmp_path_factory.mktemp("ray")
    client_port = free_port()

    def node_args(name: str, resource: str) -> dict:
        return {"num_cpus": 1, "node_ip_address": "127.0.0.1",
                "resources": {f"edgekit-device:{resource}": 1},
                "env_vars": {"EDGEKIT_RAY_CACHE": str(base / name)}}

    c = Cluster(initialize_head=True, head_node_args={
        **node_args("head", "cpu-a"), "include_dashboard": False,
        "ray_client_server_port": client_port})
    workers = {"cpu-b": c.add_node(**node_args("worker-1", "cpu-b")),
               "loopback": c.add_node(**node_args("worker-2", "loopback"))}
    c.wait_for_nodes()
    wait_for_port(client_port)
    yield c, f"ray://127.0.0.1:{client_port}", workers
    c.shutdown()
    if saved is None:
        os.environ.pop(LOOPBACK_ENV, None)
    else:
        os.environ[LOOPBACK_ENV] = saved


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    eval_path = make_output_folder(base / "out", n_per_class=30)
    return base / "out", eval_path


def profiles(sshd, python, tmp: Path, slow_ms: float | None = None) -> list:
    from edgekit.devices import DeviceProfile
    from edgekit.fleetfile import fleet_device

    def local(name: str, delay: float | None = None) -> DeviceProfile:
        options = {"options": {"simulated_delay_ms": delay}} if delay else {}
        return DeviceProfile.model_validate({
            "name": name, "kind": "cpu", "threads": 1, "batch_sizes": [1],
            "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"],
                                         "providers": ["CPUExecutionProvider"], **options}},
            "latency": FAST_LATENCY})

    loop = DeviceProfile.model_validate({
        "name": "loopback", "kind": "cpu", "threads": 1, "batch_sizes": [1],
        "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"],
                                     "providers": ["CPUExecutionProvider"]}},
        "latency": FAST_LATENCY, "python": python, "workdir": str(tmp / "device-workdir"),
        **sshd.profile_fields()})
    return [fleet_device(local("cpu-a"), node="head"),
            fleet_device(local("cpu-b", slow_ms), node="worker-1"),
            fleet_device(loop, node="worker-2")]


def key(r: dict) -> tuple:
    return (r["device"], r["artifact_name"], r["runtime"], r["batch"])


def test_fleet_on_cluster_matches_sequential_run(cluster, folder, sshd, device_python,
                                                 tmp_path):
    from edgekit.data.given import DataSources
    from edgekit.executors import ValidationJob
    from edgekit.fleetfile import fleet_device
    from edgekit.results.store import open_store
    from edgekit.validate.fleet import validate_on_cluster
    from edgekit.validate.validator import validate

    _, address, _ = cluster
    out, eval_path = folder
    devices = profiles(sshd, device_python, tmp_path)
    ghost = fleet_device(devices[0].profile, name="ghost")  # no node offers edgekit-device:ghost
    store = tmp_path / "fleet.db"
    fleet = validate_on_cluster(ValidationJob(target=out, device=None,
                                              data=DataSources(eval=str(eval_path))),
                                [*devices, ghost], address=address, lost_grace_s=3.0)
    fleet.store(store)
    by_name = {o.device.name: o for o in fleet.outcomes}
    assert [o.status for o in fleet.outcomes[:3]] == ["pass", "pass", "pass"], \
        [(o.device.name, o.error) for o in fleet.outcomes]
    assert by_name["ghost"].status == "failed" and by_name["ghost"].result is None
    assert "no node of the cluster offers edgekit-device:ghost" in by_name["ghost"].error
    # Each device's tasks ran on the node that owns it, and everything landed in one store.
    nodes = {o.device.name: {r["ray"]["resource"] for r in o.result.records}
             for o in fleet.outcomes[:3]}
    assert nodes == {d.name: {d.resource} for d in devices}
    assert {r["artifact_name"] for r in fleet.records} == {"model.onnx", "model.int8.onnx"}
    with open_store(store) as s:
        stored = s.records()
    assert len(stored) == len(fleet.records) == 6
    assert fleet.store(store) == []  # stored once
    # The same devices one after another, in this process (the loopback device is this machine;
    # tests/e2e/test_remote_ssh.py proves its SSH numbers equal a local run's).
    sequential = []
    for d in devices:
        r = validate(ValidationJob(target=out, device=d.profile.model_copy(update={"host": None}),
                                   data=DataSources(eval=str(eval_path))))
        sequential += [{**x, "device": d.name} for x in r.records]
    merged = {key(r): r for r in stored}
    assert set(merged) == {key(r) for r in sequential}
    for r in sequential:
        m = merged[key(r)]
        assert m["accuracy"]["top1"] == pytest.approx(r["accuracy"]["top1"], abs=1e-12)
        assert m["gate"]["passed"] == r["gate"]["passed"]
    assert 0.2 < min(r["accuracy"]["top1"] for r in sequential) < 0.99  # numbers that can differ


def test_cli_fleet_file_on_cluster(cluster, folder, tmp_path):
    """`edgekit validate OUT --fleet FILE --cluster ray://...` in a fresh process: every device
    of the file on its node, one store, the JSON says where each ran."""
    import json
    import subprocess
    import sys

    import yaml

    _, address, _ = cluster
    out, eval_path = folder
    for name in ("cpu-a", "cpu-b"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "kind": "cpu", "threads": 1, "batch_sizes": [1],
            "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}},
            "latency": FAST_LATENCY}))
    fleet = tmp_path / "fleet-loop.yaml"
    fleet.write_text(yaml.safe_dump({"name": "loop", "devices": [
        {"profile": "cpu-a.yaml", "node": "head"}, {"profile": "cpu-b.yaml", "node": "worker-1"},
        {"profile": "cpu-a.yaml", "name": "nowhere", "node": "worker-9"}]}))
    store = tmp_path / "fleet.db"
    proc = subprocess.run([sys.executable, "-m", "edgekit", "validate", str(out), "--fleet",
                           str(fleet), "--cluster", address, "--eval", str(eval_path),
                           "--store", str(store), "--json"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 1, proc.stderr  # "nowhere" has no node
    data = json.loads(proc.stdout)
    status = {d["device"]: d["status"] for d in data["devices"]}
    assert status == {"cpu-a": "pass", "cpu-b": "pass", "nowhere": "failed"}
    assert "edgekit-device:nowhere" in data["devices"][2]["error"]
    for d in data["devices"][:2]:
        assert {r["ray"]["resource"] for r in d["result"]["records"]} == {
            f"edgekit-device:{d['device']}"}
    assert len(data["stored_ids"]) == 4


def test_the_ray_executor_checks_a_device_on_the_node_that_owns_it(cluster, sshd,
                                                                  device_python, tmp_path):
    """`check` through the one interface: a local profile's runtimes are checked in a task on
    its node (what that node has installed), the loopback device's over SSH from worker 2 (what
    the device reports); a device no node offers is a DeviceLostError, nothing raised by Ray."""
    from edgekit.executors import DeviceLostError, connect_cluster, executor_for
    from edgekit.validate.validator import HERE, runtime_status

    _, address, _ = cluster
    devices = profiles(sshd, device_python, tmp_path)
    with connect_cluster(address, [d.resource for d in devices]) as connected:
        checked = {}
        for d in devices:
            with executor_for(d.profile, HERE, cluster=connected, resource=d.resource) as ex:
                checked[d.name] = [(s.name, s.usable) for s in ex.check(d.profile)]
        assert checked == {name: [("onnxruntime", True)] for name in ("cpu-a", "cpu-b",
                                                                      "loopback")}
        here = [(s.name, s.usable, s.reason) for s in runtime_status(devices[0].profile)]
        with executor_for(devices[0].profile, HERE, cluster=connected) as ex:
            assert [(s.name, s.usable, s.reason) for s in ex.check(devices[0].profile)] == here
        with executor_for(devices[0].profile, HERE, cluster=connected,
                          resource="edgekit-device:nowhere") as ex, \
                pytest.raises(DeviceLostError, match="no node of the cluster offers "
                              "edgekit-device:nowhere"):
            ex.check(devices[0].profile)


def test_worker_lost_mid_run_keeps_the_others(cluster, folder, sshd, device_python, tmp_path):
    """cpu-b is slow (100 ms per query); its worker is killed as soon as it has measured one of
    its two artifacts: that one is kept and stored, the other is reported with the reason."""
    from edgekit.events import sink
    from edgekit.results.store import open_store
    from edgekit.validate.fleet import validate_on_cluster

    c, address, workers = cluster
    out, eval_path = folder
    devices = profiles(sshd, device_python, tmp_path, slow_ms=100.0)
    one_done = threading.Event()

    def watch(line: str) -> None:  # the sink of edgekit.events, from the fleet's threads
        if line.startswith("cpu-b: ") and "measured on" in line:
            one_done.set()

    def kill_after_one_artifact() -> None:
        if one_done.wait(timeout=240):
            c.remove_node(workers.pop("cpu-b"))

    killer = threading.Thread(target=kill_after_one_artifact)
    killer.start()
    with sink(watch):
        fleet = validate_on_cluster(ValidationJob(target=out, device=None,
                                                  data=DataSources(eval=str(eval_path))),
                                    devices, address=address, lost_grace_s=3.0, max_retries=1)
    killer.join()
    assert "cpu-b" not in workers, "cpu-b measured nothing before the test gave up"
    store = tmp_path / "fleet.db"
    fleet.store(store)
    by_name = {o.device.name: o for o in fleet.outcomes}
    assert by_name["cpu-a"].status == "pass" and by_name["loopback"].status == "pass"
    lost = by_name["cpu-b"]
    assert lost.status == "partial" and not lost.passed, lost.to_json()
    assert "edgekit-device:cpu-b" in lost.partial_reason
    assert "left the cluster" in lost.partial_reason
    finished = {r["artifact_name"] for r in lost.result.records}
    assert len(finished) == 1
    missing = ({"model.onnx", "model.int8.onnx"} - finished).pop()
    assert any(s["artifact"] == missing and "left the cluster" in s["reason"]
               for s in lost.result.skipped)
    with open_store(store) as s:
        stored = s.records()
    assert {(r["device"], r["artifact_name"]) for r in stored} == {
        *((d, a) for d in ("cpu-a", "loopback") for a in ("model.onnx", "model.int8.onnx")),
        ("cpu-b", finished.pop())}
    assert not fleet.passed


def test_node_with_another_edgekit_is_refused(cluster, tmp_path):
    from edgekit import __version__
    from edgekit.errors import InputError
    from edgekit.executors.ray import RayCluster

    c, address, _ = cluster
    other = tmp_path / "other"
    shutil.copytree(ROOT / "edgekit", other / "edgekit",
                    ignore=shutil.ignore_patterns("_data", "__pycache__"))
    init = other / "edgekit" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{__version__}"',
                                             '__version__ = "0.0.1-other"'))
    node = c.add_node(num_cpus=1, node_ip_address="127.0.0.1",
                      resources={"edgekit-device:old": 1},
                      env_vars={"PYTHONPATH": str(other)})
    try:
        with RayCluster(address) as rc, pytest.raises(InputError) as err:
            rc.check_versions(["edgekit-device:old"])
        assert "0.0.1-other" in err.value.message and __version__ in err.value.message
    finally:
        c.remove_node(node)


def test_real_ray_ports_answer_the_http2_probe(cluster):
    """The probe that refuses a port that is not Ray (issue 25 item 7; tests/unit/test_net.py)
    lets Ray's own ports through: the Ray Client server and the head's GCS."""
    from edgekit.executors.ray import check_address
    from edgekit.net import http2_answer

    c, address, _ = cluster
    client_port = int(address.rsplit(":", 1)[1])
    gcs_host, gcs_port = c.address.rsplit(":", 1)
    assert http2_answer("127.0.0.1", client_port) is None
    assert http2_answer(gcs_host, int(gcs_port)) is None
    check_address(address)
    check_address(c.address)


def test_cli_refuses_silent_or_public_cluster(folder, tmp_path):
    import subprocess
    import sys

    out, eval_path = folder
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for address, expected in ((f"ray://127.0.0.1:{free_port()}", "does not answer"),
                              ("ray://8.8.8.8:10001", "not on a private network")):
        proc = subprocess.run([sys.executable, "-m", "edgekit", "validate", str(out), "--device",
                               "local-cpu", "--cluster", address, "--eval", str(eval_path),
                               "--store", str(tmp_path / "s.db")], capture_output=True,
                              text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr
        assert not (tmp_path / "s.jsonl").exists()

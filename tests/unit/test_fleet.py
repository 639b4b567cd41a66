"""Several devices at once on one workstation (edgekit/validate/fleet.py) and fleet files
(edgekit/fleetfile.py): devices run concurrently, local profiles take turns, a failing device is
reported while the others land in one store and one table; fleet-file bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgekit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write_fleet(tmp_path: Path, devices: list[dict], **extra) -> Path:
    path = tmp_path / "fleet-test.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "name": "test", "devices": devices,
                                    **extra}))
    return path


def remote_profile(tmp_path: Path, name: str, port: int, host: str = "me@127.0.0.1") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "kind": "cpu", "host": host, "port": port, "connect_timeout": 2,
        "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}}}))
    return path.name


def test_shipped_example_fleet_loads():
    from edgekit.devices import list_profiles
    from edgekit.fleetfile import load_fleet

    devices = load_fleet(ROOT / "devices" / "fleet-example.yaml")
    assert [(d.name, d.resource) for d in devices] == [
        ("local-cpu", "edgekit-device:local-cpu"), ("orin-nano", "edgekit-device:orin-nano")]
    assert devices[1].profile.name == "orin-nano" and devices[1].physical == "local on orin-nano-1"
    assert not any(p.stem.startswith("fleet-") for p in list_profiles())  # not a profile


@pytest.mark.parametrize("devices, extra, message, hint", [
    ([{"profile": "local-cpuu"}], {}, "no device profile 'local-cpuu'", "did you mean 'local-cpu'"),
    ([{"profile": "local-cpu", "nodes": "a"}], {}, "unknown key 'devices.0.nodes'",
     "did you mean 'node'"),
    ([{"profile": "local-cpu"}], {"devicess": []}, "unknown key 'devicess'",
     "did you mean 'devices'"),
    ([{"profile": "local-cpu", "node": "a"}, {"profile": "local-cpu", "name": "b", "node": "a"}],
     {}, "are the same physical device (local on a)", "give each local device the `node:`"),
    ([{"profile": "local-cpu", "node": "a"}, {"profile": "local-cpu", "node": "b"}], {},
     "are the same name (local-cpu)", "list each device once"),
    ([{"profile": "local-cpu", "node": "a", "resource": "r"},
      {"profile": "local-cpu", "name": "b", "node": "b", "resource": "r"}], {},
     "are the same resource (r)", "list each device once"),
    ([], {}, "devices", None),
])
def test_fleet_file_bad_input(tmp_path, devices, extra, message, hint):
    from edgekit.fleetfile import load_fleet

    with pytest.raises(ConfigError) as err:
        load_fleet(write_fleet(tmp_path, devices, **extra))
    assert message in err.value.message
    if hint:
        assert hint in err.value.hint


def test_two_entries_for_one_ssh_device_are_refused(tmp_path):
    from edgekit.fleetfile import load_fleet

    a = remote_profile(tmp_path, "lab-a", 2222, "me@10.0.0.7")
    b = remote_profile(tmp_path, "lab-b", 2222, "other@10.0.0.7")
    with pytest.raises(ConfigError) as err:
        load_fleet(write_fleet(tmp_path, [{"profile": a}, {"profile": b}]))
    assert "'lab-a' and 'lab-b' are the same physical device (ssh 10.0.0.7:2222)" in \
        err.value.message
    c = remote_profile(tmp_path, "lab-c", 2223, "me@10.0.0.7")  # another port: another device
    assert len(load_fleet(write_fleet(tmp_path, [{"profile": a}, {"profile": c}]))) == 2


def test_devices_run_at_once_and_a_failing_one_is_reported(tiny_folder, quick_profile, tmp_path):
    """Two local profiles (they take turns on this machine) and a remote device that does not
    answer: the local ones pass and land in the one store; the remote one is reported with its
    reason; the numbers equal a single-device run's."""
    from edgekit.data.given import DataSources
    from edgekit.devices import load_profile
    from edgekit.events import capture
    from edgekit.executors import ValidationJob
    from edgekit.fleetfile import fleet_device
    from edgekit.results.store import open_store
    from edgekit.validate.fleet import validate_fleet
    from edgekit.validate.validator import validate
    from tests.sshd import free_port

    folder, eval_path = tiny_folder(noise=0.05)
    fast = load_profile(quick_profile(name="fast-cpu"))
    slow = load_profile(quick_profile(
        name="slow-cpu", runtimes={"onnxruntime": {"precisions": ["fp32", "int8"],
                                                   "options": {"simulated_delay_ms": 1.0}}}))
    gone = load_profile(tmp_path / remote_profile(tmp_path, "gone", free_port()))
    devices = [fleet_device(p) for p in (fast, slow, gone)]
    with capture() as events:  # said from the fleet's threads, one per device
        fleet = validate_fleet(ValidationJob(target=folder, device=None,
                                             data=DataSources(eval=str(eval_path))),
                               devices)
    assert [o.status for o in fleet.outcomes] == ["pass", "pass", "failed"]
    assert "127.0.0.1" in fleet.outcomes[2].error and fleet.outcomes[2].result is None
    # the fleet's lines and, through the same channel, the SSH job's check of "gone"
    checking = [e for e in events if e.startswith("checking gone at me@127.0.0.1 port ")]
    assert len(checking) == 1
    assert sorted(e for e in events if e not in checking) == [
        "fast-cpu: pass", "gone: failed (" + fleet.outcomes[2].error + ")", "slow-cpu: pass"]
    assert not fleet.passed
    store = tmp_path / "fleet.db"
    assert len(fleet.store(store)) == 4
    with open_store(store) as s:
        stored = s.records()
    assert sorted({r["device"] for r in stored}) == ["fast-cpu", "slow-cpu"]
    assert len({r["run_id"] for r in stored}) == 2  # one run per device
    alone = validate(ValidationJob(target=folder, device=fast,
                                   data=DataSources(eval=str(eval_path))))
    for r in alone.records:
        twin = next(x for x in stored if x["device"] == "slow-cpu"
                    and x["artifact_name"] == r["artifact_name"])
        assert twin["accuracy"]["top1"] == r["accuracy"]["top1"]
        assert twin["gate"]["passed"] == r["gate"]["passed"]
    # The simulated delay is in the slow device's latency (and only there).
    p50 = {r["device"]: r["latency"]["p50_ms"] for r in stored}
    assert p50["slow-cpu"] >= 1.0 > p50["fast-cpu"]


def test_cli_several_devices_json_and_exit_codes(tiny_folder, quick_profile, tmp_path):
    from tests.sshd import free_port

    folder, eval_path = tiny_folder()
    a, b = quick_profile(name="cpu-a"), quick_profile(name="cpu-b")
    env_cmd = [sys.executable, "-m", "edgekit", "validate", str(folder), "--eval", str(eval_path)]
    ok = subprocess.run([*env_cmd, "--device", a, "--device", b, "--json"], capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert [(d["device"], d["status"]) for d in data["devices"]] == [("cpu-a", "pass"),
                                                                     ("cpu-b", "pass")]
    gone = str(tmp_path / remote_profile(tmp_path, "gone", free_port()))
    bad = subprocess.run([*env_cmd, "--device", a, "--device", gone], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1
    assert "1 of 2 device(s) did not pass: gone: failed" in bad.stderr
    assert "cpu-a" in bad.stdout and "PASS" in bad.stdout
    twice = subprocess.run([*env_cmd, "--device", a, "--device", a], capture_output=True,
                           text=True, timeout=300)
    assert twice.returncode == 2 and "are the same name (cpu-a)" in twice.stderr
    fleet = write_fleet(Path(a).parent, [{"profile": Path(a).name, "node": "n1"},
                                         {"profile": Path(b).name, "node": "n2"}])
    store = tmp_path / "fleet.db"
    by_file = subprocess.run([*env_cmd, "--fleet", str(fleet), "--store", str(store)],
                             capture_output=True, text=True, timeout=300)
    assert by_file.returncode == 0, by_file.stderr
    assert "on 2 devices" in by_file.stdout and "stored 4 records" in by_file.stdout
    onto_input = subprocess.run([*env_cmd, "--fleet", str(fleet), "--store",
                                 str(folder / "model.onnx")], capture_output=True, text=True,
                                timeout=300)
    assert onto_input.returncode == 2 and "--store" in onto_input.stderr

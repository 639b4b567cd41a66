"""`edgekit optimize --cluster` on the real loopback Ray cluster of tests/e2e/test_fleet_ray.py
(its fixture: a head and two workers on 127.0.0.1, each owning a device through a custom
resource)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e import test_fleet_ray as ray_tests  # skips this module without Ray
from tests.e2e.test_optimize_fleet import CALIB, LATENCY

cluster = ray_tests.cluster  # the loopback cluster fixture
sshd, device_python = ray_tests.sshd, ray_tests.device_python  # its SSH device (on worker 2)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_optimize_on_the_loopback_ray_cluster(cluster, zoo_checkpoint, tmp_path):
    """Every candidate measured as a Ray task on the node that owns its device (the loopback
    cluster of tests/e2e/test_fleet_ray.py: cpu-a on the head, cpu-b on a worker); a device no
    node offers is reported lost, the others' winners land."""
    pytest.importorskip("optuna")
    from edgekit.devices import DeviceProfile
    from edgekit.fleetfile import fleet_device
    from edgekit.optimize.search import Optimizer
    from edgekit.optimize.space import OptimizeSettings

    _, address, _ = cluster

    def local(name: str) -> DeviceProfile:
        return DeviceProfile.model_validate({
            "name": name, "kind": "cpu", "threads": 1, "batch_sizes": [1],
            "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"]}},
            "latency": LATENCY})

    devices = [fleet_device(local("cpu-a"), node="head"),
               fleet_device(local("cpu-b"), node="worker-1"),
               fleet_device(local("ghost"), node="nowhere")]
    settings = OptimizeSettings(prune=[0.0], dwsep=["off"], runtimes=["onnxruntime"],
                                precisions=["fp32", "int8"], int8_fallback=["none"],
                                trials=2)
    out = tmp_path / "out"
    summary = Optimizer(zoo_checkpoint("lenet5"), devices, settings, out_dir=out,
                        eval_source="fashion-mnist:test", eval_limit=100,
                        calib_source=CALIB, cluster=address).run()
    assert not summary["passed"]
    ghost = summary["devices"]["ghost"]
    assert "no node of the cluster offers edgekit-device:ghost" in ghost["lost"]
    for name in ("cpu-a", "cpu-b"):
        result = summary["devices"][name]
        assert not result["lost"] and result["winner"], result
        assert result["resource"] == f"edgekit-device:{name}"
        assert {c["name"] for c in result["candidates"] if c["values"]} == {
            "original onnxruntime:fp32", "original onnxruntime:int8"}
        for c in result["candidates"]:  # measured by a Ray task on the node owning the device
            record = json.loads((out / "cache" / "measurements" / f"{c['key']}.json")
                                .read_text())
            assert record["ray"]["resource"] == f"edgekit-device:{name}"
            assert record["ray"]["node_ip"] == "127.0.0.1" and record["device"] == name
        assert (out / name / Path(result["winner"]["path"]).name).is_file()


@pytest.mark.parametrize("name, node", [("cpu-a", "head"), ("loopback", "worker-2")])
def test_a_winner_on_the_cluster_is_confirmed_on_its_node(cluster, zoo_checkpoint, tmp_path,
                                                          request, name, node):
    """A winner that is not the original (LeNet-5 pruned by 75 %, timed at batch 32, where it is
    clearly faster) is timed again with the original in alternating rounds by a Ray task on
    the node that owns the device: in that task for a local profile, over SSH from that node
    for the loopback sshd device (by a job on the device); a rerun takes it from the cache."""
    pytest.importorskip("optuna")
    from edgekit.devices import DeviceProfile
    from edgekit.fleetfile import fleet_device
    from edgekit.optimize.search import Optimizer
    from edgekit.optimize.space import DistillSchedule, OptimizeSettings

    _, address, _ = cluster
    profile = {"name": name, "kind": "cpu", "threads": 1, "batch_sizes": [1],
               "runtimes": {"onnxruntime": {"precisions": ["fp32"]}}, "latency": LATENCY}
    if name == "loopback":
        profile.update(python=request.getfixturevalue("device_python"),
                       workdir=str(tmp_path / "device"),
                       **request.getfixturevalue("sshd").profile_fields())
    device = fleet_device(DeviceProfile.model_validate(profile), node=node)
    settings = OptimizeSettings(prune=[0.0, 0.75], dwsep=["off"], runtimes=["onnxruntime"],
                                precisions=["fp32"], batch=32, trials=2,
                                distill=DistillSchedule(short_limit=200, full_limit=200,
                                                        promote_margin=100.0))
    out = tmp_path / "out"

    def search() -> dict:
        return Optimizer(zoo_checkpoint("lenet5"), [device], settings, out_dir=out,
                         eval_source="fashion-mnist:test", eval_limit=100, max_drop=100.0,
                         train_source="fashion-mnist:train", calib_source=CALIB,
                         cluster=address).run()["devices"][name]

    result = search()
    winner = result["winner"]
    assert winner["name"] == "prune 0.75 onnxruntime:fp32", result["why"]
    confirmed = winner["confirmed"]
    assert confirmed["rounds"] == 6 and confirmed["segments"] == [6, 6]
    assert confirmed["verdict"] in ("meets", "indistinguishable")
    assert confirmed["ray"]["resource"] == f"edgekit-device:{name}"
    assert confirmed["ray"]["node_ip"] == "127.0.0.1"
    if name == "loopback":  # timed on the device by a job there, sent from the node
        assert confirmed["remote"]["host"].endswith("@127.0.0.1")
        assert (tmp_path / "device" / "jobs" / confirmed["remote"]["job_id"]).is_dir()
    assert "confirmed against the original" in result["why"]
    cached = list((out / "cache" / "confirmations").glob("*.json"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert search()["winner"]["confirmed"] == confirmed  # from the cache: not timed again
    assert cached[0].stat().st_mtime_ns == stamp

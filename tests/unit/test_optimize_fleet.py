"""`edgekit optimize`'s fleet scheduling (edgekit/optimize/search.py on validate/fleet.py's
locks): local profiles and the builds share this machine's lock; a remote device has its own;
on a cluster each device has its own and the builds another."""

from __future__ import annotations

from edgekit.devices import DeviceProfile
from edgekit.executors import executor_class
from edgekit.optimize.search import DeviceSearch, Optimizer
from edgekit.optimize.space import OptimizeSettings


def profile(name: str, **extra) -> DeviceProfile:
    return DeviceProfile.model_validate({
        "name": name, "kind": "cpu", "batch_sizes": [1],
        "runtimes": {"onnxruntime": {"precisions": ["fp32"]}}, **extra})


def locks(tmp_path, cluster=None):
    devices = [profile("cpu-a"), profile("cpu-b", threads=1),
               profile("lab", host="me@10.0.0.7", port=2222)]
    opt = Optimizer("model.pt", devices, OptimizeSettings(prune=[0.0], dwsep=["off"]),
                    out_dir=tmp_path, eval_source="fashion-mnist:test", cluster=cluster)
    held = {}
    for d in opt.fleet:
        # on a cluster the search gets the Ray executor: measured on the node, not timed here
        here = executor_class(d.profile, clustered=cluster is not None).measures_here
        search = DeviceSearch(d.profile, [], 1, {}, fleet=d, here=here)
        held[d.name] = opt._device_lock(search)
    return opt, held


def test_local_profiles_and_builds_take_turns_remote_devices_do_not(tmp_path):
    opt, held = locks(tmp_path)
    assert held["cpu-a"] is held["cpu-b"] is opt._machine_lock
    assert held["lab"] is not opt._machine_lock
    assert [d.physical for d in opt.fleet] == ["local on this machine"] * 2 + ["ssh 10.0.0.7:2222"]


def test_a_fleet_files_node_label_does_not_split_this_machine(tmp_path):
    from edgekit.fleetfile import fleet_device

    opt = Optimizer("model.pt", [fleet_device(profile("cpu-a"), node="head"),
                                 fleet_device(profile("cpu-b"), node="worker-1")],
                    OptimizeSettings(prune=[0.0], dwsep=["off"]), out_dir=tmp_path,
                    eval_source="fashion-mnist:test")
    held = {opt._device_lock(DeviceSearch(d.profile, [], 1, {}, fleet=d)) for d in opt.fleet}
    assert held == {opt._machine_lock}  # no cluster: both measure on this CPU, in turns


def test_on_a_cluster_each_device_has_its_own_lock(tmp_path):
    opt, held = locks(tmp_path, cluster="ray://127.0.0.1:10001")
    assert len({id(lock) for lock in (*held.values(), opt._machine_lock)}) == 4

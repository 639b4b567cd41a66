"""`edgekit optimize`'s fleet scheduling (edgekit/optimize/search.py on validate/fleet.py's
locks): local profiles and the builds share this machine's lock; a remote device has its own;
on a cluster each device has its own and the builds another."""

from __future__ import annotations

from edgekit.devices import DeviceProfile
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
    held = {d.name: opt._device_lock(DeviceSearch(d.profile, [], 1, {}, fleet=d))
            for d in opt.fleet}
    return opt, held


def test_local_profiles_and_builds_take_turns_remote_devices_do_not(tmp_path):
    opt, held = locks(tmp_path)
    assert held["cpu-a"] is held["cpu-b"] is opt._build_lock
    assert held["lab"] is not opt._build_lock
    assert [d.physical for d in opt.fleet] == ["local on this machine"] * 2 + ["ssh 10.0.0.7:2222"]


def test_on_a_cluster_each_device_has_its_own_lock(tmp_path):
    opt, held = locks(tmp_path, cluster="ray://127.0.0.1:10001")
    assert len({id(lock) for lock in (*held.values(), opt._build_lock)}) == 4
    search = DeviceSearch(opt.devices[0], [], 1, {}, fleet=opt.fleet[0])
    assert search.measured_here
    search.executor = object()  # the Ray executor: measured on the node, not timed here
    assert not search.measured_here

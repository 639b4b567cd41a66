"""A fleet of simulated devices (issue 17 part 5): wall time follows the slowest device, not
the sum, and what scheduling costs as devices and artifacts grow.

Each simulated device is a local profile whose ONNX Runtime has `simulated_delay_ms` (a runner
option for benchmarks only: every inference also sleeps that long, inside the timed span), so a
device has a fixed, known per-query cost and the model itself (a 16→4 linear layer) costs almost
nothing: the numbers measure the fleet's scheduling, not the CPU. Device i of N sleeps
DELAY_MS·(1 + i/(N-1)) per query (the slowest twice the fastest). The latency protocol is a fixed
query count, the eval set a fixed 64 images (one batch), so each device's job is a known number of
queries; the fleet runs every device at once (`edgekit validate OUT --device ... --device ...`,
edgekit/validate/fleet.py; simulated devices may share this machine, `share_local=False`).

For each (devices, artifacts) it records the fleet's wall time, the slowest device's job run
alone in this process (the floor), the sum of every device's time in the fleet (about what
one-after-another would take), wall / floor and the overhead per job: (wall − floor) / (devices ×
artifacts). With BENCH_FLEET_RAY=1 it also runs the
same fleets across a Ray cluster on loopback (one head owning every device through custom
resources; Ray Client at ray://127.0.0.1), for a few device counts (each device task starts a Ray
worker process).

Ray runs at most 8 devices here: on one machine each device's task holds a Ray worker process
(edgekit and ONNX Runtime imported), which 2 cores and 32 processes would turn into a CPU
benchmark; the thread executor runs all 32.

Run: `.venv/bin/python benchmarks/run.py fleet` (under a minute on 2 cores; with
BENCH_FLEET_RAY=1 about 2–3 min more: the cluster starts once, ~15 s). Quick mode
(`--quick fleet`) runs 1 and 4 devices and proves the script works (~25 s with Ray).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import QUICK, RANDOM_WEIGHTS, md_table, work_dir, write_results

DELAY_MS = 5.0
QUERIES = 20  # timed queries per artifact (plus 2 warm-up); the eval set is one batch of 64
DEVICES = (1, 4) if QUICK else (1, 8, 16, 32)
ARTIFACTS = (1, 2) if QUICK else (1, 4)
RAY_DEVICES = (1, 2) if QUICK else (1, 4, 8)


def make_folder(folder: Path, artifacts: int) -> Path:
    """An output folder with an fp32 reference and `artifacts - 1` noisy variants, each a 16→4
    linear ONNX model on 1×4×4 inputs, plus eval.npz (64 images, labels = the reference's)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.io.manifest import Manifest
    from edgekit.io.onnxfile import save_onnx, set_spec
    from edgekit.spec import InputSpec

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((16, 4)).astype(np.float32)
    spec = InputSpec(shape=(1, 1, 4, 4), mean=(0.0,), std=(1.0,),
                     class_names=("a", "b", "c", "d"))
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(folder)
    for i in range(artifacts):
        w = weights if i == 0 else weights + 0.05 * rng.standard_normal(weights.shape).astype(
            np.float32)
        graph = helper.make_graph(
            [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["logits"])], "tiny",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
            [numpy_helper.from_array(w, "W")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        set_spec(model, spec)
        name = "model.onnx" if i == 0 else f"variant{i}.onnx"
        save_onnx(model, folder / name)
        # The variants are labelled int8 (they are not): only so that model.onnx stays the
        # reference the others are compared with.
        entry = {"path": name, "format": "onnx", "precision": "fp32" if i == 0 else "int8",
                 "model": "tiny"}
        if i == 0:
            manifest.add_stage("export-onnx-fp32", outputs=[entry])
        else:
            manifest.add_stage(f"variant-{i}", inputs={"source": folder / "model.onnx"},
                               outputs=[entry])
    x = rng.standard_normal((64, 1, 4, 4)).astype(np.float32)
    np.savez(folder.parent / "eval.npz", x=x, y=(x.reshape(64, 16) @ weights).argmax(1))
    return folder.parent / "eval.npz"


def simulated_devices(count: int) -> list:
    from edgekit.devices import DeviceProfile
    from edgekit.fleetfile import fleet_device

    out = []
    for i in range(count):
        delay = DELAY_MS * (1 + (i / (count - 1) if count > 1 else 0))
        profile = DeviceProfile.model_validate({
            "name": f"sim-{i:02d}", "kind": "cpu", "threads": 1, "batch_sizes": [1],
            "runtimes": {"onnxruntime": {"precisions": ["fp32", "int8"],
                                         "options": {"simulated_delay_ms": delay}}},
            "latency": {"warmup_count": 2, "warmup_seconds": 0.0, "min_queries": QUERIES,
                        "min_seconds": 0.0, "max_seconds": 60.0}})
        out.append(fleet_device(profile))
    return out


def one_run(folder: Path, eval_path: Path, devices: list, cluster: Any = None
            ) -> dict[str, Any]:
    """One fleet validation; with `cluster` (a connected RayCluster) every device's job runs as
    Ray tasks (the connection and version check are timed apart, once)."""
    from edgekit.validate.fleet import validate_fleet

    executor_for = None
    if cluster is not None:
        from edgekit.executors import executor_for as pick_executor
        from edgekit.validate.validator import HERE

        def executor_for(d: Any) -> Any:
            return pick_executor(d.profile, HERE, cluster=cluster, resource=d.resource)

    start = time.perf_counter()
    from edgekit.data.given import DataSources
    from edgekit.executors import ValidationJob

    fleet = validate_fleet(ValidationJob(target=folder, device=None,
                                         data=DataSources(eval=str(eval_path))),
                           devices, share_local=False, executor_for=executor_for)
    wall = time.perf_counter() - start
    failed = [f"{o.device.name}: {o.error}" for o in fleet.outcomes if o.status != "pass"]
    if failed:
        raise RuntimeError("a simulated device failed: " + "; ".join(failed[:3]))
    seconds = [o.seconds for o in fleet.outcomes]
    return {"wall_s": round(wall, 3), "max_device_s": round(max(seconds), 3),
            "sum_device_s": round(sum(seconds), 3)}


def alone_s(folder: Path, eval_path: Path, devices: int) -> float:
    """The slowest device of a fleet of `devices`, validated alone in this process."""
    from edgekit.data.given import DataSources
    from edgekit.executors import ValidationJob
    from edgekit.validate.validator import validate

    slowest = simulated_devices(devices)[-1].profile
    start = time.perf_counter()
    validate(ValidationJob(target=folder, device=slowest, data=DataSources(eval=str(eval_path))))
    return round(time.perf_counter() - start, 3)


def row(where: str, devices: int, artifacts: int, r: dict[str, Any]) -> list[Any]:
    jobs = devices * artifacts
    return [where, devices, artifacts, r["wall_s"], r["alone_s"], r["sum_device_s"],
            round(r["wall_s"] / r["alone_s"], 2),
            round(1000 * (r["wall_s"] - r["alone_s"]) / jobs, 1)]


HEADERS = ["executor", "devices", "artifacts", "wall s", "slowest device alone s",
           "sum of devices s", "wall / slowest alone", "overhead ms per artifact job"]


def section(data: dict[str, Any]) -> str:
    rows = [row(r["executor"], r["devices"], r["artifacts"], r) for r in data["runs"]]
    return ("### A fleet of simulated devices\n\n"
            f"Each device sleeps a fixed {data['delay_ms']:g}–{2 * data['delay_ms']:g} ms per "
            f"query (`simulated_delay_ms`), {data['queries']} timed queries per artifact; "
            "`benchmarks/run.py fleet`.\n\n" + md_table(HEADERS, rows)
            + "\nWall time tracks the slowest device, not the sum: the devices run at once. "
            "Overhead = (wall − the slowest device's job run alone in this process) / "
            "(devices × artifacts): threads, contention for the CPU, and for Ray the tasks, the "
            "object store and the node's worker."
            + (f" Ray: one head on loopback owning every device; connecting (Ray Client) and "
               f"the version check took {data['ray_connect_s']:.1f} s once, not counted above; "
               "a device's first task also starts a Ray worker process."
               if data.get("ray_connect_s") is not None else "") + "\n")


README_SECTIONS = {"fleet": ("fleet", section)}


def ray_cluster(devices: int):
    """A one-node Ray cluster on loopback that owns `devices` simulated devices."""
    from ray.cluster_utils import Cluster

    from edgekit.net import free_port, wait_for_port

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    port = free_port()
    resources = {f"edgekit-device:sim-{i:02d}": 1 for i in range(devices)}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "ray_client_server_port": port, "resources": resources,
        "env_vars": {"EDGEKIT_RAY_CACHE": tempfile.mkdtemp(prefix="edgekit-ray-bench-")}})
    cluster.wait_for_nodes()
    wait_for_port(port)  # the Ray Client server starts listening a moment after the head
    return cluster, f"ray://127.0.0.1:{port}"


def main() -> dict[str, Any]:
    work = work_dir("fleet")
    runs = []
    warm = work / "artifacts-1" / "out"
    one_run(warm, make_folder(warm, 1), simulated_devices(2))  # imports, first sessions: unmeasured
    for artifacts in ARTIFACTS:
        folder = work / f"artifacts-{artifacts}" / "out"
        eval_path = make_folder(folder, artifacts)
        for devices in DEVICES:
            r = one_run(folder, eval_path, simulated_devices(devices))
            r["alone_s"] = alone_s(folder, eval_path, devices)
            runs.append({"executor": "threads", "devices": devices, "artifacts": artifacts, **r})
            print("  ", row("threads", devices, artifacts, r), flush=True)
    connect_s = None
    if os.environ.get("BENCH_FLEET_RAY"):
        from edgekit.executors.ray import RayCluster

        cluster, address = ray_cluster(max(RAY_DEVICES))
        try:
            start = time.perf_counter()
            with RayCluster(address) as connected:
                connected.check_versions([d.resource for d in
                                          simulated_devices(max(RAY_DEVICES))])
                connect_s = round(time.perf_counter() - start, 3)
                for artifacts in ARTIFACTS:
                    folder = work / f"artifacts-{artifacts}" / "out"
                    eval_path = folder.parent / "eval.npz"
                    for devices in RAY_DEVICES:
                        r = one_run(folder, eval_path, simulated_devices(devices), connected)
                        r["alone_s"] = alone_s(folder, eval_path, devices)
                        runs.append({"executor": "ray", "devices": devices,
                                     "artifacts": artifacts, **r})
                        print("  ", row("ray", devices, artifacts, r), flush=True)
        finally:
            cluster.shutdown()
    data = {"delay_ms": DELAY_MS, "queries": QUERIES, "ray_connect_s": connect_s, "runs": runs}
    write_results("fleet", data, section(data), checkpoints={"tiny": RANDOM_WEIGHTS})
    return {**data, "readme": {"fleet": section(data)}}


if __name__ == "__main__":
    main()

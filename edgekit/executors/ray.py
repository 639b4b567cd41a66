"""The Ray executor: a device's validation runs as Ray tasks on the node that owns the device.

A node owns a device by offering its custom resource (`ray start --resources
'{"edgekit-device:orin-1": 1}'`). Every task of a device asks for one unit of it, so it runs only
on that node and never two at once on the device (Ray's scheduler does that; edgekit has no
scheduler, queue or RPC of its own). One task per artifact, so a lost node costs only what it had
not finished: the artifacts already measured come back, the rest are retried by Ray
(`max_retries`) while another node offers the device, and reported failed with the reason when
none does.

The artifacts (with the files beside them and the manifest) and the eval sets, sampled once here
and saved model-ready (edgekit.remote.payload, as for SSH), go into Ray's object store once per
content hash; a node fetches a blob only when its cache (~/.cache/edgekit/ray/blobs/<sha256>)
lacks it. On the node the same executor `edgekit validate` would use runs the job: local for a
profile without `host:`, SSH for one with it (the node reaches the device over SSH with its own
keys, and the profile's key and known_hosts paths are read there). The records come back to the
workstation, tagged with the node, and go into its results store.

Ray has no authentication: anyone who reaches the cluster's ports runs code on its nodes. A
cluster belongs on a private network; a public address is refused unless the user passes
`--allow-public-cluster`. Ray is imported lazily (pip install "edgekit[fleet]")."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.errors import EdgekitError, MissingDependencyError
from edgekit.events import emit
from edgekit.executors.base import (
    Artifacts,
    DeviceLostError,
    Executor,
    Here,
    RunHere,
    ValidationJob,
    executor_for,
)
from edgekit.executors.ray_address import (
    _LOOPBACK_ENV,
    ClusterError,
    check_address,
    is_loopback_host,
    parse_address,
)
from edgekit.results.validation import RuntimeStatus, ValidationResult
from edgekit.runtimes.records import LatencyStats


@dataclasses.dataclass
class RayValidationResult(ValidationResult):
    """A ValidationResult measured through Ray, with the nodes that ran it and, when a node was
    lost before every artifact was measured, why the rest is missing."""

    partial_reason: str | None = None
    nodes: list[str] = dataclasses.field(default_factory=list)

    @property
    def partial(self) -> bool:
        return self.partial_reason is not None

    def to_json(self, *, with_samples: bool = False) -> dict[str, Any]:
        out = super().to_json(with_samples=with_samples)
        out["ray"] = {"nodes": self.nodes, "partial": self.partial,
                      "partial_reason": self.partial_reason}
        return out


# ------------------------------------------------------------------------------ the cluster
_RETRIED_CONNECT_ERRORS = ("client server failed", "ZombieProcess")


class RayCluster:
    """A connection to a Ray cluster: which nodes are alive and what they offer, the version
    check, and the blobs already put into the object store (by sha256)."""

    def __init__(self, address: str, *, allow_public: bool = False, max_retries: int = 2,
                 lost_grace_s: float = 10.0, connect_timeout_s: float = 5.0) -> None:
        self.address = address
        self.max_retries = max_retries
        self.lost_grace_s = lost_grace_s
        check_address(address, allow_public=allow_public, timeout_s=connect_timeout_s)
        host, _ = parse_address(address)
        if host is not None and is_loopback_host(host):
            os.environ.setdefault(_LOOPBACK_ENV, "0")
        try:
            import ray
        except ImportError:
            raise MissingDependencyError("--cluster needs Ray, which is not installed",
                                         hint='pip install "edgekit[fleet]"') from None
        self.ray = ray
        # A Ray Client server can fail to start its session once: it says "client server
        # failed", or, when the session's process died before Ray's proxier read its command
        # line, "psutil.ZombieProcess" (seen once in a CI run). Both are retried.
        for attempt in range(3):
            try:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                         namespace="edgekit", ignore_reinit_error=True)
                break
            except (ConnectionError, RuntimeError, ValueError) as exc:
                if attempt == 2 or not any(m in str(exc) for m in _RETRIED_CONNECT_ERRORS):
                    raise ClusterError(
                        f"cannot connect to the Ray cluster at {address}: {_first_line(exc)}",
                        hint="check that the address is the cluster's (ray status on the "
                        "head) and that Ray's version matches the cluster's") from None
                time.sleep(2.0)
        self._refs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.ray.shutdown()

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def alive_nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def offering(self, resource: str) -> list[dict[str, Any]]:
        """The alive nodes that offer `resource`."""
        return [n for n in self.alive_nodes() if (n.get("Resources") or {}).get(resource, 0) > 0]

    def check_versions(self, resources: list[str], timeout_s: float = 120.0) -> dict[str, str]:
        """Each alive node that offers one of `resources` runs a probe task; a node whose
        edgekit differs from this workstation's is refused with both versions. Returns
        {node id: edgekit version}."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = self.ray.remote(_node_versions)
        nodes = [n for n in self.alive_nodes()
                 if any((n.get("Resources") or {}).get(r, 0) > 0 for r in resources)]
        refs = [probe.options(num_cpus=0, max_retries=0,
                              scheduling_strategy=NodeAffinitySchedulingStrategy(
                                  n["NodeID"], soft=False)).remote() for n in nodes]
        try:
            answers = self.ray.get(refs, timeout=timeout_s)
        except self.ray.exceptions.GetTimeoutError:
            raise ClusterError(f"the cluster's nodes did not answer the version check within "
                               f"{timeout_s:g}s", hint="check `ray status` on the head") from None
        except self.ray.exceptions.RayError as exc:
            raise ClusterError(f"a node of the cluster cannot run edgekit: {_first_line(exc)}",
                               hint="install the same edgekit on every node (pip install "
                               f'"edgekit[fleet]=={__version__}")') from None
        versions = {}
        for node, answer in zip(nodes, answers, strict=True):
            versions[node["NodeID"]] = answer["edgekit"]
            if answer["edgekit"] != __version__:
                raise ClusterError(
                    f"node {node['NodeManagerAddress']} ({node['NodeID'][:12]}) runs edgekit "
                    f"{answer['edgekit']}, this workstation edgekit {__version__}",
                    hint=f'install the same edgekit everywhere: pip install "edgekit[fleet]=='
                    f'{__version__}" (on the node, or here)')
        return versions

    def put_file(self, path: Path, sha: str) -> Any:
        """The file's object ref, put into the object store once per content hash."""
        with self._lock:
            if sha not in self._refs:
                self._refs[sha] = self.ray.put(Path(path).read_bytes())
            return self._refs[sha]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _node_versions() -> dict[str, str]:
    """Runs on a node: the versions that must agree with the workstation's."""
    import platform

    import edgekit

    return {"edgekit": edgekit.__version__, "python": platform.python_version()}


# ------------------------------------------------------------------------ the node's side
def _cache_dir() -> Path:
    root = os.environ.get("EDGEKIT_RAY_CACHE") or Path.home() / ".cache" / "edgekit" / "ray"
    return Path(root)


def _blob(sha: str, ref_box: list[Any]) -> Path:
    """The blob in this node's cache, fetched from the object store only when missing."""
    import ray

    from edgekit.io.files import sha256_file

    path = _cache_dir() / "blobs" / sha
    if path.is_file() and sha256_file(path) == sha:
        return path
    data = ray.get(ref_box[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{sha[:12]}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path


def _lay_out(job_id: str, files: dict[str, tuple[str, list[Any]]]) -> Path:
    """The job's folder on this node, its files linked from the cached blobs."""
    folder = _cache_dir() / "jobs" / job_id
    for rel, (sha, box) in files.items():
        dest = folder / rel
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
            tmp.unlink(missing_ok=True)
            try:
                os.link(_blob(sha, box), tmp)
            except OSError:
                tmp.write_bytes(_blob(sha, box).read_bytes())
            os.replace(tmp, dest)
    return folder


def _alternate_unit(here: Here, device: Any, files: dict[str, tuple[str, list[Any]]],
                    artifacts: dict[str, tuple[str, str]], job_id: str, spec: Any, x: Any,
                    rounds: int, resource: str, version: str) -> dict[str, LatencyStats]:
    """Runs on the node that owns the device: lay out the artifacts from the cached blobs and
    time them together in alternating rounds with the executor the profile asks for there (in
    the node's process for a local profile, over SSH from this node for one with `host:`)."""
    import ray

    if version != __version__:
        raise ClusterError(f"this node runs edgekit {__version__}, the workstation edgekit "
                           f"{version}", hint="install the same edgekit everywhere")
    folder = _lay_out(job_id, files)
    with executor_for(device, here) as executor:
        timed = executor.alternate({label: (folder / rel, runtime) for label, (rel, runtime)
                                    in artifacts.items()}, device, spec=spec, x=x, rounds=rounds)
    where = {"node_id": ray.get_runtime_context().get_node_id(),
             "node_ip": ray.util.get_node_ip_address(), "resource": resource, "job_id": job_id}
    return {label: {**stats, "ray": where} for label, stats in timed.items()}


def _run_unit(here: Here | RunHere, job: ValidationJob,
              files: dict[str, tuple[str, list[Any]]], unit: dict[str, Any],
              version: str) -> dict[str, Any]:
    """Runs on the node that owns the device: lay out the job folder from the cached blobs and
    validate one artifact with the executor the profile asks for (local, or SSH from here)."""
    import ray

    if version != __version__:
        raise ClusterError(f"this node runs edgekit {__version__}, the workstation edgekit "
                           f"{version}", hint="install the same edgekit everywhere")
    folder = _lay_out(unit["job_id"], files)
    data = job.data.model_copy(update={"eval": str(folder / unit["eval"]), "data_dir": None,
                                       "eval_limit": None})  # the unit's eval file, as shipped
    node_job = dataclasses.replace(job, target=folder / unit["target"], data=data, artifact=None)
    with executor_for(job.device, here) as executor:
        result = executor.validate(node_job)
    context = ray.get_runtime_context()
    return {"result": result.to_json(with_samples=True),
            "partial_reason": getattr(result, "partial_reason", None)
            if getattr(result, "partial", False) else None,
            "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()}


# ---------------------------------------------------------------------- the workstation side
def _check_unit(here: Here, device: Any, version: str) -> list[RuntimeStatus]:
    """On the node that owns the device: the check of the executor the profile asks for."""
    if version != __version__:
        raise ClusterError(f"this node runs edgekit {__version__}, the workstation edgekit "
                           f"{version}", hint="install the same edgekit everywhere")
    with executor_for(device, here) as executor:
        return executor.check(device)


class RayExecutor(Executor):
    """Runs a device's work on the node that offers `resource` (made per device by
    `executor_for(..., cluster=)`; not in the by-name registry, since it needs a cluster).
    A ClusterError on the way (no node offers the device, it left, the task failed) is a
    DeviceLostError. Each answer that comes back is said here, in the caller's sink
    (edgekit.events); what a node's own process says goes to that node's log."""

    def __init__(self, here: Here | RunHere, cluster: RayCluster, resource: str) -> None:
        super().__init__(here)
        self.cluster = cluster
        self.resource = resource

    @classmethod
    def builds_on_device(cls, device: Any) -> bool:
        """As the executor the node runs for the profile (SSH builds engines on the device)."""
        from edgekit.executors.base import executor_class

        return executor_class(device).builds_on_device(device)

    def validate(self, job: ValidationJob) -> RayValidationResult:
        try:
            return self._validate(job)
        except ClusterError as exc:
            raise DeviceLostError(exc.message, exc.hint, exit_code=exc.exit_code) from None

    def alternate(self, artifacts: Artifacts, device: Any, *, spec: Any, x: Any,
                  rounds: int) -> dict[str, LatencyStats]:
        try:
            return self._alternate(artifacts, device, spec=spec, x=x, rounds=rounds)
        except ClusterError as exc:
            raise DeviceLostError(exc.message, hint="rerun the same command when the node "
                                  "that owns the device is back") from None

    def check(self, device: Any) -> list[RuntimeStatus]:
        """The runtime check, run by one task on the node that owns the device."""
        ray, cluster = self.cluster.ray, self.cluster
        if not cluster.offering(self.resource):
            raise DeviceLostError(f"no node of the cluster offers {self.resource} (device "
                                  f"{device.name})", hint=f"start the node that owns it with "
                                  f"ray start --resources '{{\"{self.resource}\": 1}}'")
        task = ray.remote(_check_unit).options(
            resources={self.resource: 1}, num_cpus=0, max_retries=cluster.max_retries,
            retry_exceptions=False, name=f"edgekit-check:{device.name}")
        try:
            return ray.get(task.remote(self.here, device, __version__))
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, EdgekitError):
                raise cause from None
            raise DeviceLostError(f"device {device.name}: the check failed on its node: "
                                  f"{_first_line(exc)}", hint="ray status on the head") from None
        except ray.exceptions.RayError as exc:
            raise DeviceLostError(f"device {device.name}: the node running the check was lost "
                                  f"({type(exc).__name__})", hint="ray status on the head") from None

    def _validate(self, job: ValidationJob) -> RayValidationResult:
        from edgekit.remote.payload import build_payload
        from edgekit.results.store import new_run_id

        ray, cluster, device = self.cluster.ray, self.cluster, job.device
        if not cluster.offering(self.resource):
            raise ClusterError(f"no node of the cluster offers {self.resource} (device "
                               f"{device.name}); it was not validated",
                               hint=f"start the node that owns it with ray start --resources "
                               f"'{{\"{self.resource}\": 1}}'")
        run_id = job.run_id or new_run_id()
        with tempfile.TemporaryDirectory(prefix="edgekit-ray-") as tmp:
            payload = build_payload(dataclasses.replace(job, run_id=run_id), None, workdir=Path(tmp),
                                    job_timeout=device.job_timeout)
            files = {rel: (sha, [cluster.put_file(payload.files[rel], sha)])
                     for rel, sha in payload.sha.items()}
        if not device.is_remote:  # no SSH job on the other side to rebuild the engines
            payload.skipped = [{**s, "reason": "TensorRT engines are not portable; the Ray "
                                "executor does not build them on the node yet (run `edgekit "
                                "export OUT --target tensorrt` there)"}
                               if "TensorRT" in s.get("reason", "") else s
                               for s in payload.skipped]
        units = []
        for task, rel in zip(payload.tasks, payload.task_artifacts, strict=True):
            import json

            args = json.loads(task["argv"][-1])
            units.append({"rel": rel, "target": args["target"], "eval": args["eval"],
                          "job_id": payload.job_id})
        remote = ray.remote(_run_unit).options(
            resources={self.resource: 1}, num_cpus=0, max_retries=cluster.max_retries,
            retry_exceptions=False, name=f"edgekit-validate:{device.name}")
        node_job = dataclasses.replace(job, run_id=run_id)
        refs = {remote.remote(self.here, node_job, files, unit, __version__): i
                for i, unit in enumerate(units)}
        answers, failures = self._wait(refs, units, device.name)
        return self._assemble(job, payload, run_id, units, answers, failures)

    def _alternate(self, artifacts: Artifacts, device: Any, *, spec: Any, x: Any,
                   rounds: int) -> dict[str, LatencyStats]:
        """{label: latency statistics with samples and round counts} of `artifacts`
        ({label: (path, runtime)}) timed together in `rounds` alternating rounds by one Ray
        task on the node that owns the device (the executor the profile asks for there times
        them). Each label's files go through the object store by sha256, as a validation job's
        do. ClusterError when no node offers the device or the task failed."""
        import hashlib

        from edgekit.io.files import sha256_file
        from edgekit.remote.payload import artifact_files, safe_relpath

        cluster = self.cluster
        if not cluster.offering(self.resource):
            raise ClusterError(f"no node of the cluster offers {self.resource} (device "
                               f"{device.name})", hint=f"start the node that owns it with ray "
                               f"start --resources '{{\"{self.resource}\": 1}}'")
        files: dict[str, tuple[str, list[Any]]] = {}
        where: dict[str, tuple[str, str]] = {}
        for label, (path, runtime) in artifacts.items():
            path = Path(path)
            for one in artifact_files(path):
                rel, sha = f"{label}/{safe_relpath(one, path.parent)}", sha256_file(one)
                files[rel] = (sha, [cluster.put_file(one, sha)])
            where[label] = (f"{label}/{path.name}", runtime)
        job_id = hashlib.sha256(repr((sorted((r, s) for r, (s, _) in files.items()), where,
                                      rounds)).encode()).hexdigest()[:24]
        task = self.cluster.ray.remote(_alternate_unit).options(
            resources={self.resource: 1}, num_cpus=0, max_retries=cluster.max_retries,
            retry_exceptions=False, name=f"edgekit-alternate:{device.name}")
        ref = task.remote(self.here, device, files, where, job_id, spec, x, rounds,
                          self.resource, __version__)
        answers, failures = self._wait({ref: 0}, [{"rel": "the alternating rounds"}],
                                       device.name)
        if failures:
            raise ClusterError(f"device {device.name}: the alternating rounds were not timed: "
                               f"{failures[0]}", hint="check the node that owns it (ray "
                               "status), then rerun")
        return answers[0]

    def _wait(self, refs: dict[Any, int], units: list[dict[str, Any]], name: str
              ) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
        """Collect the tasks as they finish; when no alive node offers the device any more (for
        `lost_grace_s`), cancel what is left and give the reason."""
        ray, cluster = self.cluster.ray, self.cluster
        answers: dict[int, dict[str, Any]] = {}
        failures: dict[int, str] = {}
        pending = list(refs)
        lost_since: float | None = None
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                index = refs[ref]
                try:
                    answers[index] = ray.get(ref)
                    emit(f"{name}: {units[index]['rel']} measured on "
                         f"{answers[index].get('node_ip')} ({len(answers)}/{len(units)})")
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    failures[index] = (cause.message if isinstance(cause, EdgekitError)
                                       else _first_line(exc))
                except ray.exceptions.RayError as exc:
                    failures[index] = (f"the node running it was lost ({type(exc).__name__}) "
                                       f"after {cluster.max_retries} retries")
            if not pending:
                break
            if cluster.offering(self.resource):
                lost_since = None
                continue
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since >= cluster.lost_grace_s:
                for ref in pending:
                    ray.cancel(ref, force=True)
                    failures[refs[ref]] = (f"the node that owns {self.resource} left the "
                                           f"cluster and no other node offers it "
                                           f"(waited {cluster.lost_grace_s:g}s)")
                pending = []
        return answers, failures

    def _assemble(self, job: ValidationJob, payload: Any, run_id: str,
                  units: list[dict[str, Any]], answers: dict[int, dict[str, Any]],
                  failures: dict[int, str]) -> RayValidationResult:
        device = job.device
        result = RayValidationResult(device=device.name, budget=job.budget, run_id=run_id,
                                     skipped=list(payload.skipped))
        runtimes: dict[str, RuntimeStatus] = {}
        partial = []
        for index, unit in enumerate(units):
            rel = unit["rel"]
            if index in failures:
                result.skipped.append({"artifact": rel, "reason": f"not measured: "
                                       f"{failures[index]}"})
                partial.append(f"{rel}: {failures[index]}")
                continue
            answer = answers[index]
            if answer.get("partial_reason"):
                partial.append(f"{rel}: {answer['partial_reason']}")
            one = answer["result"]
            node = answer.get("node_ip") or "?"
            if node not in result.nodes:
                result.nodes.append(node)
            for status in one.get("runtimes", []):
                runtimes.setdefault(status["name"], RuntimeStatus(**{
                    k: tuple(v) if k == "formats" else v for k, v in status.items()}))
            for info in one.get("artifacts", []):
                result.artifacts.append({**info, "name": rel, "relpath": rel,
                                         "path": str(payload.folder / rel)})
            result.skipped += [{**s, "artifact": rel} for s in one.get("skipped", [])]
            for j, record in enumerate(one.get("records", [])):
                result.records.append({
                    **record, "artifact": str(payload.folder / rel), "artifact_name": rel,
                    "run_id": run_id, "record_key": f"ray/{run_id}/{index}/{j}",
                    "ray": {"node_id": answer.get("node_id"), "node_ip": node,
                            "resource": self.resource, "job_id": payload.job_id}})
        result.runtimes = list(runtimes.values())
        if not answers and failures:
            raise ClusterError(f"device {device.name}: nothing was measured: "
                               + next(iter(failures.values())),
                               hint="check the node that owns it (ray status), then rerun")
        result.partial_reason = "; ".join(partial) or None
        result.decide(job.artifact, partial_reason=result.partial_reason)
        for r in result.records:
            r["decisive"] = r["artifact_name"] == result.decisive.get("artifact")
        return result

"""Per-layer profiles of artifacts on a device profile, as records the results store keeps and
the report shows (`record_type: layer_profile`). The profiling itself is runtimes/profile.py;
this picks the runtime the device profile names, the ONNX model to join to, and writes the
record. Torch-free."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from edgekit import __version__
from edgekit.devices import DeviceProfile
from edgekit.errors import InputError, MissingDependencyError
from edgekit.results.record import ResultRecord
from edgekit.results.store import LAYER_PROFILE


def profile_on_device(artifact: Path, device: DeviceProfile, *, runtime: str | None = None,
                      batch: int = 1, runs: int = 50, warmup: int = 10,
                      onnx_source: Path | None = None) -> ResultRecord:
    """Profile `artifact` on `device` (local profiles) with the runtime that reads it (or
    `runtime`), joined to its ONNX model; returns a layer_profile record."""
    from edgekit.io.artifacts import list_artifacts, onnx_source_for, spec_for
    from edgekit.io.files import sha256_file
    from edgekit.runtimes.base import runner_for_artifact
    from edgekit.runtimes.profile import ProfileSettings, profile

    if device.is_remote:
        raise InputError(f"device {device.name} is remote; edgekit profile measures on this "
                         "machine", hint="run `edgekit profile` on the device itself (edgekit "
                         "installed there), or choose a local profile")
    if Path(artifact).is_dir():
        raise InputError(f"{artifact} is a folder; edgekit profile takes one artifact file",
                         hint="pass one .onnx, .xml or .plan file of it")
    entry = list_artifacts(artifact)[0]  # missing files and unknown suffixes fail here
    cls = runner_for_artifact(artifact, runtime)
    if cls.name not in device.runtimes:
        raise InputError(f"device profile {device.name} has no runtime {cls.name}",
                         hint=f"choose one of: {', '.join(device.runtimes)}")
    ok, reason = cls.available()
    if not ok:
        raise MissingDependencyError(f"runtime {cls.name} is not usable here: {reason}",
                                     hint=cls.install_hint or None)
    if entry.get("format") not in cls.formats:
        raise InputError(f"{cls.name} does not run {Path(artifact).name} ({entry.get('format')})",
                         hint="leave out --runtime: edgekit picks the runtime that reads it")
    from edgekit.progress import progress

    source = onnx_source or onnx_source_for(artifact)
    with progress(f"Profiling {Path(artifact).name} on {cls.name}", warmup + runs) as advance:
        settings = ProfileSettings(cls.name, threads=device.threads,
                                   options=device.runner_options(cls.name), batch=batch,
                                   runs=runs, warmup=warmup)
        result = profile(artifact, spec_for(artifact), settings, onnx_source=source,
                         on_run=lambda: advance(1))
    return {
        "record_type": LAYER_PROFILE,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": entry.get("model") or Path(artifact).parent.name,
        "artifact": str(artifact), "artifact_name": Path(artifact).name,
        "artifact_sha256": sha256_file(artifact), "format": entry.get("format"),
        "precision": entry.get("precision", "fp32"), "runtime": cls.name, "batch": batch,
        "device": device.name, "device_kind": device.kind, "edgekit_version": __version__,
        "profile": result,
    }

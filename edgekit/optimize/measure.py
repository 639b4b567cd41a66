"""Measuring one candidate on one device: the single place `edgekit optimize` reaches the
runtimes and the remote path, so that they can be swapped (e.g. for the executors) in one spot.

Local devices: `edgekit.validate.bench.measure` — the one latency protocol of runtimes/base.py
and top-1 on the runtime itself over the eval set. Remote devices (a profile with `host:`): the
validator's remote path (`edgekit.validate.validator.validate`, which hands the job to
edgekit.remote), one job at a time; the search waits on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, MissingDependencyError


class DeviceLostError(EdgekitError):
    """A remote device stopped answering during the search (its partial front is kept)."""

    exit_code = 1


def measure_on_device(entry: dict[str, Any], device: Any, runtime: str, *, spec: Any,
                      batch: int, eval_set: Any, ref_logits: Any, eval_source: str,
                      eval_limit: int | None, data_dir: str | None) -> dict[str, Any]:
    """The result record of `entry` (an artifact's manifest entry with its path) run by
    `runtime` on `device` at `batch`."""
    if not device.is_remote:
        from edgekit.validate.bench import measure

        return measure(entry, spec, device, eval_set=eval_set, batches=[batch],
                       ref_logits=ref_logits, runtime=runtime, model_name=entry.get("model"))[0]
    from edgekit.remote import HostKeyError, RemoteAuthError, RemoteError, RemotePathError
    from edgekit.validate.validator import validate

    try:
        result = validate(Path(entry["path"]), device, eval_source=eval_source, batches=[batch],
                          data_dir=data_dir, limit=eval_limit)
    except (HostKeyError, RemoteAuthError, RemotePathError):
        raise  # the device answered and refused: bad input, not a lost device
    except (RemoteError, OSError) as exc:
        raise DeviceLostError(f"{device.name} stopped answering: {getattr(exc, 'message', exc)}",
                              hint="rerun the same command when the device is back: the search "
                                   "resumes where it stopped") from None
    records = [r for r in result.records if r.get("runtime") == runtime]
    if not records:
        raise MissingDependencyError(f"{device.name} did not run {Path(entry['path']).name} on "
                                     f"{runtime}", hint="check `edgekit devices` on the device")
    return records[0]

"""`edgekit validate` on several devices at once (`--device A --device B`, `--fleet FILE`,
`--cluster ADDRESS`): one table per device, a summary of every device, one exit code."""

from __future__ import annotations

from typing import Any

import click

from edgekit.cli.common import print_json


def fleet_devices(device_names: tuple[str, ...], fleet_file: str | None,
                  threads: int | None) -> list:
    """The fleet file's devices, then each --device (a profile name or path)."""
    from edgekit.fleetfile import fleet_device, load_fleet, resolve_profile

    devices = load_fleet(fleet_file) if fleet_file else []
    devices += [fleet_device(resolve_profile(name, None)) for name in device_names]
    if threads:
        devices = [type(d)(d.name, d.profile.model_copy(update={"threads": threads}), d.resource,
                           d.node) for d in devices]
    return devices


def validate_fleet_command(target: str, device_names: tuple[str, ...], *, fleet_file: str | None,
                           cluster: str | None, allow_public_cluster: bool,
                           eval_source: str | None, limits: dict[str, Any],
                           artifact: str | None, batches: list[int] | None, limit: int | None,
                           threads: int | None, store_path: str | None, rerun: bool,
                           data_dir: str | None, as_json: bool) -> None:
    from edgekit.config import parse_as
    from edgekit.errors import GateError, InputError
    from edgekit.validate.fleet import validate_fleet, validate_on_cluster
    from edgekit.validate.gate import Budget

    if not eval_source:
        raise InputError("validate needs labelled eval data for the accuracy gate",
                         hint="pass --eval SOURCE, e.g. --eval fashion-mnist:test")
    devices = fleet_devices(device_names, fleet_file, threads)
    budget = parse_as(Budget, limits, "budget")
    if cluster:  # a public or silent cluster address: refused before anything is written
        from edgekit.executors import check_cluster_address

        check_cluster_address(cluster, allow_public=allow_public_cluster)
    if store_path:  # refuse a bad store before minutes of measuring
        from edgekit.api import check_store
        from edgekit.data.given import DataSources

        check_store(store_path, target, DataSources(eval=eval_source, data_dir=data_dir))

    from pathlib import Path

    from edgekit.data.given import DataSources
    from edgekit.executors import ValidationJob

    job = ValidationJob(target=Path(target), device=None,
                        budget=budget, batches=batches,
                        artifact=artifact, rerun=rerun,
                        data=DataSources(eval=eval_source, data_dir=data_dir,
                                         eval_limit=limit))  # each device its own
    if cluster:
        fleet = validate_on_cluster(job, devices, address=cluster,
                                    allow_public=allow_public_cluster)
    else:
        fleet = validate_fleet(job, devices)
    if store_path:
        fleet.store(store_path)
    if as_json:
        print_json(fleet.to_json())
    else:
        print_fleet(fleet, target, store_path)
    if not fleet.passed:
        bad = [f"{o.device.name}: {o.status}" for o in fleet.outcomes if not o.passed]
        raise GateError(f"{len(bad)} of {len(fleet.outcomes)} device(s) did not pass: "
                        + "; ".join(bad), hint="see each device's table and reason above")


def print_fleet(fleet: Any, target: str, store_path: str | None) -> None:
    from edgekit.results.table import print_fleet_rows, print_gate_records

    budget = fleet.budget.describe()
    rows = []
    for o in fleet.outcomes:
        r = o.result
        if r is not None and r.records:
            print_gate_records(r.records, title=f"edgekit validate {target} on {o.device.name} "
                               f"(budget: {budget})")
        for skip in (r.skipped if r else []):
            click.echo(f"{o.device.name}: skipped {skip['artifact']}: {skip['reason']}", err=True)
        d = r.decisive if r else {}
        note = o.error or o.partial_reason or (d.get("why") if d else "")
        if o.hint and o.error:
            note += f" (hint: {o.hint})"
        rows.append([o.device.name, o.device.physical, o.status.upper(),
                     str(d.get("artifact") or "-"), str(len(r.records) if r else 0),
                     f"{o.seconds:.1f}", note or ""])
    print_fleet_rows(rows, f"edgekit validate {target} on {len(rows)} devices, "
                     f"{fleet.wall_s:.1f} s (budget: {budget})")
    if fleet.stored_ids:
        click.echo(f"stored {len(fleet.stored_ids)} records in {store_path}")

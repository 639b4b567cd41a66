"""`edgekit validate` (every artifact of a folder on a device profile, with the accuracy gate)
and `edgekit devices` (the profiles, and which of their runtimes work here). Torch-free."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.bench import parse_batches
from edgekit.cli.common import (
    DROP,
    DROP_REL,
    SPEEDUP,
    Number,
    data_dir_option,
    json_option,
    print_json,
    recorded_preprocessing_options,
)


def budget_options(fn):
    """--max-drop, --max-drop-rel, --min-agreement, --min-cosine: the accuracy budget, and
    --min-speedup: the latency budget against the fp32 original."""
    fn = click.option("--min-speedup", type=SPEEDUP, default=None,
                      help="p50 speed-up against the fp32 original (measured in the same run on "
                      "the same runtime and batch) at least this; 1 = never slower than the "
                      "original. Off by default here, since a folder made by `compress` holds "
                      "no original (its fp32 model is the reference); recipes default to 1.")(fn)
    fn = click.option("--min-cosine", type=Number(-1, 1), default=None,
                      help="Mean logit cosine similarity with the reference at least this.")(fn)
    fn = click.option("--min-agreement", type=Number(0, 1), default=None,
                      help="Top-1 agreement with the reference at least this (0..1).")(fn)
    fn = click.option("--max-drop-rel", type=DROP_REL, default=None,
                      help="Allowed relative top-1 drop, e.g. 0.01 keeps 99% of fp32 top-1.")(fn)
    fn = click.option("--max-drop", type=DROP, default=None,
                      help="Allowed top-1 drop against the fp32 reference, in points.")(fn)
    return fn


@click.command()
@click.argument("target", type=click.Path())
@click.option("--device", "device_names", multiple=True,
              help="Device profile name or YAML path (default: local-cpu); repeat it to validate "
              "on several devices at once (one job per device at a time, one merged table).")
@click.option("--fleet", "fleet_file", type=click.Path(dir_okay=False), default=None,
              help="A fleet file (devices/fleet-*.yaml): the devices, and the Ray resource of "
              "the node that owns each.")
@click.option("--cluster", default=None,
              help="Run each device's job on the Ray cluster at this address (ray://HOST:10001, "
              "HOST:6379 or auto), on the node that owns the device. Private networks only.")
@click.option("--allow-public-cluster", is_flag=True,
              help="Allow a --cluster address outside private networks (Ray has no "
              "authentication: anyone who reaches it runs code on its nodes).")
@click.option("--eval", "eval_source", default=None,
              help="Labelled eval data, e.g. fashion-mnist:test (required).")
@budget_options
@click.option("--artifact", default=None,
              help="The artifact whose gate decides the exit code (file name or stage); "
              "default: the fastest one within the budget (the most compressed one when none "
              "is).")
@click.option("--batch", "batch_text", default=None, help="Batch sizes, e.g. 1,8 (default: profile's).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use a stratified sample of the eval set.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Override the profile's thread count.")
@click.option("--store", "store_path", type=click.Path(dir_okay=False), default=None,
              help="Append the records to this results store (SQLite; JSON Lines next to it).")
@click.option("--rerun", is_flag=True,
              help="Remote devices: measure again instead of collecting the results of the same "
                   "job (same artifacts, data, budget and device state) that already ran.")
@recorded_preprocessing_options
@data_dir_option
@json_option
def validate(target: str, device_names: tuple[str, ...], fleet_file: str | None,
             cluster: str | None, allow_public_cluster: bool, eval_source: str | None, max_drop: float | None,
             max_drop_rel: float | None, min_agreement: float | None, min_cosine: float | None,
             min_speedup: float | None, artifact: str | None, batch_text: str | None, limit: int | None, threads: int | None,
             store_path: str | None, rerun: bool, data_dir: str | None, as_json: bool,
             preprocessing: dict) -> None:
    """Validate every artifact of TARGET (an output folder) on a device: latency with one
    protocol, top-1 on the runtime itself, the speed-up against the fp32 original, the gate.
    The fastest artifact within the budget decides; exit 1 when none is.

    --eval data is preprocessed as each artifact records (set when it was exported);
    --mean/--std/--resize/--crop/--channel-order may repeat those values, and a different value
    is an error (export the model again to change them)."""
    from edgekit.api import validate as api_validate
    from edgekit.errors import GateError

    device_names = device_names or (() if fleet_file else ("local-cpu",))
    limits = {"max_drop": max_drop, "max_drop_rel": max_drop_rel, "min_agreement": min_agreement,
              "min_cosine": min_cosine, "min_speedup": min_speedup}
    if fleet_file or cluster or len(device_names) > 1:  # several devices at once (issue 17)
        from edgekit.cli.fleet import validate_fleet_command

        return validate_fleet_command(
            target, device_names, fleet_file=fleet_file, cluster=cluster,
            allow_public_cluster=allow_public_cluster, eval_source=eval_source,
            limits=limits, artifact=artifact,
            batches=parse_batches(batch_text), limit=limit, threads=threads,
            store_path=store_path, rerun=rerun, data_dir=data_dir, as_json=as_json)
    device_name = device_names[0]
    outcome = api_validate(target, data={"eval": eval_source, "eval_limit": limit,
                                         "data_dir": data_dir, "preprocessing": preprocessing},
                           device=device_name, budget=limits, artifact=artifact,
                           settings={"batches": parse_batches(batch_text), "threads": threads,
                                     "rerun": rerun},
                           store=store_path)
    result, device, budget, stored = outcome.result, outcome.device, outcome.budget, \
        outcome.stored_ids
    if as_json:
        print_json(outcome.to_json())
    else:
        from edgekit.results.table import print_gate_records

        print_gate_records(result.records, title=f"edgekit validate {target} on {device.name} "
                           f"(budget: {budget.describe()})")
        if result.reference_note:
            click.echo(result.reference_note)
        for status in result.missing_runtimes:
            click.echo(f"runtime {status.name} of {device.name} is not usable here: "
                       f"{status.reason} (validated the rest)", err=True)
        for skip in result.skipped:
            click.echo(f"skipped {skip['artifact']}: {skip['reason']}", err=True)
        notes = {(r.get("artifact_name"), r.get("runtime"), n): None for r in result.records
                 for n in (r.get("gate") or {}).get("notes") or []}
        for name, runtime, note in notes:  # passed, but only within the noise
            click.echo(f"note: {name} on {runtime}: {note}")
        if stored:
            click.echo(f"stored {len(stored)} records in {store_path} (run {result.run_id})")
        d = result.decisive
        click.echo(f"decides the exit code: {d['artifact']} ({d['why']}) -> "
                   + ("PASS" if d["passed"] else "FAIL: " + "; ".join(d["reasons"])))
    if not result.passed:
        d = result.decisive
        raise GateError(f"{d['artifact']} fails the budget ({budget.describe()}): "
                        + "; ".join(d["reasons"]),
                        hint="loosen the budget, calibrate with more data, or compress less; "
                        "when it is slower than the original, `edgekit profile` shows which "
                        "layers (int8 layers slower than float: --latency-fallback)")


@click.command()
@click.option("--check/--no-check", default=True, show_default=True,
              help="Check which runtimes are usable on this machine.")
@click.option("--remote", "check_remote", is_flag=True,
              help="Also connect to remote profiles (host:) over SSH and check the device.")
@json_option
def devices(check: bool, check_remote: bool, as_json: bool) -> None:
    """List device profiles (devices/*.yaml) and which of their runtimes work here."""
    from edgekit.devices import list_profiles, load_profile
    from edgekit.errors import EdgekitError
    from edgekit.executors import executor_for
    from edgekit.validate.validator import HERE

    rows = []
    for path in list_profiles():
        try:
            profile = load_profile(path)
        except EdgekitError as exc:
            rows.append({"name": path.stem, "path": str(path), "error": exc.message,
                         "hint": exc.hint})
            continue
        runtimes = {name: {"precisions": cfg.precisions}
                    for name, cfg in profile.runtimes.items()}
        with executor_for(profile, HERE) as executor:
            if executor.measures_here:  # the runtimes that count are this machine's
                if check:
                    _check(executor, profile, runtimes)
            else:
                for info in runtimes.values():
                    info.update(usable_here=None, reason="on the device; checked when "
                                "validating (or with --remote)")
                if check_remote:
                    _check(executor, profile, runtimes)
        rows.append({"name": profile.name, "path": str(path), "kind": profile.kind,
                     "remote": profile.host, "emulated": profile.emulated,
                     "threads": profile.threads,
                     "batch_sizes": profile.batch_sizes, "runtimes": runtimes})
    if as_json:
        print_json(rows)
        return
    for row in rows:
        if "error" in row:
            click.secho(f"{row['name']}  ({row['path']}): invalid — {row['error']}", fg="red")
            continue
        where = (f"remote {row['remote']}" if row["remote"] else "local") + \
            (", emulated: latency not representative" if row.get("emulated") else "")
        click.echo(f"{row['name']}  [{row['kind']}, {where}, threads {row['threads']}, "
                   f"batches {row['batch_sizes']}]  {Path(row['path'])}")
        for name, info in row["runtimes"].items():
            mark = ""
            if "usable_here" in info:
                mark = {True: "usable" + ("" if row["remote"] else " here"),
                        False: "NOT usable" + ("" if row["remote"] else " here") + ": "
                        + info["reason"], None: info["reason"]}[info["usable_here"]]
            click.echo(f"    {name:<12} {'/'.join(info['precisions']):<16} {mark}")


def _check(executor, profile, runtimes: dict) -> None:
    """Fill `runtimes` from the executor's check (this machine's runtimes, or the device's own
    over SSH); a check that fails marks every runtime with why."""
    from edgekit.errors import EdgekitError

    try:
        statuses = executor.check(profile)
    except EdgekitError as exc:
        for info in runtimes.values():
            info.update(usable_here=False, reason=f"device check failed: {exc.message}")
        return
    for status in statuses:
        runtimes[status.name].update(usable_here=status.usable, reason=status.reason)

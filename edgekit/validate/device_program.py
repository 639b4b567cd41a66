"""The program a remote device runs for one task of a job, against the device's own edgekit:
`validate` (the validator `edgekit validate` runs, on each artifact) and `alternate` (two
artifacts timed together in alternating rounds, the device-side twin of
edgekit.runtimes.speedup.alternate).

A module of edgekit's lean (torch-free) path, at the layer its imports allow (the validator,
the runtimes, the device profiles), and a leaf: nothing in edgekit imports it. The workstation
ships this file by path: edgekit.remote.payload sends it in every job as its `PROGRAM_NAME` (a
content-addressed file of the job, so a change of it is a new job) and the task runs
`PYTHON PROGRAM_NAME COMMAND ARGS_JSON` in the job's folder, so a device with an older edgekit
runs this version of the program. Its parameters (the run id included) are the one JSON
argument, never patched into source text. The device's edgekit, numpy and the runtimes are
imported inside the commands, so a usage error answers without them.

Each command prints one JSON object on stdout (what the agent records for the task); a refused
input is one `error: ...` line on stderr and exit status 2.
"""

import json
import os
import sys


def validate_command(a):
    """{"results": [validation result with its latency samples]} of the artifact `a["target"]`
    (or every file matching `a["globs"]`, when any does) on the profile `a["device"]`."""
    import glob

    from edgekit.devices import load_profile
    from edgekit.validate.gate import Budget
    from edgekit.validate.validator import validate

    targets = sorted(p for g in a.get("globs", []) for p in glob.glob(g)) or [a["target"]]
    results = []
    for target in targets:
        r = validate(target, load_profile(a["device"]), eval_source=a["eval"],
                     budget=Budget(**a["budget"]), batches=a["batches"], run_id=a["run_id"])
        results.append(r.to_json(with_samples=True))
    return {"results": results}


def alternate_command(a):
    """{"timed": {label: latency statistics with samples and round counts}} of the artifacts
    `a["artifacts"]` ({label: {"path", "runtime"}}) timed on the inputs `a["inputs"]` (.npz)
    in `a["rounds"]` alternating rounds with the device's own latency protocol."""
    from pathlib import Path

    import numpy as np

    from edgekit.devices import load_profile
    from edgekit.runtimes.speedup import alternate
    from edgekit.spec import InputSpec
    from edgekit.validate.bench import open_runner

    device = load_profile(a["device"])
    spec = InputSpec.model_validate(a["spec"])
    runners = {label: open_runner(Path(one["path"]), spec, device, one["runtime"])
               for label, one in a["artifacts"].items()}
    with np.load(a["inputs"], allow_pickle=False) as data:
        x = np.ascontiguousarray(data["x"], dtype=np.float32)
    return {"timed": alternate(runners, x, device.latency, a["rounds"], a["seed"])}


# command -> (function, how a non-JSON value is written, whether an EdgekitError is a refused
# input: exit 2 with its one line, as `edgekit validate` does; otherwise it is a traceback).
COMMANDS = {"validate": (validate_command, str, True),
            "alternate": (alternate_command, lambda o: o.tolist() if hasattr(o, "tolist")
                          else str(o), False)}


def main(argv):
    """`PROGRAM COMMAND ARGS_JSON`: run the command, print its answer; 2 on bad input."""
    if len(argv) != 3 or argv[1] not in COMMANDS:
        program = os.path.basename(argv[0]) if argv else "edgekit_program.py"
        sys.stderr.write(f"usage: {program} {{{'|'.join(COMMANDS)}}} ARGS_JSON\n")
        return 2
    from edgekit.errors import EdgekitError

    command, default, refuses = COMMANDS[argv[1]]
    try:
        answer = command(json.loads(argv[2]))
    except EdgekitError as exc:
        if not refuses:
            raise
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(answer, default=default))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

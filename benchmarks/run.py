"""`make bench`: run every benchmarks/bench_*.py (each has `main() -> dict`), write each one's
results as JSON and Markdown into benchmarks/results/, and rewrite the README sections each one
returns (data["readme"] = {section: markdown}, between `<!-- bench:NAME:start/end -->`; see
benchmarks/readme.py). zoo runs first: it trains the checkpoints the others measure. The GPU
section is re-rendered from the newest `make gpu-check` records (benchmarks/gpu_readme.py).

    .venv/bin/python benchmarks/run.py                 # everything (hours; a quiet machine)
    .venv/bin/python benchmarks/run.py zoo int8        # some of them
    .venv/bin/python benchmarks/run.py --quick [NAME]  # prove the scripts work in minutes:
        # tiny protocols and data, results and a README copy under .cache/bench-quick/
    .venv/bin/python benchmarks/run.py --render [NAME] # measure nothing: rewrite the README
        # sections from the results files in benchmarks/results/ (each bench's README_SECTIONS)

Timing claims live here, measured as ratios against anchors in the same run, never in tests.
Run it on a quiet machine: other processes on the cores skew every number."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRST = ("zoo",)  # trains what the others measure
LAST = ("gpu",)   # formats recorded GPU runs; measures nothing


def scripts() -> dict[str, Path]:
    """{name: script} in the order they run."""
    found = {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}
    found["gpu"] = HERE / "gpu_readme.py"
    order = [*FIRST, *sorted(n for n in found if n not in FIRST + LAST), *LAST]
    return {n: found[n] for n in order if n in found}


def render(module) -> dict:
    """{"readme": sections} rendered from the results files the module's sections come from
    (a section whose results file is missing is left as it is)."""
    import json

    from common import RESULTS

    if not hasattr(module, "README_SECTIONS"):  # gpu_readme renders from its records folder
        return module.main() if module.__name__ == "gpu_readme" else {}
    out = {}
    from common import disturbed_banner

    for section, (results, renderer) in module.README_SECTIONS.items():
        path = RESULTS / f"{results}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            out[section] = disturbed_banner(data.get("interference")) + renderer(data)
        else:
            print(f"   {section}: no {path}, left as it is", flush=True)
    return {"readme": out}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    render_only = "--render" in argv
    only = [a for a in argv if not a.startswith("--")]
    if quick:
        os.environ["BENCH_QUICK"] = "1"  # read by common.py when the scripts import it
    sys.path.insert(0, str(HERE))
    from common import QUICK_DIR
    from readme import README, rewrite

    readme = README
    if quick:
        QUICK_DIR.mkdir(parents=True, exist_ok=True)
        readme = QUICK_DIR / "README.md"
        shutil.copyfile(README, readme)
    available = scripts()
    unknown = [n for n in only if n not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; there are {list(available)}", file=sys.stderr)
        return 2
    failures = 0
    timed_runs: list[dict] = []  # (issue 18) every script's timings, for the closing tally
    for name, path in available.items():
        if only and name not in only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            import common

            common.TIMED.clear()  # (issue 18) this script's timings only
            data = render(module) if render_only else (module.main() or {})
            banner = common.disturbed_banner(data.get("interference")
                                             or common.interference_summary())
            changed = rewrite({k: banner + v for k, v in data.get("readme", {}).items()}, readme)
            timed_runs += common.TIMED
            print(f"== {name}: README sections {sorted(data.get('readme', {}))} written to "
                  f"{readme} ({len(changed)} changed)", flush=True)
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            failures += 1
            print(f"!! {name} failed: {exc!r}", flush=True)
        print(f"== {name} done in {time.perf_counter() - start:.0f} s", flush=True)
    if timed_runs:
        import common

        tally = common.interference_summary(timed_runs)
        print(f"== timed runs: {tally['timed_runs']}, judged {tally['judged']}, disturbed after "
              f"reruns {tally['disturbed']} (share {tally['disturbed_share']}), reruns "
              f"{tally['reruns']}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

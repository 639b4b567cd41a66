"""`make bench`: run every benchmarks/bench_*.py (each has `main() -> dict`), write each one's
results as JSON and Markdown into benchmarks/results/, and print the Markdown tables.

Timing claims live here, measured as ratios against anchors in the same run, never in tests.
Run it on a quiet machine: other processes on the cores skew every number."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    only = set(argv)
    failures = 0
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if only and name not in only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            module.main()
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            failures += 1
            print(f"!! {name} failed: {exc!r}", flush=True)
        print(f"== {name} done in {time.perf_counter() - start:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

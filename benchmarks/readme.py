"""The README's measured numbers, written between markers by the scripts that measure them.

A section is

    <!-- bench:NAME:start -->
    ...written by a script, never by hand...
    <!-- bench:NAME:end -->

Each benchmark's `main()` returns its data with a "readme" entry, {NAME: markdown}, and
benchmarks/run.py (`make bench`) rewrites those sections; `OWNERS` says which script writes which
section, and tests/unit/test_bench_readme.py checks that every section in the README has an owner
and that no measured number stands outside a section."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- bench:{name}:start -->"
END = "<!-- bench:{name}:end -->"
MARKER = re.compile(r"<!-- bench:([a-z0-9-]+):(start|end) -->")

# section -> the script that writes it (benchmarks/run.py NAME runs benchmarks/bench_NAME.py)
OWNERS = {
    "zoo": "benchmarks/bench_zoo.py",
    "int8-zoo": "benchmarks/bench_int8.py",
    "int8-cpu": "benchmarks/bench_int8.py",
    "prune-zoo": "benchmarks/bench_prune.py",
    "prune-cpu": "benchmarks/bench_prune.py",
    "compress": "benchmarks/bench_compress.py",
    "dwsep-cpu": "benchmarks/bench_dwsep.py",
    "protocol": "benchmarks/bench_protocol.py",
    "optimize-seed": "benchmarks/bench_optimize.py",
    "optimize-resnet": "benchmarks/bench_optimize.py",
    "optimize-cost": "benchmarks/bench_optimize.py",
    "optimize-archs": "benchmarks/bench_optimize_archs.py",
    "search-cost": "benchmarks/bench_search_cost.py",
    "resnet-cost": "benchmarks/bench_resnet_cost.py",
    "train-speed": "benchmarks/bench_train_speed.py",
    "teacher-engine": "benchmarks/bench_teacher_engine.py",
    "fleet": "benchmarks/bench_fleet.py",
    "imagefolder": "benchmarks/bench_imagefolder.py",
    "memory": "benchmarks/bench_memory.py",
    "attention": "benchmarks/bench_attention.py",
    "matrix": "benchmarks/bench_matrix.py",
    "gpu": "benchmarks/gpu_readme.py",
}


class MarkerError(ValueError):
    """The README's markers do not pair up, or a section to write has no markers."""


def sections(text: str) -> dict[str, str]:
    """{NAME: body} of every marked section (body without the marker lines)."""
    out: dict[str, str] = {}
    open_name: str | None = None
    begin = 0
    for m in MARKER.finditer(text):
        name, side = m.groups()
        if side == "start":
            if open_name is not None:
                raise MarkerError(f"bench:{name} starts inside bench:{open_name}")
            if name in out:
                raise MarkerError(f"bench:{name} appears twice")
            open_name, begin = name, m.end()
        else:
            if open_name != name:
                raise MarkerError(f"bench:{name} ends but {open_name or 'no section'} is open")
            out[name] = text[begin:m.start()].strip("\n")
            open_name = None
    if open_name is not None:
        raise MarkerError(f"bench:{open_name} never ends")
    return out


def replace_sections(text: str, new: dict[str, str]) -> str:
    """`text` with each named section's body replaced by new[NAME]; every name must have markers."""
    present = sections(text)
    missing = sorted(set(new) - set(present))
    if missing:
        raise MarkerError("no markers for " + ", ".join(f"bench:{n}" for n in missing)
                          + f" (add {START.format(name=missing[0])} ... "
                            f"{END.format(name=missing[0])} where the section belongs)")
    for name, body in new.items():
        start, end = START.format(name=name), END.format(name=name)
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{body.strip(chr(10))}\n{end}{tail}"
    return text


def outside_sections(text: str) -> str:
    """The README without its marked sections (what a person wrote)."""
    return re.sub(r"<!-- bench:([a-z0-9-]+):start -->.*?<!-- bench:\1:end -->", "", text,
                  flags=re.S)


def rewrite(new: dict[str, str], path: Path = README) -> list[str]:
    """Rewrite the sections in `new` in the README at `path` (atomically); the names changed."""
    if not new:
        return []
    from edgekit.io.files import atomic_write_text

    text = path.read_text()
    updated = replace_sections(text, new)
    if updated != text:
        atomic_write_text(path, updated)
    before, after = sections(text), sections(updated)
    return [name for name in new if before.get(name) != after.get(name)]

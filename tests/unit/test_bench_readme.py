"""The README's numbers have provenance: every measured section sits between bench markers, each
section is owned by a script in benchmarks/ that returns it, no measured-looking number stands
outside a section, and the marker writer replaces exactly the sections it is given."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from readme import (  # noqa: E402
    OWNERS,
    MarkerError,
    outside_sections,
    replace_sections,
    rewrite,
    sections,
)

README = ROOT / "README.md"
# What a measured figure looks like: a top-1 or a ratio to 3+ decimals, a speed-up, a latency,
# a before → after pair of decimals.
MEASURED = [r"\b\d\.\d{3,}\b", r"\d+\.\d+ ?×", r"\d+\.\d+ ?(µs|ms)\b", r"\d+[–-]\d+ ?(µs|ms|s)\b",
            r"\d+\.\d+ → \d"]


def test_every_section_has_an_owner_and_every_owner_a_section():
    found = sections(README.read_text())
    assert set(found) == set(OWNERS)
    for name, script in OWNERS.items():
        source = (ROOT / script).read_text()
        assert f'"{name}"' in source, f"{script} never returns README section {name}"


def test_no_measured_number_outside_the_sections():
    text = re.sub(r"```.*?```", "", outside_sections(README.read_text()), flags=re.S)
    text = re.sub(r'"[^"\n]*"', "", text)  # a quoted example of a message, not a measurement
    stray = [line for line in text.splitlines()
             if any(re.search(p, line) for p in MEASURED)]
    assert stray == [], "numbers written by hand; move them into a bench section:\n" + \
        "\n".join(stray)


def test_the_patterns_catch_what_the_readme_used_to_hand_type():
    for line in ("| lenet5 | 0.9003 | 0.9002 (0.01) |", "8.41 → 2.11", "3.06×",
                 "take 13–40 µs", "one epoch takes 3.5 ms"):
        assert any(re.search(p, line) for p in MEASURED), line


TEXT = """intro
<!-- bench:a:start -->
old a
<!-- bench:a:end -->
middle
<!-- bench:b:start -->
old b
<!-- bench:b:end -->
end
"""


def test_replace_sections_rewrites_only_the_named_ones():
    out = replace_sections(TEXT, {"b": "new b\n| x |"})
    assert sections(out) == {"a": "old a", "b": "new b\n| x |"}
    assert out.startswith("intro\n") and "\nmiddle\n" in out and out.endswith("end\n")
    assert replace_sections(out, {"b": "old b"}) == TEXT


@pytest.mark.parametrize("bad, message", [
    (TEXT.replace("<!-- bench:a:end -->\n", ""), "starts inside"),
    (TEXT + "<!-- bench:a:start -->\nx\n<!-- bench:a:end -->\n", "appears twice"),
    (TEXT.replace("<!-- bench:b:end -->", "<!-- bench:a:end -->"), "ends but"),
    (TEXT + "<!-- bench:c:start -->\n", "never ends"),
])
def test_unpaired_markers_are_errors(bad, message):
    with pytest.raises(MarkerError, match=message):
        sections(bad)


def test_a_section_without_markers_is_an_error_and_nothing_is_written(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(TEXT)
    with pytest.raises(MarkerError, match="no markers for bench:zoo"):
        rewrite({"a": "new a", "zoo": "table"}, path)
    assert path.read_text() == TEXT
    assert rewrite({"a": "new a"}, path) == ["a"]
    assert sections(path.read_text())["a"] == "new a"
    assert rewrite({"a": "new a"}, path) == []  # unchanged


def test_the_gpu_section_is_what_its_script_renders_from_the_newest_records():
    from gpu_readme import newest_records, render

    folder = newest_records()
    assert folder is not None and (folder / "gpu-summary.json").is_file()
    rendered = render(folder)
    assert sections(README.read_text())["gpu"] == rendered.strip("\n")
    assert f"records in `{folder.relative_to(ROOT)}/`" in rendered


NOT_MEASURED = "_Not measured yet"


def bench_sections() -> list[tuple[str, str, object]]:
    """(section, results file name, renderer) of every bench script's README_SECTIONS."""
    import importlib

    out = []
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        module = importlib.import_module(script.stem)
        for section, (results, renderer) in getattr(module, "README_SECTIONS", {}).items():
            out.append((section, results, renderer))
    return out


def test_every_bench_section_is_rendered_by_its_script():
    assert {s for s, _, _ in bench_sections()} == set(OWNERS) - {"gpu"}


def test_the_readme_numbers_are_those_of_the_results_files():
    """A filled section is exactly what its script renders from benchmarks/results/NAME.json
    (`benchmarks/run.py --render` rewrites them all); a section with no results file is empty."""
    import json

    found = sections(README.read_text())
    for section, results, renderer in bench_sections():
        path = ROOT / "benchmarks" / "results" / f"{results}.json"
        if NOT_MEASURED in found[section]:
            assert not re.search(r"\d\.\d", found[section]), f"{section}: numbers in a placeholder"
            continue  # not measured yet: `make bench` fills it
        assert path.is_file(), f"README section {section} has numbers but no {path.name}"
        rendered = renderer(json.loads(path.read_text()))
        assert found[section] == rendered.strip("\n"), \
            f"README section {section} differs from {path.name}: run benchmarks/run.py --render"

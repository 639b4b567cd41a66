"""The report: Pareto front, self-contained HTML (decodable embedded PNGs, tables, environment),
the Markdown table, and the page rendered by a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from edgekit.results.report import pareto_front, render_html, render_markdown, write_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


def _records():
    rng = np.random.default_rng(0)
    env = {"hostname": "box", "os": "Linux", "python": "3.11",
           "cpu": {"model": "Test CPU", "usable_cores": 2, "logical_cores": 2,
                   "flags": {"avx2": True, "avx512_vnni": False}, "vnni": False},
           "gpus": [], "versions": {"edgekit": "0.1.0", "onnxruntime": "1.0"}}
    out = []
    for device in ("local-cpu", "jetson-orin-nano"):
        for name, precision, p50, top1 in (("model.onnx", "fp32", 1.0, 0.91),
                                           ("model.int8.onnx", "int8", 0.5, 0.905),
                                           ("pruned.onnx", "fp32", 0.8, 0.86)):
            for runtime, scale in (("onnxruntime", 1.0), ("openvino", 0.8)):
                for batch in (1, 8):
                    samples = (p50 * scale * batch * rng.lognormal(0, 0.1, 300)).tolist()
                    passed = top1 >= 0.9
                    out.append({
                        "model": "lenet5", "device": device, "runtime": runtime, "format": "onnx",
                        "precision": precision, "batch": batch, "artifact": f"/out/{name}",
                        "artifact_name": name, "size_bytes": 300_000,
                        "latency": {"p50_ms": float(np.median(samples)),
                                    "p90_ms": float(np.percentile(samples, 90)),
                                    "p99_ms": float(np.percentile(samples, 99)),
                                    "throughput_per_s": 1000 * batch / float(np.mean(samples)),
                                    "valid": True, "samples_ms": samples,
                                    "validity": {"p99_claimable": False, "reasons": []},
                                    "timing_scope": "inference call on host"},
                        "accuracy": {"top1": top1, "top1_drop_points": 100 * (0.91 - top1),
                                     "fidelity": {"top1_agreement": 0.99}},
                        "gate": {"passed": passed, "budget": {"max_drop": 0.5},
                                 "reasons": [] if passed else ["top1_drop_points 5 not ≤ 0.5"]},
                        "runtime_details": {"runtime": runtime, "threads": 2},
                        "environment": env})
    return out


def test_pareto_front():
    points = [(1.0, 90.0), (0.5, 89.0), (0.8, 85.0), (2.0, 90.0), (0.5, 88.0), (3.0, 95.0)]
    assert pareto_front(points) == [1, 0, 5]  # (0.8, 85) and (2, 90) and (0.5, 88) dominated


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_html_is_self_contained_with_plots_tables_and_environment():
    from PIL import Image

    text = render_html(_records(), source="results.db")
    images = _images(text)
    assert len(images) == 4  # scatter + distributions per device
    for blob in images:
        img = Image.open(io.BytesIO(blob))
        assert img.format == "PNG" and img.width > 300 and img.height > 200
    assert text.count('<section class="device"') == 2
    assert text.count("<tr") == 2 * (1 + 12)  # header + 3 artifacts × 2 runtimes × 2 batches
    assert text.count(">PASS<") == 16 and text.count(">FAIL<") == 8
    assert "Test CPU" in text and "drop ≤ 0.5 pt" in text and "top1_drop_points 5" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_markdown_table_per_device():
    text = render_markdown(_records())
    assert text.count("### ") == 2
    rows = [line for line in text.splitlines() if line.startswith("| lenet5")]
    assert len(rows) == 24 and sum("FAIL" in r for r in rows) == 8
    assert "0.058" not in text and "| 0.9100 |" in text


def test_write_report_is_atomic_and_says_what_it_wrote(tmp_path):
    out = write_report(_records(), tmp_path / "r.html", markdown_path=tmp_path / "r.md")
    assert out == {"html": str(tmp_path / "r.html"), "records": 24, "shown": 24,
                   "markdown": str(tmp_path / "r.md")}
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["r.html", "r.md"]


PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight,
                                               complete: i.complete, data: i.src.startsWith('data:image/png')}));
  const tables = [...document.querySelectorAll('table')].map(t => t.rows.length);
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({imgs, tables, failCells: document.querySelectorAll('td.fail').length});
  document.body.appendChild(probe);
});
</script></body>"""


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=120)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    write_report(_records(), page)
    probed = tmp_path / "probed.html"  # the report itself has no scripts; the probe is the test's
    probed.write_text(page.read_text().replace("</body>", PROBE))
    done = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, done.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(probe["imgs"]) == 4
    assert all(i["complete"] and i["data"] and i["w"] > 300 and i["h"] > 200 for i in probe["imgs"])
    assert probe["tables"] == [13, 13] and probe["failCells"] == 8
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, "--hide-scrollbars", "--window-size=1200,1600",
                     f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1600, 1200) and pixels.std() > 10  # not a blank page


def test_compress_table_keeps_main_columns_and_folds_the_rest_into_details(capsys):
    from edgekit.results.table import print_compress_rows

    print_compress_rows([
        {"step": "original", "macs": 1000, "conv_macs": 900, "params": 50, "top1": 0.9},
        {"step": "dwsep", "layer": "conv2", "r": 4, "output_error": 0.09781, "note": "why"},
        {"step": "dwsep", "macs": 500, "conv_macs": 400, "params": 40, "top1": 0.88},
    ])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "step" in line)
    assert [w for w in header.replace("┃", " ").split()] == [
        "step", "layer", "macs", "params", "top1", "details"]
    assert "500 (2.00×↓)" in out and "40 (1.25×↓)" in out and "0.8800" in out
    assert "r 4; output_error 0.09781; why" in out
    assert "conv_macs" not in out


def test_optimize_report_lists_dropped_knobs_and_unmeasured_candidates_with_reasons(tmp_path):
    """(issue 27) An optimize report says what the search left out: knobs dropped from the space
    and candidates that failed or were skipped, each with its reason, under its device; a device
    with nothing measured still gets its section."""
    not_measured = {
        "local-cpu": {
            "dropped": [{"knob": "dwsep", "value": "auto",
                         "why": "dwsep auto substitutes no conv of this model: nothing changed"}],
            "candidates": [{"name": "prune 0.5 openvino:int8", "status": "failed",
                            "why": "pruning at ratio 0.5 would remove every channel of fc1"},
                           {"name": "prune 0.25 tensorrt:fp16", "status": "skipped",
                            "why": "tensorrt: no GPU"}],
            "notes": ["prune 0.25: round_to 8 keeps 1 layer whole, too narrow to keep a "
                      "multiple of it after pruning: features.1.block.1.fc1 (8)"]},
        "jetson-orin-nano": {"dropped": [], "notes": [], "candidates": [
            {"name": "original tensorrt:fp32", "status": "failed", "why": "device lost"}]}}
    records = [r for r in _records() if r["device"] == "local-cpu"]
    out = write_report(records, tmp_path / "r.html", markdown_path=tmp_path / "r.md",
                       not_measured=not_measured)
    page = (tmp_path / "r.html").read_text()
    local = page[page.index('id="device-local-cpu"'):page.index('id="device-jetson-orin-nano"')]
    assert "Dropped from the search space (1)" in local
    assert "dwsep auto substitutes no conv of this model: nothing changed" in local
    assert "Candidates not measured to the end (2)" in local
    assert '<tr class="fail"><td class="l">prune 0.5 openvino:int8</td>' in local
    assert "would remove every channel of fc1" in local and "tensorrt: no GPU" in local
    assert "features.1.block.1.fc1 (8)" in local
    jetson = page[page.index('id="device-jetson-orin-nano"'):]
    assert "nothing measured" in jetson and "device lost" in jetson
    markdown = (tmp_path / "r.md").read_text()
    assert "- dropped from the space: dwsep auto: dwsep auto substitutes no conv" in markdown
    assert "- original tensorrt:fp32: failed: device lost" in markdown
    assert out["records"] == len(records)


def test_tables_fit_100_columns_unless_wide(capsys):
    """(issue 27) The terminal tables were ~210 columns wide: by default they keep their main
    columns within 100 (a line names the hidden ones); --wide shows every column."""
    from edgekit.cli.optimize import OPT_COLUMNS, _cells
    from edgekit.results.table import GATE_COLUMNS, _print_table, print_gate_records, set_wide

    records = _records()[:4]
    candidate = {"name": "prune 0.25 + dwsep auto openvino:int8 float:first-conv+depthwise",
                 "status": "short", "p50_ms": 0.2, "speedup": 2.4, "speedup_ci": [1.7, 3.6],
                 "top1": 65.0, "drop_points": 35.0, "cost": {"total_s": 25.9}, "on_front": True,
                 "why": "short distillation reached 65.00%, more than 5 points under the budget "
                        "(99.00%): not promoted"}
    try:
        set_wide(False)
        print_gate_records(records, title="validate")
        _print_table(OPT_COLUMNS, [_cells(candidate)], "optimize",
                     narrow=("candidate", "status", "p50 ms", "speed-up", "Δ top-1", "front",
                             "why"))
        narrow = capsys.readouterr().out
        set_wide(True)
        print_gate_records(records, title="validate")
        wide = capsys.readouterr().out
    finally:
        set_wide(False)
    assert max(len(line) for line in narrow.splitlines()) <= 100, narrow
    assert "(top-1, p90 ms, p99 ms, throughput/s, size, valid, J/query, machine: --wide shows " \
           "them)" in narrow
    assert "(top-1 %, cost s: --wide shows them)" in narrow
    assert "promoted" in narrow and "1.7" in narrow  # the why and the interval are kept
    assert max(len(line) for line in wide.splitlines()) > 100
    header = next(line for line in wide.splitlines() if "artifact" in line)
    assert all(c.split()[0] in header for c in GATE_COLUMNS)


def _narrow_and_wide(capsys, show) -> tuple[str, str]:
    """What `show()` prints in the 100-column tables, then with --wide."""
    from edgekit.results.table import set_wide

    try:
        set_wide(False)
        show()
        narrow = capsys.readouterr().out
        set_wide(True)
        show()
        return narrow, capsys.readouterr().out
    finally:
        set_wide(False)


def test_a_long_model_name_is_never_broken_across_lines(capsys):
    """(issue 27) A validate table of a model named like the user's file: the narrow table kept
    10 columns in 100 and broke the name ("mobilene / t_v3_sma / ll"). Now the name and the
    artifact print whole on one line, the other columns shrink and then are left out (named under
    the table), no line is over 100 columns, and --wide still shows every column."""
    from edgekit.results.table import GATE_COLUMNS, print_gate_records

    long_name = "mobilenet_v3_small_finetuned_on_colour_fashion"
    records = [dict(r, model=long_name, artifact_name="model.int8.onnx", runtime="onnxruntime")
               for r in _records()[:2]]
    narrow, wide = _narrow_and_wide(capsys, lambda: print_gate_records(records, title="validate"))
    lines = narrow.splitlines()
    assert max(len(line) for line in lines) <= 100, narrow
    assert sum(long_name in line for line in lines) == 2, narrow  # one line per record, whole
    assert sum("model.int8.onnx" in line for line in lines) == 2, narrow
    header = next(line for line in lines if "artifact" in line)
    assert "gate" in header and "Δ top-1" in narrow and "PASS" in narrow
    assert "batch" not in header and "precision" not in header
    assert re.search(r"\(precision, .*batch, .*: --wide shows", " ".join(lines)), narrow
    wide_header = wide.split("┡")[0]  # the header's lines
    assert all(c.split()[0][:5] in wide_header for c in GATE_COLUMNS)  # every column
    assert sum(long_name in line for line in wide.splitlines()) == 2

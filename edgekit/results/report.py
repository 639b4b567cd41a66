"""The report: one self-contained HTML file (plots as base64 PNGs, inline CSS, no scripts, no
network) and a Markdown table for READMEs and CI.

Per device: a latency-vs-accuracy scatter with the Pareto front marked (lower latency and higher
top-1 both better), the latency distributions from every stored sample (box plots: box 25–75%,
whiskers 1–99%), a table with the gate verdict per record, and the environment it was measured in.
The newest record per (model, runtime, format, precision, batch, artifact) is shown.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from collections import defaultdict
from pathlib import Path
from typing import Any, TypedDict

from edgekit import __version__
from edgekit.io.files import atomic_write_text
from edgekit.results.record import ResultRecord
from edgekit.results.store import is_layer_profile, latest
from edgekit.results.table import GATE_COLUMNS, WINNER, gate_markdown, gate_row, gate_verdict


def runtime_styles() -> dict[str, tuple[str, str]]:
    """{runtime: (colour, short name)} as each Runner declares them (`colour`, `short`), in the
    order of the table of kinds: a new runtime is drawn with no edit here."""
    from edgekit import kinds
    from edgekit.runtimes.base import RUNNERS, runner_names

    order = kinds.runtimes()
    names = sorted(runner_names(), key=lambda n: order.index(n) if n in order else len(order))
    return {n: (RUNNERS[n].colour, RUNNERS[n].short) for n in names}
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "s", "int8": "^", "int4": "v"}


def _label(r: ResultRecord) -> str:
    name = r.get("artifact_name") or Path(str(r.get("artifact", ""))).name
    return f"{r.get('model', '?')}/{name} [{r.get('runtime')}]"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and top-1 (higher),
    sorted by latency."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any((lo <= lat and ao >= acc) and (lo < lat or ao > acc)
                        for j, (lo, ao) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def scatter_plot(records: list[ResultRecord], device: str) -> str | None:
    """Latency (p50 at the smallest batch) against top-1; the Pareto front joined and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if (r.get("accuracy") or {}).get("top1") is not None
            and (r.get("latency") or {}).get("p50_ms") is not None]
    if not rows:
        return None
    smallest: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r.get("model"), _label(r))
        if key not in smallest or r.get("batch", 1) < smallest[key].get("batch", 1):
            smallest[key] = r
    rows = list(smallest.values())
    points = [(r["latency"]["p50_ms"], 100 * r["accuracy"]["top1"]) for r in rows]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    by_x = sorted(range(len(points)), key=lambda i: points[i][0])
    offset = {i: (6, 5) if rank % 2 == 0 else (6, -11) for rank, i in enumerate(by_x)}
    styles = runtime_styles()
    for i, (r, (x, y)) in enumerate(zip(rows, points, strict=True)):
        colour, short = styles.get(r.get("runtime"), ("#7f7f7f", r.get("runtime")))
        ax.scatter(x, y, s=70, color=colour,
                   marker=PRECISION_MARKERS.get(r.get("precision"), "o"), zorder=3,
                   edgecolors="none", alpha=0.9)
        stem = Path(str(r.get("artifact_name") or r.get("artifact", ""))).stem
        ax.annotate(f"{r.get('model')}/{stem} {short}", (x, y),
                    textcoords="offset points",
                    xytext=offset[i], fontsize=7.5, color="#333")
    fx, fy = [points[i][0] for i in front], [points[i][1] for i in front]
    ax.step(fx, fy, where="post", color="black", lw=1.2, ls="--", zorder=2,
            label="Pareto front")
    ax.scatter(fx, fy, s=170, facecolors="none", edgecolors="black", lw=1.4, zorder=4)
    won = [points[i] for i, r in enumerate(rows) if r.get("optimize_winner")]  # edgekit optimize
    if won:
        ax.scatter([p[0] for p in won], [p[1] for p in won], s=420, marker="*", color="#f2b701",
                   edgecolors="black", lw=0.8, zorder=5, label="chosen")
    xs = [p[0] for p in points]
    if max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (smallest batch measured)")
    ax.set_ylabel("top-1, % (on the target runtime)")
    ax.set_title(f"{device}: latency vs accuracy")
    ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], ls="none", marker="o", color=c, label=n)
               for n, (c, _) in styles.items() if any(r.get("runtime") == n for r in rows)]
    handles += [plt.Line2D([], [], ls="none", marker=m, color="#555", label=p)
                for p, m in PRECISION_MARKERS.items() if any(r.get("precision") == p for r in rows)]
    handles.append(plt.Line2D([], [], ls="--", color="black", label="Pareto front"))
    if won:
        handles.append(plt.Line2D([], [], ls="none", marker="*", color="#f2b701", markersize=12,
                                  label="chosen by edgekit optimize"))
    ax.legend(handles=handles, fontsize=7.5, loc="best")
    return _png(fig)


def latency_plot(records: list[ResultRecord], device: str) -> str | None:
    """Box plots of every latency sample per record: box 25–75%, median line, whiskers 1–99%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if (r.get("latency") or {}).get("samples_ms")]
    if not rows:
        return None
    first_seen = {m: i for i, m in reversed(list(enumerate(r.get("model") for r in rows)))}
    rows = sorted(rows, key=lambda r: (first_seen[r.get("model")], r.get("batch", 1)))
    data = [r["latency"]["samples_ms"] for r in rows]
    labels = [f"{_label(r)} b{r.get('batch')}" for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(rows)))
    major, minor = (int(v) for v in matplotlib.__version__.split(".")[:2])
    horizontal = {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}
    box = ax.boxplot(data, **horizontal, whis=(1, 99), showfliers=False, patch_artist=True,
                     widths=0.6, medianprops={"color": "black"})
    styles = runtime_styles()
    for patch, r in zip(box["boxes"], rows, strict=True):
        patch.set_facecolor(styles.get(r.get("runtime"), ("#7f7f7f",))[0])
        patch.set_alpha(0.55)
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7.5)
    ax.invert_yaxis()  # read top-down in the table's order
    lo = min(min(d) for d in data)
    hi = max(max(d) for d in data)
    if hi / max(lo, 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("latency per query, ms (every sample; whiskers 1st–99th percentile)")
    ax.set_title(f"{device}: latency distributions")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;
margin-top:36px}.meta{color:#666;font-size:13px}table{border-collapse:collapse;font-size:12.5px;
margin:12px 0;width:100%}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}td.pass{color:#0a7d25;font-weight:600}
td.fail{color:#c0172b;font-weight:700}tr.fail{background:#fff3f3}.plots{display:flex;flex-wrap:wrap;
gap:12px}.plots img{max-width:100%;border:1px solid #eee}dl.env{display:grid;
grid-template-columns:max-content auto;gap:2px 14px;font-size:12.5px}dl.env dt{font-weight:600}
dl.env dd{margin:0}.note{font-size:12px;color:#555}code{background:#f5f5f5;padding:0 3px}
"""

LEFT = {"model", "artifact", "precision", "runtime"}


def _table(records: list[ResultRecord]) -> str:
    head = "".join(f'<th class="{"l" if c in LEFT else ""}">{html.escape(c)}</th>'
                   for c in GATE_COLUMNS) + '<th class="l">why</th>'
    body = []
    for r in records:
        cells = gate_row(r)
        verdict = gate_verdict(cells[-1])
        tds = []
        for col, value in zip(GATE_COLUMNS, cells, strict=True):
            cls = "l" if col in LEFT else ""
            if col == "gate":
                cls = {"PASS": "pass", "FAIL": "fail"}.get(gate_verdict(value), "")
            tds.append(f'<td class="{cls}">{html.escape(value)}</td>')
        reasons = "; ".join((r.get("gate") or {}).get("reasons") or [])
        validity = (r.get("latency") or {}).get("validity") or {}
        if validity.get("reasons"):
            reasons = "; ".join(filter(None, [reasons, "latency: " + "; ".join(validity["reasons"])]))
        lat = r.get("latency") or {}
        if lat.get("disturbed") or (r.get("speedup_vs") or {}).get("disturbed"):
            why = lat.get("disturbed_reasons") if lat.get("disturbed") else \
                r["speedup_vs"]["disturbed"]
            reasons = "; ".join(filter(None, [reasons, "disturbed: " + "; ".join(why)]))
        tds.append(f'<td class="l">{html.escape(reasons)}</td>')
        body.append(f'<tr class="{"fail" if verdict == "FAIL" else ""}">{"".join(tds)}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


PROFILE_TOP = 20


def _profile_table(record: ResultRecord) -> str:
    """One per-layer profile: the slowest layers, their module, the precision that ran and a
    bar for their share of the total."""
    from edgekit.results.table import PROFILE_COLUMNS, profile_rows, profile_title

    head = "".join(f'<th class="{"l" if i < 5 else ""}">{html.escape(c)}</th>'
                   for i, c in enumerate(PROFILE_COLUMNS))
    body = []
    layers = (record.get("profile") or {}).get("layers") or []
    for row, layer in zip(profile_rows(record, PROFILE_TOP), layers, strict=False):
        bar = (f'<span style="display:inline-block;background:#1f77b4;height:9px;width:'
               f'{max(1, round(120 * layer["share"]))}px"></span> ')
        cells = [f'<td class="l">{html.escape(c)}</td>' for c in row[:5]]
        cells += [f"<td>{html.escape(row[5])}</td>", f"<td>{bar}{html.escape(row[6])}</td>"]
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = len(layers) - PROFILE_TOP
    note = f'<p class="note">{more} faster layers not shown.</p>' if more > 0 else ""
    return (f"<h3>{html.escape(profile_title(record))}</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}")


def _environment(records: list[ResultRecord]) -> str:
    env = (records[-1].get("environment") or {}) if records else {}
    cpu = env.get("cpu") or {}
    flags = ", ".join(f for f, on in (cpu.get("flags") or {}).items() if on) or "none of note"
    items = [("host", env.get("hostname")), ("OS", env.get("os")), ("Python", env.get("python")),
             ("CPU", cpu.get("model")),
             ("cores", f"{cpu.get('usable_cores')} usable of {cpu.get('logical_cores')} logical"),
             ("ISA", f"{flags} (VNNI: {'yes' if cpu.get('vnni') else 'no'})")]
    for gpu in env.get("gpus") or []:
        items.append(("GPU", f"{gpu.get('name')}, driver {gpu.get('driver')}, compute "
                      f"capability {gpu.get('compute_capability')}, {gpu.get('memory')}"))
    for key, value in (env.get("jetson") or {}).items():
        items.append((f"Jetson {key}", str(value)[:300]))
    versions = env.get("versions") or {}
    items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    runtimes = {}
    for r in records:
        details = r.get("runtime_details") or {}
        runtimes[r.get("runtime")] = ", ".join(f"{k}={v}" for k, v in details.items()
                                                if k != "runtime" and v not in (None, [], ""))
    scopes = {r.get("runtime"): (r.get("latency") or {}).get("timing_scope") for r in records}
    for name, text in runtimes.items():
        items.append((f"{name}", text))
        if scopes.get(name):
            items.append((f"timed ({name})", scopes[name]))
    protocols = {str((r.get("latency") or {}).get("protocol")) for r in records}
    if len(protocols) == 1:
        items.append(("protocol", protocols.pop()))
    rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>"
                   for k, v in items if v not in (None, ""))
    return f'<dl class="env">{rows}</dl>'


def _budget_text(budget: dict[str, Any] | None) -> str:
    from edgekit.results.validation import describe_budget

    try:
        return describe_budget(budget)
    except (TypeError, ValueError, AttributeError):
        return str(budget)


def by_device(records: list[ResultRecord]) -> dict[str, list[ResultRecord]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[str(r.get("device"))].append(r)
    return dict(groups)


# (issue 25) what marks a report as edgekit's: `edgekit report -o FILE` replaces only a file that
# carries it (io/outputs.check_output_file), never the user's own page or a checkpoint.
HTML_MARKER = '<meta name="generator" content="edgekit">'
MARKDOWN_MARKER = "<!-- written by edgekit report -->"
_OLD_HTML_START = "<!doctype html><html lang=en><head><meta charset=utf-8><title>"


def written_by_edgekit(path: str | Path) -> bool:
    """Whether the report file `path` carries edgekit's marker (an HTML report of an earlier
    edgekit: its exact opening and its `by edgekit` line)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16).decode("utf-8", errors="replace")
    except OSError:
        return False
    if head.startswith(MARKDOWN_MARKER):
        return True
    opening = head[:200]
    return (opening.startswith("<!doctype html>") and HTML_MARKER in opening) or \
        (head.startswith(_OLD_HTML_START) and " by edgekit " in head)


class LeftOut(TypedDict):
    """A candidate a search did not measure to the end, as the report lists it: where it
    stopped and why (edgekit optimize)."""

    name: str
    status: str
    why: str


class NotMeasured(TypedDict, total=False):
    """What a device's search left out (edgekit optimize): candidates not measured to the end,
    knobs dropped from its space ({knob, value, why}), and notes."""

    candidates: list[LeftOut]
    dropped: list[dict[str, Any]]
    notes: list[str]


class WrittenReport(TypedDict, total=False):
    """What write_report wrote: the HTML (and Markdown) file and how many records it shows."""

    html: str
    records: int
    shown: int
    markdown: str


def _not_measured_html(extra: NotMeasured | None) -> str:
    """What a search left out, per device (edgekit optimize): the knobs dropped from its space
    before any candidate was built, the candidates that failed, were skipped or were not carried
    to the end (each with its reason), and notes such as the layers round_to kept whole."""
    if not extra:
        return ""
    parts = []
    dropped = extra.get("dropped") or []
    if dropped:
        parts.append(_text_table(f"Dropped from the search space ({len(dropped)})",
                                 ("knob", "value", "why"),
                                 [(None, (d["knob"], d["value"], d["why"])) for d in dropped]))
    candidates = extra.get("candidates") or []
    if candidates:
        parts.append(_text_table(
            f"Candidates not measured to the end ({len(candidates)})", ("candidate", "status", "why"),
            [("fail" if c.get("status") == "failed" else "",
              (c["name"], c.get("status"), c.get("why") or "")) for c in candidates]))
    notes = extra.get("notes") or []
    if notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                     + "</ul>")
    return "".join(parts)


def _text_table(title: str, headers: tuple[str, ...],
                rows: list[tuple[str | None, tuple[Any, ...]]]) -> str:
    """A heading and a table of left-aligned, escaped text cells; each row is (its class, or
    None for none, its cells)."""
    head = "".join(f'<th class="l">{h}</th>' for h in headers)
    body = "".join(("<tr>" if cls is None else f'<tr class="{cls}">')
                   + "".join(f'<td class="l">{html.escape(str(cell))}</td>' for cell in cells)
                   + "</tr>" for cls, cells in rows)
    return (f"<h3>{title}</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _not_measured_markdown(extra: NotMeasured | None) -> str:
    if not extra:
        return ""
    lines = []
    for d in extra.get("dropped") or []:
        lines.append(f"- dropped from the space: {d['knob']} {d['value']}: {d['why']}")
    for c in extra.get("candidates") or []:
        lines.append(f"- {c['name']}: {c.get('status')}: {c.get('why') or ''}")
    lines += [f"- {n}" for n in extra.get("notes") or []]
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def render_html(records: list[ResultRecord], *, title: str = "edgekit report",
                source: str = "", not_measured: dict[str, NotMeasured] | None = None) -> str:
    """The whole report as one HTML string (records need `latency.samples_ms` for the boxes).
    `not_measured` (edgekit optimize), per device: `dropped` knobs, `candidates` that failed or
    were skipped and `notes`, each with its reason, listed under the device's table."""
    shown = latest(records)
    profiles = [r for r in shown if is_layer_profile(r)]
    shown = [r for r in shown if not is_layer_profile(r)]
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>{HTML_MARKER}"
             f"<title>{html.escape(title)}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">{len(shown)} results ({len(records)} records stored) from '
             f"{html.escape(source)} · generated {now} by edgekit {__version__}</p>"]
    not_measured = dict(not_measured or {})
    if not shown and not profiles and not not_measured:
        parts.append("<p>No records yet: run <code>edgekit validate OUT/ --store FILE</code>.</p>")
    for device, rows in by_device(shown).items():
        budgets = sorted({_budget_text((r.get("gate") or {}).get("budget")) for r in rows
                          if r.get("gate")})
        verdicts = [r["gate"]["passed"] for r in rows if r.get("gate")]
        summary = (f"{sum(verdicts)} of {len(verdicts)} pass the budget" if verdicts
                   else "no budget applied")
        parts.append(f'<section class="device" id="device-{html.escape(device)}">'
                     f"<h2>{html.escape(device)}{_emulated_note(rows)}</h2>"
                     f'<p class="meta">{html.escape(summary)}'
                     + (f" · budget {html.escape(', '.join(budgets))}" if budgets else "")
                     + "</p>")
        plots = [p for p in (scatter_plot(rows, device), latency_plot(rows, device)) if p]
        if plots:
            parts.append('<div class="plots">' + "".join(
                f'<img alt="plot" src="{p}">' for p in plots) + "</div>")
        parts.append(_table(rows))
        parts.append('<p class="note">Δ top-1 in points against the fp32 reference, measured on '
                     "the same eval set; agree = top-1 agreement with the reference; speed-up = "
                     "p50 of the fp32 original over the artifact's, same runtime and batch, "
                     f"measured in the same run; {WINNER} = the artifact that decides (the "
                     "fastest within the budget); † = too few samples to claim p99 at 99% "
                     "confidence (early-stopping rule); J/query = energy per query over the "
                     "timed window ± its uncertainty, where the device measures power; machine = "
                     "what other work, clocks and throttling did while timed (quiet, DISTURBED, "
                     "? when it could not be judged), and ⚠ marks every number and ratio "
                     "measured while it was disturbed.</p>")
        parts.append(_not_measured_html(not_measured.pop(device, None)))
        parts.append("<h3>Environment</h3>" + _environment(rows) + "</section>")
    for device, extra in not_measured.items():  # a device with nothing measured at all
        parts.append(f'<section class="device" id="device-{html.escape(device)}">'
                     f"<h2>{html.escape(device)}</h2><p class=\"meta\">nothing measured</p>"
                     + _not_measured_html(extra) + "</section>")
    for device, rows in by_device(profiles).items():
        parts.append(f'<section class="profiles" id="profiles-{html.escape(device)}">'
                     f"<h2>Per-layer time on {html.escape(device)}</h2>"
                     + "".join(_profile_table(r) for r in rows) + "</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _emulated_note(rows: list[dict[str, Any]]) -> str:
    """(issue 20) the heading's mark for a device measured under an emulator."""
    return (" — emulated: top-1 is real, latency is the emulator's (not representative)"
            if any(r.get("emulated") for r in rows) else "")


def render_markdown(records: list[ResultRecord],
                    not_measured: dict[str, NotMeasured] | None = None) -> str:
    shown = [r for r in latest(records) if not is_layer_profile(r)]
    out = []
    not_measured = dict(not_measured or {})
    for device, rows in by_device(shown).items():
        cpu = ((rows[-1].get("environment") or {}).get("cpu") or {}).get("model", "")
        out.append(f"### {device}" + (f" ({cpu})" if cpu else "") + _emulated_note(rows)
                   + "\n\n" + gate_markdown(rows)
                   + _not_measured_markdown(not_measured.pop(device, None)))
    for device, extra in not_measured.items():
        out.append(f"### {device}\n\nnothing measured\n" + _not_measured_markdown(extra))
    return "\n".join(out) if out else "No records.\n"


def write_report(records: list[ResultRecord], html_path: str | Path, *,
                 markdown_path: str | Path | None = None, title: str = "edgekit report",
                 source: str = "", not_measured: dict[str, NotMeasured] | None = None
                 ) -> WrittenReport:
    """Write the HTML (and Markdown) atomically; returns what was written."""
    text = render_html(records, title=title, source=source, not_measured=not_measured)
    atomic_write_text(html_path, text)
    out: WrittenReport = {"html": str(html_path), "records": len(records),
                          "shown": len(latest(records))}
    if markdown_path:
        atomic_write_text(markdown_path,
                          f"{MARKDOWN_MARKER}\n{render_markdown(records, not_measured)}")
        out["markdown"] = str(markdown_path)
    return out

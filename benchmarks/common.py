"""Helpers shared by the benchmark scripts: where they read and write, the provenance of the
checkpoints they measure, writing results, timing anchors side by side.

Quick mode (`benchmarks/run.py --quick`, or BENCH_QUICK=1) proves a script works in a minute or
two: tiny protocols, few images, one epoch. It writes under .cache/bench-quick/ (results, zoo
checkpoints and a copy of the README), never over the real results or the README."""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
QUICK_DIR = ROOT / ".cache" / "bench-quick"
RESULTS = Path(os.environ.get("BENCH_RESULTS")
               or (QUICK_DIR / "results" if QUICK else ROOT / "benchmarks" / "results"))
# The zoo checkpoints every zoo-model benchmark measures; benchmarks/bench_zoo.py writes them.
ZOO = Path(os.environ.get("BENCH_ZOO") or (QUICK_DIR / "zoo" if QUICK else ROOT / ".cache" / "zoo"))
CALIB = ROOT / "calibration" / "fashion-mnist-512.npz"
RANDOM_WEIGHTS = {"weights": "random init (torch.manual_seed(0)); latency only, no checkpoint"}


# (issue 18) Every timing this process made, after the rerun rule: whether the machine was
# disturbed while it ran. write_results puts the tally in each results file and, when any timing
# stayed disturbed, a ⚠ line over its tables (and benchmarks/run.py over its README sections):
# no ratio from a disturbed run is printed without the mark.
TIMED: list[dict[str, Any]] = []


def work_dir(name: str) -> Path:
    """Scratch folder of one benchmark (.cache/bench-NAME, or under .cache/bench-quick/)."""
    return (QUICK_DIR / f"bench-{name}") if QUICK else ROOT / ".cache" / f"bench-{name}"


def quick_protocol():
    """The protocol of every benchmark in quick mode: a handful of queries, no claims."""
    from edgekit.runtimes.latency import LatencyProtocol

    return LatencyProtocol(warmup_count=2, warmup_seconds=0.0, min_queries=5,
                           min_seconds=0.01, max_seconds=1.0)


def train_source() -> str:
    """What the benchmarks train and distill on: fashion-mnist:train, or in quick mode a
    stratified 2,000-image .npz of it (written once under .cache/bench-quick/)."""
    if not QUICK:
        return "fashion-mnist:train"
    path = QUICK_DIR / "train-2000.npz"
    if not path.is_file():
        import numpy as np

        from edgekit.data import load_raw
        from edgekit.data.dataset import stratified_indices

        raw = load_raw("fashion-mnist:train")
        keep = stratified_indices(raw.labels, 2000, 0)
        QUICK_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=raw.images[keep], y=np.asarray(raw.labels)[keep])
    return str(path)


def checkpoint_provenance(path: Path) -> dict[str, Any]:
    """What a results file records of a checkpoint it measured: its path, sha256 and the
    TrainConfig it was trained with (from the checkpoint's own metadata; None when the file
    records none, e.g. a checkpoint from an older edgekit)."""
    import torch

    from edgekit.io.files import sha256_file

    payload = torch.load(path, map_location="cpu", weights_only=True)
    meta = payload.get("meta", {}) if isinstance(payload, dict) else {}
    try:
        shown = str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        shown = str(path)
    return {"path": shown, "sha256": sha256_file(path), "train_config": meta.get("train_config"),
            "test_top1": meta.get("test_top1"), "test_images": meta.get("test_images")}


def zoo_checkpoint(name: str) -> Path:
    """ZOO/NAME.pt, or an error that says which script writes it."""
    path = ZOO / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `benchmarks/run.py zoo` first "
                                f"(or `edgekit zoo train {name} -o {path}`)")
    return path


def write_results(name: str, data: dict[str, Any], markdown: str, *,
                  checkpoints: dict[str, dict[str, Any]]) -> Path:
    """benchmarks/results/NAME.json and NAME.md. `checkpoints` says what was measured, per
    model: checkpoint_provenance() of a trained checkpoint (sha256, TrainConfig), or
    RANDOM_WEIGHTS; every results file has it."""
    from edgekit.io.files import atomic_write_text
    from edgekit.validate.env import capture_environment

    RESULTS.mkdir(parents=True, exist_ok=True)
    interference = interference_summary()
    payload = {"benchmark": name,
               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "quick": QUICK, "environment": capture_environment(),
               "checkpoints": checkpoints, "interference": interference, **data}
    markdown = disturbed_banner(interference) + markdown
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(RESULTS / f"{name}.md", markdown)
    print(markdown, flush=True)
    return RESULTS / f"{name}.md"


def edgekit_compress(checkpoint: Path, flags: list[str], out: Path, *,
                     eval_limit: int | None = None) -> dict[str, Any]:
    """`edgekit compress CHECKPOINT FLAGS --eval fashion-mnist:test -o OUT --json` (in quick
    mode on a stratified sample of the test split): its JSON report."""
    import shutil
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    if QUICK and eval_limit is None:
        eval_limit = 300
    cmd = [sys.executable, "-m", "edgekit", "compress", str(checkpoint), *flags,
           "--eval", "fashion-mnist:test", "-o", str(out), "--json",
           *(["--eval-limit", str(eval_limit)] if eval_limit else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode not in (0, 1):  # 1: a failed budget, still a report
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-2:]}")
    report = json.loads(proc.stdout)
    tally_latency(report, f"edgekit compress {checkpoint.name}")
    return report


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


LATENCY_FIELDS = ("p50_ms", "p90_ms", "p99_ms", "min_ms", "count")


def time_alternating(runners: dict[str, Any], x: Any, protocol: Any, rounds: int = 3,
                     shuffle_seed: int | None = None) -> dict[str, dict[str, Any]]:
    """The benchmarks' alternating timing (edgekit.runtimes.speedup.alternate): `rounds` rounds
    of the whole protocol each (a, b, c, a, b, c, ...; reshuffled each round when `shuffle_seed`
    is given), every round under the rerun rule and tallied (`timed`). Per runner:
    {p50_ms, p90_ms, p99_ms, min_ms, count} of all its samples and the rounds' verdict."""
    from edgekit.runtimes.speedup import alternate

    return alternate(runners, x, protocol, rounds, shuffle_seed, whole_protocol=True,
                     measure=lambda label, runner, x, p: timed(runner, x, p, label),
                     fields=LATENCY_FIELDS)


def timed(runner: Any, x: Any, protocol: Any, label: str = "") -> dict[str, Any]:
    """runner.measure_latency under the rerun rule (a disturbed run is measured again, up to the
    protocol's interference.max_reruns), tallied in TIMED."""
    from edgekit.runtimes.interference import measure_undisturbed

    stats = measure_undisturbed(runner, x, protocol)
    TIMED.append({"label": label, "disturbed": stats.get("disturbed"),
                  "reasons": stats.get("disturbed_reasons", []), "reruns": stats.get("reruns", 0)})
    return stats


def tally_latency(report: Any, label: str) -> None:
    """Tally every latency section (a dict with p50_ms and a `disturbed` verdict) found in a
    JSON report of an edgekit command the benchmark ran in a subprocess."""
    if isinstance(report, dict):
        if "p50_ms" in report and "disturbed" in report:
            TIMED.append({"label": label, "disturbed": report["disturbed"],
                          "reasons": report.get("disturbed_reasons", []),
                          "reruns": report.get("reruns", 0)})
            return
        for value in report.values():
            tally_latency(value, label)
    elif isinstance(report, list):
        for value in report:
            tally_latency(value, label)


def interference_summary(entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """How many timed runs of this benchmark stayed disturbed after reruns (and which)."""
    entries = TIMED if entries is None else entries
    disturbed = [e for e in entries if e["disturbed"] is True]
    judged = [e for e in entries if e["disturbed"] is not None]
    return {"timed_runs": len(entries), "judged": len(judged), "disturbed": len(disturbed),
            "disturbed_share": round(len(disturbed) / len(judged), 4) if judged else None,
            "reruns": sum(e.get("reruns", 0) for e in entries),
            "disturbed_runs": [{"label": e["label"], "reasons": e["reasons"]} for e in disturbed]}


def disturbed_banner(summary: dict[str, Any] | None) -> str:
    """The ⚠ line over a results file or README section when any of its timings stayed
    disturbed after reruns (empty otherwise)."""
    if not summary or not summary.get("disturbed"):
        return ""
    labels = sorted({e["label"] for e in summary.get("disturbed_runs", []) if e["label"]})
    return (f"> ⚠ {summary['disturbed']} of {summary['judged']} timed runs stayed disturbed after "
            f"{summary['reruns']} reruns (other work on the machine, a clock drop or throttling"
            + (f": {', '.join(labels[:6])}" if labels else "") + "); every time and ratio below "
            "that comes from them is marked by this line. Rerun on a quiet machine.\n\n")

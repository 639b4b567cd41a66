"""The README's ResNet-18 search before and after issue 28, on this machine (issue 28's goal 2):
the same command, the same space, the same checkpoint and the same budget rule, run once by the
code of BEFORE_COMMIT (the last commit before issue 28's work: the teacher recomputed at every
step, every candidate distilled from the original, no promotion by budget, no teacher cache, no
measured training layout) and once by today's code.

- Model: resnet18_small trained by benchmarks/bench_optimize.py (its cached checkpoint,
  `.cache/bench-bench-optimize/resnet18_small-2ep.pt`; trained there when missing).
- Command, both modes: `edgekit optimize MODEL --space SPACE --train fashion-mnist:train --eval
  fashion-mnist:test --calib calibration/fashion-mnist-512.npz --max-drop 1.0 --time-budget 60m
  --device bench-cpu --json` where SPACE is BEFORE_COMMIT's README search (prune 0/0.25/0.5, dwsep
  off/auto, fp32/int8 on ONNX Runtime and OpenVINO, 20 trials, short rung 1 epoch × 6,000 images,
  full rung 1 epoch) and bench-cpu is local-cpu with 2 threads and bench_optimize's protocol.
  Each search starts from nothing: its own output folder and an empty edgekit cache (today's
  code measures its training layout and teacher engine once on this machine: that is in its
  seconds).
- before: BEFORE_COMMIT checked out into a git worktree (WORK/before-src) and run from there
  (PYTHONPATH and working folder), in this environment's Python and packages.
- after: this checkout.
- Then NNCF's default int8 of the original on OpenVINO (`edgekit compress --int8 --for openvino`,
  the anchor of the README's optimize-resnet section) and both winners are timed in alternating
  rounds (common.time_alternating), so each winner's ratio to the anchor comes from one timing.

Per mode: wall seconds of the optimize subprocess and their split, summed over every trial of
the study (OUT/optuna.db: a promoted candidate's short and full trials both count) with
bench_optimize.cost_split (build, teacher, distillation, measurement, other; BEFORE_COMMIT
records no teacher seconds, so its teacher's forwards are inside its distillation, and no
baseline or fitting seconds, so those are in its "other"), the distilled models per rung
(bench_search_cost.distillations), the candidates per rung, the winner.

Run: `.venv/bin/python benchmarks/run.py resnet_cost` on a quiet machine (two searches of up to
the 60-minute budget each, plus the anchor: 6,503 s on the 2-core AMD EPYC of 2026-12-07). BENCH_RESNET_COST_MODES
runs only some modes (before,after); a mode not run is read back from its last run in
WORK/<mode>.json when that run searched the same checkpoint, space and budget on a machine with
the same CPU model (its date is in the results), else the script stops and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from bench_optimize import (
    CALIB,
    EVAL_LIMIT,
    THREADS,
    TINY,
    cost_split,
    device_file,
    nncf_anchor,
    protocol,
    resnet_checkpoint,
    tally_search,
    time_against_anchor,
)
from bench_search_cost import distillations, trial_costs
from common import ROOT, checkpoint_provenance, md_table, work_dir, write_results

BEFORE_COMMIT = "b0455dea454c46e3e153e8702ac03c66ae553fa0"  # 2026-11-28, before issue 28
BUDGET = "3m" if TINY else "60m"  # BEFORE_COMMIT's RESNET_BUDGET
SPACE: dict[str, Any] = {  # BEFORE_COMMIT's RESNET_SPACE (benchmarks/bench_optimize.py)
    "prune": [0, 0.25, 0.5], "dwsep": ["off", "auto"], "precisions": ["fp32", "int8"],
    "int8_fallback": ["none"], "trials": 20,
    "distill": {"short_epochs": 1, "short_limit": 6000, "full_epochs": 1}}
if TINY:
    SPACE = {"prune": [0, 0.5], "dwsep": ["off"], "precisions": ["fp32", "int8"],
             "int8_fallback": ["none"], "trials": 5, "calib_size": 32,
             "distill": {"short_limit": 200, "full_limit": 400}}
MODES = ("before", "after")
RUN_MODES = tuple(m for m in os.environ.get("BENCH_RESNET_COST_MODES", ",".join(MODES)).split(",")
                  if m)
WORK = work_dir("resnet-cost-tiny" if TINY else "resnet-cost")
GOAL_WALL = 0.25  # after ÷ before
GOAL_RATIO = 0.5  # winner ÷ anchor
GOAL_DROP = 1.0  # points


def source(mode: str) -> Path:
    """The code a mode runs: BEFORE_COMMIT's worktree, or this checkout."""
    if mode == "after":
        return ROOT
    tree = WORK / "before-src"
    if not (tree / "edgekit").is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), BEFORE_COMMIT],
                       cwd=ROOT, check=True, capture_output=True)
    head = _commit(tree)
    if head != BEFORE_COMMIT:
        raise RuntimeError(f"{tree} is at {head}, not {BEFORE_COMMIT}: delete it and rerun")
    return tree


def search(mode: str, checkpoint: Path, device: str) -> dict[str, Any]:
    """One fresh search by `mode`'s code: wall seconds, split, rungs, winner."""
    folder = WORK / mode
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "cache").mkdir(parents=True)
    space_file = folder / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    out = folder / "out"
    code = source(mode)
    args = [sys.executable, "-m", "edgekit", "optimize", str(checkpoint), "--space",
            str(space_file), "--train", "fashion-mnist:train", "--eval", "fashion-mnist:test",
            "--calib", CALIB, "--max-drop", "1.0", "--time-budget", BUDGET, "--device", device,
            "-o", str(out), "--json"]
    if EVAL_LIMIT:
        args += ["--eval-limit", str(EVAL_LIMIT)]
    env = {**os.environ, "EDGEKIT_CACHE": str(folder / "cache"), "PYTHONPATH": str(code)}
    env.pop("EDGEKIT_TEACHER_CACHE_MB", None)
    print(f"   {mode}: edgekit optimize from {code} (up to {BUDGET})", flush=True)
    began = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=False, cwd=code, env=env)
    seconds = time.perf_counter() - began
    (folder / "stderr.log").write_text(proc.stderr)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{mode}: {' '.join(args)} failed: "
                           f"{proc.stderr.strip().splitlines()[-3:]}")
    summary = json.loads(proc.stdout)
    tally_search(summary, f"edgekit optimize ResNet-18 ({mode})")
    result = next(iter(summary["devices"].values()))
    won = result.get("winner")
    costs = trial_costs(out)
    record = {"mode": mode, "code": _commit(code),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 1),
              "candidates": len(result["candidates"]), "why": result["why"],
              "reference_top1": result["reference_top1"],
              "fp32_ms": fp32_ms(result),
              "split": cost_split({"candidates": [{"cost": c} for c in costs]}, seconds,
                                  summary),
              "trial_runs": len(costs),
              # BEFORE_COMMIT's manifests do not record the distill stage this reads
              "distillations": distillations(out) if mode == "after" else None,
              "rungs": rungs(result),
              "costs": [{"name": c["name"], "status": c.get("status"), "cost": c.get("cost")}
                        for c in result["candidates"]],
              "winner": None if not won else {
                  "name": won["name"], "target": won["params"]["target"],
                  "artifact": won["artifact"], "p50_ms": won["p50_ms"],
                  "top1": won.get("top1"), "drop_points": won["drop_points"]},
              "key": _key(checkpoint)}
    (folder.parent / f"{mode}.json").write_text(json.dumps(record, indent=1))
    print(f"   {mode}: {record['seconds']} s, winner "
          f"{won['name'] if won else 'none'}", flush=True)
    return record


def fp32_ms(result: dict[str, Any]) -> dict[str, float]:
    """The fp32 original's p50 per runtime, as the search measured it: how fast the machine
    was during that search (a VM's speed drifts between runs hours apart)."""
    return {runtime: round(b["p50_ms"], 3) for runtime, b in
            sorted((result.get("baselines") or {}).items()) if b.get("p50_ms")}


def rungs(result: dict[str, Any]) -> dict[str, int]:
    """Candidates per rung: today's records name it (original/short/full); BEFORE_COMMIT's do
    not, so there it is the original or the candidate's status (short, full, failed, ...)."""
    counts: dict[str, int] = {}
    for c in result["candidates"]:
        rung = c.get("rung") or ("original" if c["name"].startswith("original ")
                                 else str(c.get("status")))
        counts[rung] = counts.get(rung, 0) + 1
    return counts


def winner_seconds(mode: str, record: dict[str, Any]) -> float | None:
    """Seconds from the search's start until its winner's trial finished (OUT/optuna.db's
    datetime_complete, local time, against the record's end time less its wall seconds)."""
    import sqlite3
    from contextlib import closing
    from datetime import datetime

    out = WORK / mode / "out"
    summary = json.loads((out / "optimize.json").read_text())
    won = next(iter(summary["devices"].values())).get("winner")
    if not won or won.get("trial") is None:
        return None
    with closing(sqlite3.connect(f"file:{(out / 'optuna.db').resolve()}?mode=ro",
                                 uri=True)) as db:
        row = db.execute("SELECT datetime_complete FROM trials WHERE number = ?",
                         (won["trial"],)).fetchone()
    if not row or not row[0]:
        return None
    ended = datetime.strptime(record["date"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    done = datetime.fromisoformat(row[0]).astimezone().timestamp()
    return round(done - (ended - record["seconds"]), 1)


def _commit(tree: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, check=True,
                          capture_output=True, text=True).stdout.strip()


def _key(checkpoint: Path) -> dict[str, Any]:
    """What a mode's record must share with this run to stand beside it."""
    from edgekit.io.files import sha256_file
    from edgekit.validate.env import capture_environment

    return {"checkpoint": sha256_file(checkpoint), "space": SPACE, "budget": BUDGET,
            "cpu": capture_environment()["cpu"]["model"], "tiny": TINY}


def read_back(mode: str, checkpoint: Path) -> dict[str, Any]:
    path = WORK / f"{mode}.json"
    record = json.loads(path.read_text()) if path.is_file() else None
    if record is None or record.get("key") != _key(checkpoint):
        raise SystemExit(f"no earlier {mode} run of this checkpoint, space and budget on this "
                         f"CPU in {path}: run with BENCH_RESNET_COST_MODES={mode} (or both)")
    print(f"   {mode}: read back from {path} ({record['date']})", flush=True)
    summary = WORK / mode / "out" / "optimize.json"
    if "fp32_ms" not in record and summary.is_file():  # a record of before fp32_ms was kept
        record["fp32_ms"] = fp32_ms(next(iter(json.loads(summary.read_text())["devices"]
                                              .values())))
    return record


def time_winners(records: dict[str, dict[str, Any]], anchor_path: Path,
                 device: str) -> dict[str, Any]:
    """The anchor and each mode's winner in alternating rounds: p50 ms and ratio to the anchor."""
    return time_against_anchor(anchor_path, {
        mode: (r["winner"]["artifact"], r["winner"]["target"].split(":")[0])
        for mode, r in records.items() if r["winner"]}, device)


# ---------------------------------------------------------------------- README section
SPLIT = ("build_s", "teacher_s", "distill_s", "measure_s", "other_s")


def _row(mode: str, r: dict[str, Any], timing: dict[str, Any]) -> list[Any]:
    split = " / ".join("in distil" if k == "teacher_s" and mode == "before" else
                       f"{r['split'][k]:.0f}" for k in SPLIT)
    rungs = ", ".join(f"{k} {v}" for k, v in sorted(r["rungs"].items()))
    won = r["winner"]
    machine = " / ".join(f"{v:.2f}" for v in (r.get("fp32_ms") or {}).values())
    if not won:
        return [mode, f"`{r['code'][:7]}`", machine, f"{r['seconds']:.0f}", "", split, rungs,
                "none", "", "", ""]
    t = timing.get(mode) or {}
    found = r.get("winner_s")
    return [mode, f"`{r['code'][:7]}`", machine, f"{r['seconds']:.0f}",
            "" if found is None else f"{found:.0f}", split,
            f"{r['candidates']} ({rungs})", won["name"], f"{-won['drop_points']:+.2f}",
            f"{t.get('p50_ms', 0):.3f}", f"{t.get('ratio', 0):.3f}"]


def section(data: dict[str, Any]) -> str:
    """README section resnet-cost (from benchmarks/results/resnet-cost.json)."""
    before, after = data["runs"]["before"], data["runs"]["after"]
    timing = data["timing"]
    wall = after["seconds"] / before["seconds"]
    won = after["winner"] or {}
    ratio = (timing.get("after") or {}).get("ratio")
    met = (wall <= GOAL_WALL and ratio is not None and ratio <= GOAL_RATIO
           and won.get("drop_points", 99) <= GOAL_DROP)
    cpu = (data.get("environment") or {}).get("cpu") or {}
    return (
        f"### The README's ResNet-18 search before and after issue 28 (same command, same "
        f"machine: {cpu.get('model', '?')}, {cpu.get('usable_cores', '?')} cores)\n\n"
        + md_table(["code", "commit", "fp32 original ms (ORT / OpenVINO)", "wall s",
                    "winner found at s",
                    "build / teacher / distil / measure / other s",
                    "candidates (per rung)", "winner", "Δ top-1 pts", "winner p50 ms",
                    "winner ÷ NNCF default int8"],
                   [_row(m, data["runs"][m], timing) for m in MODES])
        + f"\nAfter ÷ before wall time: **{wall:.2f}** (goal ≤ {GOAL_WALL}){_found(before, after)}; "
          "NNCF's default int8 "
          f"of the original on OpenVINO: {timing['anchor_p50_ms']:.3f} ms, timed in "
          f"alternating rounds with both winners; goal (≤ {GOAL_WALL}× the wall time, winner "
          f"≤ {GOAL_RATIO}× the anchor within {GOAL_DROP:g} point): "
          f"{'met' if met else 'not met'}.{_drift(before, after)}\n"
          f"Both: `edgekit optimize` over prune {data['space']['prune']}, dwsep "
          f"{data['space']['dwsep']}, {data['space']['precisions']} on ONNX Runtime and "
          f"OpenVINO, {data['space']['trials']} trials, distillation {data['space']['distill']}, "
          f"`--time-budget {data['budget']}`, `--max-drop 1.0`, batch 1, {data['threads']} "
          "threads, each from an empty output folder and edgekit cache; before: commit "
          f"`{BEFORE_COMMIT[:7]}` run from a worktree ({before['date'][:10]}), after: this "
          f"checkout ({after['date'][:10]}). Checkpoint `{data['checkpoint']}` (sha256 "
          f"`{data['checkpoint_sha256'][:16]}…`). Details: "
          f"[{data['benchmark']}.json](benchmarks/results/{data['benchmark']}.json).\n")


def _drift(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A sentence when the machine's speed differed between the two searches by more than 10 %
    (the fastest fp32 original's p50 that each measured): the wall-time ratio then mixes the
    code's effect with the machine's."""
    was, now = (min((r.get("fp32_ms") or {}).values(), default=None) for r in (before, after))
    if not was or not now or abs(now / was - 1) <= 0.10:
        return ""
    bound = "an upper" if now > was else "a lower"
    return (f" This machine ran the fp32 original {now / was:.2f}× as long during the after "
            f"search ({now:.2f} ms) as during the before one ({was:.2f} ms): the wall-time ratio "
            f"is {bound} bound of the code's effect.")


def _found(before: dict[str, Any], after: dict[str, Any]) -> str:
    if before.get("winner_s") and after.get("winner_s"):
        return (f"; until the winner was measured: {after['winner_s'] / before['winner_s']:.2f}"
                " (each search goes on while its budget pays for candidates that could still "
                "enter the front)")
    return ""


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"resnet-cost": ("resnet-cost", section)}


def main() -> dict[str, Any]:
    from edgekit.validate.env import capture_environment

    checkpoint, _ = resnet_checkpoint()
    device = device_file("bench-cpu-resnet-cost")
    runs = {m: (search(m, checkpoint, device) if m in RUN_MODES else read_back(m, checkpoint))
            for m in MODES}
    for mode, record in runs.items():
        record["winner_s"] = winner_seconds(mode, record)
    timing = time_winners(runs, nncf_anchor(checkpoint, WORK / "anchor"), device)
    provenance = checkpoint_provenance(checkpoint)
    data = {"benchmark": "resnet-cost-tiny" if TINY else "resnet-cost",
            "environment": capture_environment(), "threads": THREADS, "space": SPACE,
            "budget": BUDGET, "before_commit": BEFORE_COMMIT, "protocol": protocol().model_dump(),
            "checkpoint": checkpoint.stem, "checkpoint_sha256": provenance["sha256"],
            "runs": runs, "timing": timing}
    text = section(data)
    if TINY:  # a check that the script works: results in WORK, never the README
        (WORK / "resnet-cost-tiny.json").write_text(json.dumps(data, indent=1))
        print(text)
        return {}
    write_results("resnet-cost", data, text, checkpoints={"resnet18_small": provenance})
    return {"readme": {"resnet-cost": text}}


if __name__ == "__main__":
    main()

"""What `edgekit optimize` costs as the search grows (issue 28's cost curve): wall time against
the number of candidates (5, 10, 20, 40) and against the number of devices (1, 2, 4 simulated),
each point a fresh search (fresh output folder, fresh teacher cache), "before" and "after".

Model: the seed lenet5 (.cache/zoo/lenet5.pt from benchmarks/bench_zoo.py, else the checkpoint
shipped with edgekit), distilled on fashion-mnist:train, top-1 on fashion-mnist:test, int8
calibrated on calibration/fashion-mnist-512.npz, `--max-drop 1.0`, no `--time-budget` (the
space's `trials` is what varies).

- **after**: today's defaults. The teacher's logits cached once per model and data
  (edgekit/zoo/teacher.py), a pruned candidate distilled from an already distilled, less pruned
  one (edgekit/optimize/inherit.py, INHERIT_DEFAULT), the schedule's auto short rung
  (`short_limit: auto`, edgekit/optimize/schedule.py: 10 % of the training set, at least 2,000
  images), promotion to the full rung after the trials by budget (with no --time-budget: every
  short-only candidate faster than the winner, the fastest of each architecture).
- **before**: the same code with session 6's behaviour switched back on by existing switches
  only (BEFORE_ENV, BEFORE_DISTILL):
  `EDGEKIT_TEACHER_CACHE_MB=0` (the teacher runs on the fly at every step of every
  distillation), `distill: {inherit: false}` in the space (every candidate distilled from the
  original), `distill: {short_limit: 2000}` in the space (the old fixed short rung, 1 epoch ×
  2,000 images). Early stopping needs no switch: the optimize rungs are 1 epoch each and
  distillation stops early only in runs of more than patience + 1 = 3 epochs
  (edgekit/passes/distill.py), so it never acts in either. Promotion after the trials is the
  same code in both (there is no switch for it; it is not part of "before").

Both pin `--train-precision fp32` (TRAIN_PRECISION): the auto choice comes from a micro-benchmark
per model size that is noisy on a shared machine, and would differ between points for reasons
that are not the four switches; where distillation trains is benchmarks/bench_train_speed.py.
The memory layout (channels_last or not) is still measured once per model size class, and that
choice (train-plans.json) is shared by every point, so no point measures it again.

Per point: the wall seconds of the `edgekit optimize` subprocess and where they went, summed
over every trial of every device's study (OUT/optuna.db; promotions included), with
bench_optimize.cost_split: build (prune, dwsep, export, int8), teacher (the teacher's forwards
or its cache reads, the part of distillation), distillation (the rest), measure (latency and
top-1 on the device), other (start-up, baselines, the study).

Curve 1: one local-cpu profile with 2 threads. Curve 2: N copies of local-cpu with 1 thread
each (devices take turns on this machine; the distilled models are shared between them), 10
candidates per device.

Run: `.venv/bin/python benchmarks/run.py search_cost` on a quiet machine (14 searches; about
25-35 minutes on 2 cores, estimated from the tiny runs on the full space, not yet measured). BENCH_SEARCH_COST_TINY=1 (or `run.py --quick`) runs every curve on a tiny
setting (4, 6, 8, 12 candidates of a 12-candidate space; 1, 2, 4 devices of 6 candidates; a
3,000-image training set, 300 eval images, a short protocol) to prove the script works: 14
small searches, about 9 minutes on a busy 2-core machine, most of it each search's start; its
results go to .cache/bench-search-cost-tiny/results/search-cost-tiny.* (`--quick`: under
.cache/bench-quick/) and never into the README.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import yaml
from bench_optimize import cost_split, rung_counts, tally_search
from common import (
    QUICK,
    ROOT,
    ZOO,
    checkpoint_provenance,
    md_table,
    work_dir,
    write_results,
)

TINY = QUICK or os.environ.get("BENCH_SEARCH_COST_TINY") == "1"
WORK = work_dir("search-cost-tiny" if TINY and not QUICK else "search-cost")
RESULTS_NAME = "search-cost-tiny" if TINY and not QUICK else "search-cost"
CALIB = str(ROOT / "calibration" / "fashion-mnist-512.npz")
THREADS = 2  # curve 1's device; curve 2's devices have 1 thread each
CANDIDATES = (4, 6, 8, 12) if TINY else (5, 10, 20, 40)
DEVICES = (1, 2, 4)
DEVICE_CANDIDATES = 6 if TINY else 10  # per device, curve 2
TRAIN_PRECISION = os.environ.get("BENCH_SEARCH_COST_TRAIN_PRECISION", "fp32")
EVAL_LIMIT = 300 if TINY else None  # None: all 10,000 test images
TINY_TRAIN_IMAGES = 3000
# 4 × 2 architectures × 2 runtimes × (fp32, int8 × 2 fallbacks) = 48 candidates per device: room
# for 40 distinct ones with no --time-budget.
SPACE: dict[str, Any] = {"prune": [0, 0.25, 0.375, 0.5], "dwsep": ["off", "auto"],
                         "precisions": ["fp32", "int8"], "int8_fallback": ["none", "first-conv"],
                         "calib_size": 512}
if TINY:  # 3 × 1 × 2 × 2 = 12 candidates: the 4 originals, then pruned ones
    SPACE = {"prune": [0, 0.25, 0.5], "dwsep": ["off"], "precisions": ["fp32", "int8"],
             "int8_fallback": ["none"], "calib_size": 64}
BEFORE_ENV = {"EDGEKIT_TEACHER_CACHE_MB": "0"}
BEFORE_DISTILL: dict[str, Any] = {"inherit": False, "short_limit": 2000}
MODES = ("before", "after")
# edgekit's per-machine choice of training layout (channels_last or not, measured once per model
# size class: edgekit/zoo/accel.py), shared by every point's otherwise fresh edgekit cache
PLANS = WORK / "train-plans.json"


def protocol():
    """The latency protocol of every device (the same in both modes: measure_s depends on it)."""
    from edgekit.runtimes.latency import LatencyProtocol

    if TINY:
        return LatencyProtocol(warmup_count=3, warmup_seconds=0.0, min_queries=20,
                               min_seconds=0.02, max_seconds=1.0)
    return LatencyProtocol(warmup_count=10, warmup_seconds=0.2, min_queries=100,
                           min_seconds=0.5, max_seconds=5.0)


def device_file(name: str, threads: int) -> str:
    """local-cpu with this benchmark's protocol, batch 1 and `threads` threads."""
    from edgekit.devices import load_profile

    data = load_profile("local-cpu").model_dump(mode="json", exclude_none=True)
    data.update(name=name, threads=threads, batch_sizes=[1], latency=protocol().model_dump())
    path = WORK / "devices" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def lenet5() -> Path:
    """ZOO/lenet5.pt (bench_zoo.py), else the checkpoint shipped with edgekit."""
    from edgekit.zoo import shipped_checkpoint

    path = ZOO / "lenet5.pt"
    if path.is_file():
        return path
    shipped = shipped_checkpoint("lenet5")
    if shipped is None:
        raise FileNotFoundError(f"{path} is missing: run `benchmarks/run.py zoo` first")
    return shipped


def train_source() -> str:
    """fashion-mnist:train, or in tiny mode a stratified TINY_TRAIN_IMAGES-image .npz of it."""
    if not TINY:
        return "fashion-mnist:train"
    path = WORK / f"train-{TINY_TRAIN_IMAGES}.npz"
    if not path.is_file():
        import numpy as np

        from edgekit.data import load_raw
        from edgekit.data.dataset import stratified_indices

        raw = load_raw("fashion-mnist:train")
        keep = stratified_indices(raw.labels, TINY_TRAIN_IMAGES, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=raw.images[keep], y=np.asarray(raw.labels)[keep])
    return str(path)


def space(mode: str, trials: int) -> dict[str, Any]:
    """The space of one point: SPACE with `trials`; before: BEFORE_DISTILL as its distill."""
    return {**SPACE, "trials": trials, **({"distill": BEFORE_DISTILL} if mode == "before" else {})}


def search(mode: str, point: str, trials: int, devices: list[str]) -> dict[str, Any]:
    """One fresh search (its own output folder and edgekit cache, so its own teacher cache):
    wall seconds, the cost split over every trial, the rungs, each device's winner."""
    folder = WORK / mode / point
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    out = folder / "out"
    space_file = folder / "space.yaml"
    space_file.write_text(yaml.safe_dump(space(mode, trials)))
    args = [sys.executable, "-m", "edgekit", "optimize", str(lenet5()), "--space",
            str(space_file), "--train", train_source(), "--eval", "fashion-mnist:test",
            "--calib", CALIB, "--max-drop", "1.0", "--train-precision", TRAIN_PRECISION,
            "-o", str(out), "--json"]
    for device in devices:
        args += ["--device", device]
    if EVAL_LIMIT:
        args += ["--eval-limit", str(EVAL_LIMIT)]
    (folder / "cache").mkdir()
    if PLANS.is_file():  # the training layout measured once for every point, not per point
        shutil.copyfile(PLANS, folder / "cache" / PLANS.name)
    env = {**os.environ, "EDGEKIT_CACHE": str(folder / "cache"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    env.pop("EDGEKIT_TEACHER_CACHE_MB", None)  # after: the default bound
    if mode == "before":
        env.update(BEFORE_ENV)
    began = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    seconds = time.perf_counter() - began
    if (folder / "cache" / PLANS.name).is_file():
        shutil.copyfile(folder / "cache" / PLANS.name, PLANS)
    if proc.returncode not in (0, 1):  # 1: nothing met the budget, still a summary
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip().splitlines()[-3:]}")
    summary = json.loads(proc.stdout)
    tally_search(summary, f"edgekit optimize ({mode}, {point})")
    results = list(summary["devices"].values())
    rungs: dict[str, int] = {}
    for result in results:
        for rung, n in rung_counts(result).items():
            rungs[rung] = rungs.get(rung, 0) + n
    return {"mode": mode, "point": point, "trials": trials, "devices": len(devices),
            "seconds": round(seconds, 1),
            "candidates": sum(len(r["candidates"]) for r in results),
            "trial_runs": len(trial_costs(out)),
            "split": cost_split({"candidates": [{"cost": c} for c in trial_costs(out)]},
                                seconds, summary),
            "distillations": distillations(out), "rungs": rungs,
            "winners": [winner_of(r) for r in results]}


def trial_costs(out: Path) -> list[dict[str, float]]:
    """Every finished trial's recorded cost, of every device's study (promotions included: a
    promoted candidate's short and full trials both count)."""
    path = out / "optuna.db"
    if not path.is_file():
        return []
    with closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=5)) as db:
        rows = db.execute("SELECT a.value_json FROM trial_user_attributes a JOIN trials t "
                          "ON a.trial_id = t.trial_id WHERE a.key = 'cost' "
                          "AND t.state IN ('COMPLETE', 'PRUNED')").fetchall()
    return [json.loads(r[0]) for r in rows]


def distillations(out: Path) -> dict[str, int]:
    """Distilled models the search made, per rung (short/full), and how many of them started
    from a distilled parent (inherited) or read the teacher from its cache: from each
    candidate model folder's manifest."""
    counts = {"short": 0, "full": 0, "inherited": 0, "teacher_cached": 0}
    for manifest in (out / "candidates").glob("*/manifest.json"):
        stages = json.loads(manifest.read_text()).get("stages") or []
        for stage in stages if isinstance(stages, list) else []:
            if stage.get("stage") != "distill":
                continue
            rung = manifest.parent.name.rsplit("-", 1)[0].rsplit("-", 1)[-1]
            if rung in ("short", "full"):
                counts[rung] += 1
            metrics = stage.get("metrics") or {}
            counts["inherited"] += bool(metrics.get("inherited_from"))
            counts["teacher_cached"] += bool((metrics.get("teacher") or {}).get("cached_epochs"))
    return counts


def winner_of(result: dict[str, Any]) -> dict[str, Any] | None:
    won = result.get("winner")
    if not won:
        return None
    return {"name": won["name"], "p50_ms": won["p50_ms"], "drop_points": won["drop_points"],
            "speedup": won.get("speedup")}


def curves() -> dict[str, list[dict[str, Any]]]:
    """Every point, before and after side by side (before first at each point)."""
    two = device_file("bench-cpu", THREADS)
    out: dict[str, list[dict[str, Any]]] = {"candidates": [], "devices": []}
    for n in CANDIDATES:
        for mode in MODES:
            out["candidates"].append(search(mode, f"candidates-{n}", n, [two]))
            print(f"   {mode} {n} candidates: {out['candidates'][-1]['seconds']} s", flush=True)
    for n in DEVICES:
        devices = [device_file(f"bench-cpu-1t-{i + 1}", 1) for i in range(n)]
        for mode in MODES:
            out["devices"].append(search(mode, f"devices-{n}", DEVICE_CANDIDATES, devices))
            print(f"   {mode} {n} devices: {out['devices'][-1]['seconds']} s", flush=True)
    return out


# ---------------------------------------------------------------------- README section
SPLIT = ("build_s", "teacher_s", "distill_s", "measure_s", "other_s")


def _pairs(points: list[dict[str, Any]], key: str) -> list[tuple[Any, dict, dict]]:
    by = {(p[key], p["mode"]): p for p in points}
    return [(k, by[(k, "before")], by[(k, "after")])
            for k in dict.fromkeys(p[key] for p in points)
            if (k, "before") in by and (k, "after") in by]


def _split(p: dict[str, Any]) -> str:
    return " / ".join(f"{p['split'][k]:.0f}" for k in SPLIT)


def _distilled(p: dict[str, Any]) -> str:
    d = p["distillations"]
    return f"{d['short']} + {d['full']}"


def _winner(p: dict[str, Any]) -> str:
    ws = p["winners"]
    if not ws or any(w is None for w in ws):
        return "none" if not ws or all(w is None for w in ws) else "some none"
    names = sorted({w["name"] for w in ws})
    worst = max(w["drop_points"] for w in ws)
    return f"{', '.join(names)} ({0.0 - worst:+.2f})"


def _table(pairs: list[tuple[Any, dict, dict]], label: str) -> str:
    return md_table(
        [label, "before s", "after s", "after ÷ before",
         "before: build / teacher / distil / measure / other s",
         "after: build / teacher / distil / measure / other s",
         "distilled short + full (before → after)", "after: inherited, teacher from cache",
         "winner, Δ top-1 pts (before → after)"],
        [[k, f"{b['seconds']:.0f}", f"{a['seconds']:.0f}", f"{a['seconds'] / b['seconds']:.2f}",
          _split(b), _split(a), f"{_distilled(b)} → {_distilled(a)}",
          f"{a['distillations']['inherited']}, {a['distillations']['teacher_cached']}",
          f"{_winner(b)} → {_winner(a)}"] for k, b, a in pairs])


def section(data: dict[str, Any]) -> str:
    """README section search-cost (from benchmarks/results/search-cost.json)."""
    env = data.get("environment") or {}
    cpu = env.get("cpu") or {}
    machine = f"{cpu.get('model', '?')}, {cpu.get('usable_cores', '?')} usable cores"
    curves_ = data["curves"]
    before = ", ".join(f"`{k}={v}`" for k, v in data["before"]["env"].items()) + ", " + \
        ", ".join(f"`distill: {{{k}: {str(v).lower()}}}`"
                  for k, v in data["before"]["distill"].items())
    return (
        f"### Cost of the search against its size (lenet5, {machine}; before and after)\n\n"
        + "Candidates (one device, local-cpu with "
        f"{data['threads']} threads, no `--time-budget`):\n\n"
        + _table(_pairs(curves_["candidates"], "trials"), "candidates")
        + f"\nDevices ({data['device_candidates']} candidates each; N copies of local-cpu with "
          "1 thread each, taking turns on this machine):\n\n"
        + _table(_pairs(curves_["devices"], "devices"), "devices")
        + f"\nEach point is a fresh search (its own output folder and teacher cache) of "
          f"`edgekit optimize` over prune {data['space']['prune']}, dwsep "
          f"{data['space']['dwsep']}, {data['space']['precisions']} on ONNX Runtime and "
          f"OpenVINO, `--max-drop 1.0`, `--train-precision {data['train_precision']}` in both. "
          f"After: today's defaults (teacher cache, inheritance, the auto short rung, "
          f"promotion by budget). Before: the same code with {before} (the teacher on the fly "
          "at every step, every candidate distilled from the original, the fixed 1 epoch × "
          "2,000-image short rung); early stopping cannot act on 1-epoch rungs in either. "
          "The split is summed over every trial of every device (teacher: the part of "
          "distillation in the teacher's forwards or its cache; other: start-up, baselines, "
          "the study). The sampler's path depends on what it measured, so before and after "
          "may try, and distil, different candidates at one point (the distilled column). "
          "Wall seconds on one machine in one run; compare ratios within this table only. "
          "Protocol and environment: "
          f"[{data['benchmark']}.json](benchmarks/results/{data['benchmark']}.json).\n")


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"search-cost": ("search-cost", section)}


def main() -> dict[str, Any]:
    from edgekit.validate.env import capture_environment

    checkpoint = lenet5()
    part = {"environment": capture_environment(), "threads": THREADS,
            "device_candidates": DEVICE_CANDIDATES, "tiny": TINY,
            "train_source": train_source(), "eval_limit": EVAL_LIMIT,
            "train_precision": TRAIN_PRECISION, "space": SPACE,
            "before": {"env": BEFORE_ENV, "distill": BEFORE_DISTILL},
            "protocol": protocol().model_dump(), "curves": curves()}
    part["benchmark"] = RESULTS_NAME
    if TINY and not QUICK:  # a check that the script works: results in WORK, never the README
        import common

        kept, common.RESULTS = common.RESULTS, WORK / "results"
        try:
            write_results(RESULTS_NAME, part, section(part),
                          checkpoints={"lenet5": checkpoint_provenance(checkpoint)})
        finally:
            common.RESULTS = kept
        return {}
    write_results(RESULTS_NAME, part, section(part),
                  checkpoints={"lenet5": checkpoint_provenance(checkpoint)})
    return {"readme": {"search-cost": section(part)}}


if __name__ == "__main__":
    main()

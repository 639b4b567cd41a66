"""`edgekit optimize` on this machine (issue 15's goals): what the device-in-the-loop search picks,
how it compares with the anchors measured in the same run, and what the search costs.

1. Seed models (lenet5, rowrnn, cnn_gru, cnn_lstm; .cache/zoo/NAME.pt, trained on first use with
   the zoo defaults): `edgekit optimize MODEL --device local-cpu --max-drop 1.0` over SEED_SPACE.
   Goal: the chosen artifact is never slower than the fp32 original on its fastest runtime; the
   table says which knob won and by how much (speed-up against that runtime, same run).
2. ResNet-18 for Fashion-MNIST (edgekit.zoo:resnet18_small: torchvision resnet18 with a 3×3
   stride-1 first conv, no max-pool, 1 input channel, ~456 M MACs; trained here RESNET_EPOCHS
   epochs): the anchor is NNCF's default int8 of the original on OpenVINO (`edgekit compress
   --int8 --for openvino`); the winner of `edgekit optimize` with its default space and schedule (no --space;
   `--time-budget 45m`, issue 28) and the anchor are
   timed in alternating rounds (batch 1, 2 threads, p50 over all samples). Goal: winner ≤ 0.5×
   the anchor's p50, within 1.0 point of the original's top-1 on the full test split.
3. Cost of the search (lenet5): wall time for 6 and then 12 trials in the same folder (the larger
   budget reuses the first run), a third run (nothing measured again), two devices against one,
   and a search killed with SIGKILL after 3 trials and rerun (no finished candidate measured
   again: counted from the cache keys in the output).

Run: `.venv/bin/python benchmarks/run.py optimize` on a quiet machine. A full run takes about
2 hours on 2 cores: ResNet-18 training 25 min for 2 epochs (measured 2026-11-28, cached after),
its search up to RESNET_BUDGET=45m plus the anchor, the seed models
~5–8 min each, the cost section ~10 min. BENCH_OPTIMIZE_PARTS=resnet runs the ResNet part alone. BENCH_OPTIMIZE_TINY=1 runs every section on a tiny setting (subsets, a few trials,
quick protocol; results in benchmarks/results/optimize-tiny.*) to check that the script works:
about 2–3 min here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import (
    QUICK,
    ROOT,
    TIMED,
    checkpoint_provenance,
    md_table,
    time_alternating,
    work_dir,
    write_results,
    zoo_checkpoint,
)

TINY = QUICK or os.environ.get("BENCH_OPTIMIZE_TINY") == "1"
WORK = work_dir("bench-optimize")
# BENCH_OPTIMIZE_PARTS=seed,cost leaves the ResNet-18 part out (each part has its results file)
PARTS = tuple(os.environ.get("BENCH_OPTIMIZE_PARTS", "seed,resnet,cost").split(","))
CALIB = str(ROOT / "calibration" / "fashion-mnist-512.npz")
THREADS = 2
ROUNDS = 3
MODELS = tuple(os.environ.get("BENCH_OPTIMIZE_MODELS",
                              "lenet5" if TINY else "lenet5,rowrnn,cnn_gru,cnn_lstm").split(","))
RESNET_EPOCHS = int(os.environ.get("BENCH_RESNET_EPOCHS", "1" if TINY else "2"))
RESNET_BUDGET = os.environ.get("BENCH_RESNET_BUDGET", "3m" if TINY else "45m")
EVAL_LIMIT = 300 if TINY else None  # None: all 10,000 test images
SEED_SPACE: dict[str, Any] = {
    "prune": [0, 0.25, 0.5], "dwsep": ["off", "auto"], "precisions": ["fp32", "int8"],
    "int8_fallback": ["none", "first-conv"], "trials": 24}
# None: optimize's default space and schedule (issue 28: the defaults must find the win)
RESNET_SPACE: dict[str, Any] | None = None
if TINY:
    SEED_SPACE = {"prune": [0, 0.5], "dwsep": ["off"], "precisions": ["fp32", "int8"],
                  "int8_fallback": ["none"], "trials": 6, "calib_size": 64,
                  "distill": {"short_limit": 300, "full_limit": 600}}
    RESNET_SPACE = {"prune": [0, 0.5], "dwsep": ["off"], "precisions": ["fp32", "int8"],
                    "int8_fallback": ["none"], "trials": 5, "calib_size": 32,
                    "distill": {"short_limit": 200, "full_limit": 400}}


def protocol():
    from edgekit.runtimes.latency import LatencyProtocol

    if TINY:
        return LatencyProtocol(warmup_count=3, warmup_seconds=0.0, min_queries=30,
                               min_seconds=0.05, max_seconds=2.0)
    return LatencyProtocol(warmup_count=20, warmup_seconds=0.3, min_queries=300,
                           min_seconds=1.0, max_seconds=10.0)


def device_file(name: str = "bench-cpu", threads: int = THREADS) -> str:
    """local-cpu with the benchmark's protocol (and thread count)."""
    from edgekit.devices import load_profile

    data = load_profile("local-cpu").model_dump(mode="json", exclude_none=True)
    data.update(name=name, threads=threads, batch_sizes=[1], latency=protocol().model_dump())
    path = WORK / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def optimize_args(model: Path, out: Path, space: dict[str, Any] | None, devices: list[str],
                  *extra: str) -> list[str]:
    """The optimize command line; `space` None: the default space (no --space file)."""
    args = [sys.executable, "-m", "edgekit", "optimize", str(model)]
    if space is not None:
        space_file = out.parent / f"{out.name}-space.yaml"
        space_file.parent.mkdir(parents=True, exist_ok=True)
        space_file.write_text(yaml.safe_dump(space))
        args += ["--space", str(space_file)]
    args += ["--train", "fashion-mnist:train", "--eval", "fashion-mnist:test", "--calib", CALIB,
            "--max-drop", "1.0", "-o", str(out), "--json", *extra]
    for device in devices:
        args += ["--device", device]
    if EVAL_LIMIT:
        args += ["--eval-limit", str(EVAL_LIMIT)]
    return args


def fresh_search(out: Path) -> dict[str, str]:
    """A search from nothing: `out` deleted (a search resumes from its folder's study and
    measurement cache) and an environment whose edgekit cache is empty but for the machine's
    training-layout choice (train-plans.json), so the teacher's logits of an earlier run are
    not read back and the teacher's seconds are counted."""
    shutil.rmtree(out, ignore_errors=True)
    cache = out.parent / f"{out.name}-edgekit-cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    plans = ROOT / ".cache" / "train-plans.json"
    if plans.is_file():
        shutil.copyfile(plans, cache / plans.name)
    return {**os.environ, "EDGEKIT_CACHE": str(cache)}


def run_optimize(args: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, Any],
                                                                               float]:
    began = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip().splitlines()[-3:]}")
    summary = json.loads(proc.stdout)
    tally_search(summary, f"edgekit optimize {Path(args[4]).name}")
    return summary, time.perf_counter() - began


def tally_search(summary: dict[str, Any], label: str) -> None:
    """(issue 18) Tally the latency runs this search made (not those it took from its cache):
    each baseline and candidate measured in this run, with its disturbed verdict."""
    measured = set(summary["cache"]["measured_keys"])
    for result in summary["devices"].values():
        for entry in [*result["baselines"].values(), *result["candidates"]]:
            if entry.get("key") in measured and "disturbed" in entry:
                measured.discard(entry["key"])  # a baseline can also be a candidate
                TIMED.append({"label": label, "disturbed": entry["disturbed"],
                              "reasons": entry.get("disturbed_reasons", []), "reruns": 0})


# ---------------------------------------------------------------------- 1. seed models
def seed_models(device: str) -> list[dict[str, Any]]:
    rows = []
    for name in MODELS:
        summary, seconds = run_optimize(optimize_args(zoo_checkpoint(name), WORK / name,
                                                      SEED_SPACE, [device]),
                                        fresh_search(WORK / name))
        result = next(iter(summary["devices"].values()))
        won = result["winner"] or {}
        rows.append({"model": name, "seconds": round(seconds, 1),
                     "candidates": len(result["candidates"]),
                     "baselines": {rt: b["p50_ms"] for rt, b in result["baselines"].items()},
                     "fastest_fp32_ms": result["fastest_fp32_ms"],
                     "winner": won.get("name"), "winner_ms": won.get("p50_ms"),
                     "speedup": won.get("speedup"), "drop_points": won.get("drop_points"),
                     "never_slower": bool(won) and won["p50_ms"] <= result["fastest_fp32_ms"],
                     "why": result["why"]})
    return rows


# ---------------------------------------------------------------------- 2. ResNet-18
def resnet_checkpoint() -> tuple[Path, float]:
    """resnet18_small trained RESNET_EPOCHS epochs on Fashion-MNIST train (cached)."""
    path = WORK / f"resnet18_small-{RESNET_EPOCHS}ep.pt"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())["test_top1"]
    import torch

    from edgekit.data import load_dataset, load_raw
    from edgekit.io.models import ModelBundle, save_checkpoint
    from edgekit.zoo import default_spec, resnet18_small
    from edgekit.zoo.train import TrainConfig, fit

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    spec = default_spec("lenet5")
    model = resnet18_small()
    raw = load_raw("fashion-mnist:train")
    eval_set = load_dataset("fashion-mnist:test", spec, limit=EVAL_LIMIT)
    cfg = TrainConfig(epochs=RESNET_EPOCHS, limit=1200 if TINY else None, seed=0)
    history = fit(model, raw, spec, eval_set, cfg, description="Training resnet18_small")
    bundle = ModelBundle(model, spec, "edgekit.zoo:resnet18_small", {},
                         meta={"name": "resnet18_small", "history": history})
    save_checkpoint(bundle, path)
    top1 = history["epochs"][-1]["top1"]
    meta.write_text(json.dumps({"test_top1": top1, "epochs": RESNET_EPOCHS}))
    return path, top1


def nncf_anchor(checkpoint: Path, folder: Path) -> Path:
    """NNCF's default int8 of the original on OpenVINO (`edgekit compress --int8 --for
    openvino`): the anchor the ResNet-18 winners are timed against."""
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "edgekit", "compress", str(checkpoint), "--int8",
                    "--for", "openvino", "--calib", CALIB, "-o", str(folder), "--json"],
                   check=True, cwd=ROOT, capture_output=True)
    return folder / "model.int8.xml"


def time_against_anchor(anchor: Path, artifacts: dict[str, tuple[str, str]],
                        device: str) -> dict[str, Any]:
    """NNCF's anchor and each named (artifact, runtime) timed in alternating rounds on one
    Fashion-MNIST image (batch 1, THREADS): the anchor's p50 ms and each one's p50 and ratio."""
    import numpy as np

    from edgekit.data import load_dataset
    from edgekit.devices import load_profile
    from edgekit.io.artifacts import spec_for
    from edgekit.runtimes.base import get_runner

    profile = load_profile(device)
    spec = spec_for(anchor)
    runners = {name: get_runner(runtime)(path, spec_for(path), threads=THREADS,
                                         options=profile.runner_options(runtime))
               for name, (path, runtime) in {"anchor": (str(anchor), "openvino"),
                                             **artifacts}.items()}
    x = np.ascontiguousarray(load_dataset("fashion-mnist:test", spec, limit=16).x[:1])
    timed = time_alternating(runners, x, protocol(), ROUNDS, shuffle_seed=0)
    base = timed["anchor"]["p50_ms"]
    return {"anchor_p50_ms": base,
            **{name: {"p50_ms": t["p50_ms"], "ratio": round(t["p50_ms"] / base, 3)}
               for name, t in timed.items() if name != "anchor"}}


def resnet18(device: str) -> dict[str, Any]:
    checkpoint, trained_top1 = resnet_checkpoint()
    anchor = nncf_anchor(checkpoint, WORK / "resnet18-anchor")
    summary, seconds = run_optimize(optimize_args(checkpoint, WORK / "resnet18", RESNET_SPACE,
                                                  [device], "--time-budget", RESNET_BUDGET),
                                    fresh_search(WORK / "resnet18"))
    result = next(iter(summary["devices"].values()))
    won = result["winner"]
    out: dict[str, Any] = {"trained_top1": trained_top1, "search_seconds": round(seconds, 1),
                           "candidates": len(result["candidates"]), "why": result["why"],
                           "reference_top1": result["reference_top1"], "winner": won,
                           "space": result.get("space"),
                           "split": cost_split(result, seconds, summary),
                           "rungs": rung_counts(result)}
    if not won:
        return out
    timed = time_against_anchor(anchor, {"winner": (won["artifact"],
                                                   won["params"]["target"].split(":")[0])},
                                device)
    ratio = timed["winner"]["ratio"]
    out.update(anchor_p50_ms=timed["anchor_p50_ms"], winner_p50_ms=timed["winner"]["p50_ms"],
               ratio=ratio, drop_points=won["drop_points"],
               goal_met=ratio <= 0.5 and won["drop_points"] <= 1.0)
    return out


def cost_split(result: dict[str, Any], seconds: float,
               summary: dict[str, Any] | None = None) -> dict[str, float]:
    """Where the search's wall time went, from each candidate's recorded cost: building
    (pruning, substitution, export, int8), the teacher's forwards (of distillation), the rest of
    distillation, measuring on the device; with the optimize `summary`, the space fitting
    before the trials (each prune ratio and dwsep choice built once on the original) counts as
    building, the fp32 originals' timing (with the reference logits) and the winner's
    confirmation against the original as measuring; `other`
    is the remainder (start, data, the study)."""
    total = {"build_s": 0.0, "teacher_s": 0.0, "distill_s": 0.0, "measure_s": 0.0}
    for c in result["candidates"]:
        for k in total:
            total[k] += float((c.get("cost") or {}).get(k) or 0.0)
    total["distill_s"] -= total["teacher_s"]  # recorded as the part of distill_s
    if summary is not None:
        total["build_s"] += float((summary.get("setup_s") or {}).get("fit_s") or 0.0)
        total["measure_s"] += sum(float(r.get("baselines_s") or 0.0)
                                  for r in summary["devices"].values())
        # the winner timed again with the original in alternating rounds (not when cached)
        total["measure_s"] += sum(float(((r.get("winner") or {}).get("confirmed") or {})
                                        .get("seconds") or 0.0)
                                  for r in summary["devices"].values())
    total["other_s"] = max(0.0, seconds - sum(total.values()))
    return {k: round(v, 1) for k, v in total.items()}


def rung_counts(result: dict[str, Any]) -> dict[str, int]:
    """How many candidates ended at each rung (undistilled / short / full)."""
    counts: dict[str, int] = {}
    for c in result["candidates"]:
        rung = str(c.get("rung") or "undistilled")
        counts[rung] = counts.get(rung, 0) + 1
    return counts


# ---------------------------------------------------------------------- 3. cost of the search
def search_cost(device: str) -> dict[str, Any]:
    model = zoo_checkpoint("lenet5")
    space = {**SEED_SPACE, "trials": 6}
    out = WORK / "cost"
    shutil.rmtree(out, ignore_errors=True)
    first, t_first = run_optimize(optimize_args(model, out, space, [device]))
    more, t_more = run_optimize(optimize_args(model, out, {**space, "trials": 12}, [device]))
    again, t_again = run_optimize(optimize_args(model, out, {**space, "trials": 12}, [device]))
    two = WORK / "cost-two-devices"
    shutil.rmtree(two, ignore_errors=True)
    other = device_file("bench-cpu-1t", threads=1)
    both, t_both = run_optimize(optimize_args(model, two, space, [device, other]))
    killed = WORK / "cost-killed"
    shutil.rmtree(killed, ignore_errors=True)
    args = optimize_args(model, killed, space, [device])
    from edgekit.optimize.trials import trial_count

    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while trial_count(killed) < 3 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.stem for p in (killed / "cache" / "measurements").glob("*.json")}
    resumed, t_resumed = run_optimize(args)
    again_measured = set(resumed["cache"]["measured_keys"]) & before

    def n(summary: dict[str, Any]) -> int:
        return sum(len(r["candidates"]) for r in summary["devices"].values())

    return {"runs": [
        {"run": "6 trials, fresh", "candidates": n(first), "measured": first["cache"]["measured"],
         "reused": first["cache"]["hits"], "seconds": round(t_first, 1)},
        {"run": "12 trials, same folder", "candidates": n(more),
         "measured": more["cache"]["measured"], "reused": more["cache"]["hits"],
         "seconds": round(t_more, 1)},
        {"run": "12 trials again", "candidates": n(again), "measured": again["cache"]["measured"],
         "reused": again["cache"]["hits"], "seconds": round(t_again, 1)},
        {"run": "6 trials, two devices", "candidates": n(both),
         "measured": both["cache"]["measured"], "reused": both["cache"]["hits"],
         "seconds": round(t_both, 1)},
        {"run": f"killed after {len(before)} measurements, rerun", "candidates": n(resumed),
         "measured": resumed["cache"]["measured"], "reused": resumed["cache"]["hits"],
         "seconds": round(t_resumed, 1)}],
        "kill_rerun_measured_again": len(again_measured)}


def seed_section(data: dict[str, Any]) -> str:
    """README section optimize-seed (from benchmarks/results/optimize-seed.json)."""
    return (f"### `edgekit optimize` on the seed models (this CPU, batch 1, {data['threads']} "
            "threads, max drop 1.0 pt)\n\n"
            + md_table(["model", "candidates", "fp32 original p50 ms (per runtime)", "winner",
                        "p50 ms", "speed-up", "Δ top-1 pts", "never slower", "search s"],
                       [[r["model"], r["candidates"],
                         ", ".join(f"{k} {v:.3f}" for k, v in r["baselines"].items()),
                         r["winner"] or "none", r["winner_ms"] or "-",
                         f"{r['speedup']:.2f}×" if r["speedup"] else "-",
                         "-" if r["drop_points"] is None else f"{0.0 - r['drop_points']:+.2f}",
                         "yes" if r["never_slower"] else "NO", r["seconds"]]
                        for r in data["seed_models"]])
            + "\nSpeed-up: against the fp32 original on its fastest runtime, timed in the same "
              "run; top-1 on the full test split. Space and protocol: "
              "[optimize-seed.json](benchmarks/results/optimize-seed.json).\n")


def resnet_section(data: dict[str, Any]) -> str:
    """README section optimize-resnet (from benchmarks/results/optimize-resnet.json)."""
    resnet = data["resnet18"]
    if not resnet.get("winner"):
        return f"### ResNet-18: nothing met the budget ({resnet['why']})\n"
    w = resnet["winner"]
    return ("### ResNet-18 (3×3 stem, no max-pool, 1 channel) on Fashion-MNIST: winner "
            "against NNCF's default int8 of the original on OpenVINO, same run\n\n"
            + md_table(["winner", "p50 ms", "anchor p50 ms", "winner ÷ anchor",
                        "top-1 (original)", "Δ top-1 pts", "goal (≤ 0.5×, ≤ 1 pt)", "search s"],
                       [[w["name"], resnet["winner_p50_ms"], resnet["anchor_p50_ms"],
                         f"{resnet['ratio']:.3f}",
                         f"{w['top1']:.2f} ({100 * resnet['reference_top1']:.2f})",
                         f"{0.0 - w['drop_points']:+.2f}",
                         "met" if resnet["goal_met"] else "MISSED", resnet["search_seconds"]]])
            + resnet_notes(data))


def resnet_notes(data: dict[str, Any]) -> str:
    """What the ResNet-18 table rests on: the checkpoint, the space, the winner's confirmation."""
    resnet, w = data["resnet18"], data["resnet18"]["winner"]
    checkpoint = data.get("checkpoints", {}).get("resnet18_small", {})
    space = resnet.get("space") or data.get("resnet_space") or {}
    lines = [f"`resnet18_small` trained here ({Path(checkpoint.get('path', '?')).stem}, "
             f"test top-1 {resnet['trained_top1']:.4f} on all 10,000 test images, sha256 "
             f"`{checkpoint.get('sha256', '?')[:16]}…`)",
             f"{resnet['candidates']} candidates in {resnet['search_seconds']:.0f} s over prune "
             f"{space.get('prune')}, dwsep {space.get('dwsep')}, {space.get('precisions')} on "
             "ONNX Runtime and OpenVINO, batch 1, 2 threads"
             + (" (optimize's default space and schedule, no --space)"
                if data.get("resnet_space") is None else "")]
    split = resnet.get("split")
    if split:
        lines.append("wall time split: " + ", ".join(
            f"{k[:-2]} {v:.0f} s" for k, v in split.items()))
    if resnet.get("rungs"):
        lines.append("candidates per rung: " + ", ".join(
            f"{k} {v}" for k, v in resnet["rungs"].items()))
    confirmed = w.get("confirmed")
    if confirmed:
        lines.append(f"the winner against the fp32 original, in {confirmed['rounds']} alternating "
                     f"rounds: {confirmed['speedup']:.2f}× (99% CI {confirmed['ci_low']:.2f}–"
                     f"{confirmed['ci_high']:.2f})")
    lines.append("winner and anchor timed in alternating rounds (p50 over all samples)")
    return "\n" + "; ".join(lines) + ".\n"


def cost_section(data: dict[str, Any]) -> str:
    """README section optimize-cost (from benchmarks/results/optimize-cost.json)."""
    cost = data["cost"]
    return ("### Cost of the search (lenet5)\n\n"
            + md_table(["run", "candidates", "measured", "reused from cache", "wall s"],
                       [[r["run"], r["candidates"], r["measured"], r["reused"], r["seconds"]]
                        for r in cost["runs"]])
            + f"\nAfter SIGKILL and a rerun, finished candidates measured again: "
              f"{cost['kill_rerun_measured_again']}.\n")


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"optimize-seed": ("optimize-seed", seed_section),
                   "optimize-resnet": ("optimize-resnet", resnet_section),
                   "optimize-cost": ("optimize-cost", cost_section)}


def main() -> dict[str, Any]:
    device = device_file()
    common = {"threads": THREADS, "protocol": protocol().model_dump()}
    data: dict[str, Any] = {"readme": {}}
    if "seed" in PARTS:
        seeds = seed_models(device)
        part = {**common, "seed_space": SEED_SPACE, "seed_models": seeds}
        write_results("optimize-seed", part, seed_section(part), checkpoints={
            r["model"]: checkpoint_provenance(zoo_checkpoint(r["model"])) for r in seeds})
        data["readme"]["optimize-seed"] = seed_section(part)
    if "resnet" in PARTS:
        part = {**common, "resnet_space": RESNET_SPACE, "resnet18": resnet18(device)}
        # the section names the checkpoint (as --render does from the results file)
        part["checkpoints"] = {"resnet18_small": checkpoint_provenance(resnet_checkpoint()[0])}
        write_results("optimize-resnet", part, resnet_section(part),
                      checkpoints=part["checkpoints"])
        data["readme"]["optimize-resnet"] = resnet_section(part)
    if "cost" in PARTS:
        part = {**common, "cost": search_cost(device)}
        write_results("optimize-cost", part, cost_section(part), checkpoints={
            "lenet5": checkpoint_provenance(zoo_checkpoint("lenet5"))})
        data["readme"]["optimize-cost"] = cost_section(part)
    return data

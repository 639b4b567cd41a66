"""`edgekit optimize` on users' architectures (issue 27's goal): torchvision mobilenet_v3_small,
efficientnet_b0 and resnet18 at 64×64, 4 classes, random weights (torch.manual_seed(0)), with the
default space and schedule on `local-cpu` (what a user gets with no --space).

Data: structured images (8×8 Gaussian noise upsampled to 64×64 plus pixel noise: smooth blobs a
random-weight network separates) labelled with the model's own top-1 ("agreement labels": the
original scores 100 %, and top-1 of a candidate is its agreement with the original), 600 to
train and calibrate on, 300 more to evaluate (another seed). Goal: every knob of the default
space (prune ratios, dwsep, runtime × precision, int8 fallback) either produced candidates or was
dropped with its reason, and no candidate failed (a failure here is a bookkeeping bug: the space
had already dropped what cannot apply).

Run: `.venv/bin/python benchmarks/run.py optimize_archs` on a quiet machine: BENCH_ARCHS_BUDGET
(default 9m) per model, about 30 min for the three. BENCH_ARCHS=resnet18 runs one. Writes
benchmarks/results/optimize-archs.json and .md and the README section optimize-archs.
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

from common import QUICK, RANDOM_WEIGHTS, ROOT, md_table, work_dir, write_results

ARCHS = tuple(os.environ.get("BENCH_ARCHS", "mobilenet_v3_small,efficientnet_b0,resnet18")
              .split(","))
BUDGET = os.environ.get("BENCH_ARCHS_BUDGET", "2m" if QUICK else "9m")
RES, CLASSES = 64, 4
TRAIN, EVAL = (120, 60) if QUICK else (600, 300)
WORK = work_dir("optimize-archs")
KNOBS = {"prune": "prune", "dwsep": "dwsep", "target": "target", "int8_fallback": "fallback"}


def make_inputs(arch: str) -> tuple[Path, Path, Path]:
    """WORK/ARCH.pt (a self-describing checkpoint) and its train/eval .npz (agreement labels)."""
    import numpy as np
    import torch
    import torchvision

    from edgekit.api import as_bundle
    from edgekit.io.models import save_checkpoint

    WORK.mkdir(parents=True, exist_ok=True)
    ckpt, train, evals = WORK / f"{arch}.pt", WORK / f"{arch}-train.npz", WORK / f"{arch}-eval.npz"
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=CLASSES).eval()
    bundle = as_bundle(model, input_shape=(1, 3, RES, RES), preprocessing="imagenet",
                       arch=f"torchvision.models:{arch}", arch_kwargs={"num_classes": CLASSES})
    save_checkpoint(bundle, ckpt)
    for path, count, seed in ((train, TRAIN, 1), (evals, EVAL, 2)):
        g = torch.Generator().manual_seed(seed)
        x = torch.nn.functional.interpolate(torch.randn(count, 3, 8, 8, generator=g), size=RES,
                                            mode="bilinear")
        x = x + 0.3 * torch.randn(count, 3, RES, RES, generator=g)
        with torch.no_grad():
            y = model(x).argmax(1)
        np.savez(path, x=x.numpy().astype(np.float32), y=y.numpy().astype(np.int64))
    return ckpt, train, evals


def run_arch(arch: str) -> dict[str, Any]:
    ckpt, train, evals = make_inputs(arch)
    out = WORK / f"optimize-{arch}"
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-m", "edgekit", "optimize", str(ckpt), "--device", "local-cpu",
            "--train", str(train), "--eval", str(evals), "--calib", str(train),
            "--time-budget", BUDGET, "-o", str(out), "--json"]
    began = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT,
                          env={**os.environ, "EDGEKIT_NO_PROGRESS": "1"})
    seconds = round(time.perf_counter() - began, 1)
    if proc.returncode not in (0, 1):
        return {"arch": arch, "exit": proc.returncode, "seconds": seconds,
                "error": proc.stderr.strip().splitlines()[-3:]}
    result = next(iter(json.loads(proc.stdout)["devices"].values()))
    return {"arch": arch, "exit": proc.returncode, "seconds": seconds, **summarise(result)}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Per knob value: candidates built from it, or why it was dropped, or 'not reached'."""
    space, dropped = result.get("space") or {}, result.get("dropped") or []
    candidates = result["candidates"]
    values: dict[str, list[Any]] = {
        "prune": list(space.get("prune") or []), "dwsep": list(space.get("dwsep") or []),
        "target": list(result.get("targets") or []),
        "int8_fallback": list(space.get("int8_fallback") or [])}
    for d in dropped:
        values.setdefault(d["knob"], [])
        if d["value"] not in values[d["knob"]]:
            values[d["knob"]].append(d["value"])
    coverage: dict[str, dict[str, str]] = {}
    for knob, choices in values.items():
        param = KNOBS.get(knob, knob)
        coverage[knob] = {}
        for choice in choices:
            made = [c for c in candidates if _same(c["params"].get(param), choice)
                    and c["status"] not in ("failed", "skipped")]
            why = next((d["why"] for d in dropped if d["knob"] == knob
                        and _same(d["value"], choice)), None)
            coverage[knob][str(choice)] = (f"{len(made)} candidates" if made else
                                           f"dropped: {why}" if why else "not reached")
    statuses: dict[str, int] = {}
    for c in candidates:
        statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    won = result.get("winner") or {}
    failed = [{"name": c["name"], "status": c["status"], "why": c.get("why", "")}
              for c in candidates if c["status"] in ("failed", "skipped")]
    return {"coverage": coverage, "statuses": statuses, "failed": failed,
            "notes": result.get("notes") or [], "winner": won.get("name"),
            "speedup": won.get("speedup"), "drop_points": won.get("drop_points"),
            "why": result.get("why", ""),
            "goal_met": not failed and all(not v.startswith("not reached")
                                           for knob in coverage.values() for v in knob.values())}


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def section(data: dict[str, Any]) -> str:
    rows = []
    for r in data["archs"]:
        if "coverage" not in r:
            rows.append([r["arch"], f"exit {r['exit']}", "-", "-", "-", "-", r["seconds"]])
            continue
        cov = "; ".join(f"{knob}: " + ", ".join(f"{v} {s.split(':')[0]}" for v, s in c.items())
                        for knob, c in r["coverage"].items())
        rows.append([r["arch"], cov, ", ".join(f"{k} {v}" for k, v in r["statuses"].items()),
                     len(r["failed"]), r["winner"] or "none",
                     "met" if r["goal_met"] else "MISSED", r["seconds"]])
    text = (f"### `edgekit optimize` on torchvision architectures (64×64, random weights, default "
            f"space, `--time-budget {data['budget']}`, `local-cpu`)\n\n"
            + md_table(["model", "each knob value: candidates made / dropped / not reached",
                        "candidates by status", "failed or skipped", "winner",
                        "goal (every knob covered, none failed)", "seconds"], rows))
    reasons = sorted({f"{knob} {v}: {s[len('dropped: '):]}" for r in data["archs"]
                      for knob, c in r.get("coverage", {}).items() for v, s in c.items()
                      if s.startswith("dropped")})
    if reasons:
        text += "\nDropped, with the reason optimize gave: " + "; ".join(reasons) + "."
    return text + (f"\nLabels are the original's own top-1 (agreement), {data['train_images']} "
                   f"training and {data['eval_images']} evaluation images; details per candidate in "
                   "[optimize-archs.json](benchmarks/results/optimize-archs.json).\n")


README_SECTIONS = {"optimize-archs": ("optimize-archs", section)}


def main() -> dict[str, Any]:
    data = {"budget": BUDGET, "resolution": RES, "classes": CLASSES, "train_images": TRAIN,
            "eval_images": EVAL, "archs": [run_arch(a) for a in ARCHS]}
    text = section(data)
    write_results("optimize-archs", data, text,
                  checkpoints={a: RANDOM_WEIGHTS for a in ARCHS})
    return {"readme": {"optimize-archs": text}}

"""Peak memory of evaluating and calibrating from a large image folder (issue 16 part 1).

Generates a folder of BENCH_MEMORY_IMAGES (default 20,000) random 224×224 RGB JPEGs in 10 class
folders under .cache/bench-memory/ (kept for reruns), exports torchvision mobilenet_v3_small
(random weights, 10 classes, 1×3×224×224, ImageNet preprocessing) to ONNX, then runs in fresh
processes, each one's peak RSS read with getrusage(RUSAGE_CHILDREN) by a wrapper process:

  1. evaluation: `edgekit bench OUT --eval FOLDER` (ONNX Runtime, batch 1): every image of the
     folder is decoded, preprocessed and inferred, a chunk at a time;
  2. calibration: `edgekit compress OUT/model.onnx --int8 --calib FOLDER --calib-size 512`.

Reading the folder whole, as edgekit did before, would hold N×3×224×224 float32 (N=20,000:
12 GB) before any inference. The goal: each peak under 2 GiB.

Run: `.venv/bin/python benchmarks/run.py memory` (about 2 min to write the 20,000 JPEGs once,
then about 5–10 min for the evaluation on 2 cores). `--quick` (300 images) or
BENCH_MEMORY_IMAGES=500 proves it quickly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import QUICK, RANDOM_WEIGHTS, ROOT, md_table, write_results

WORK = ROOT / ".cache" / "bench-memory"
CLASSES = 10
SIDE = 224
GOAL_MB = 2048

WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'RC', rc)")


def make_folder(count: int) -> Path:
    """count random-noise 224×224 JPEGs (smooth blobs, so they compress like photos)."""
    import numpy as np
    from PIL import Image

    folder = WORK / f"images-{count}"
    done = folder / ".complete"
    if done.exists():
        return folder
    rng = np.random.default_rng(0)
    for i in range(count):
        cls = folder / f"class{i % CLASSES:02d}"
        cls.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (14, 14, 3), dtype=np.uint8)
        Image.fromarray(small).resize((SIDE, SIDE), Image.BICUBIC).save(cls / f"{i:06d}.jpg", quality=85)
    done.write_text(str(count))
    return folder


def export_model(folder: Path) -> Path:
    import torch
    import torchvision

    out = WORK / "model"
    if (out / "model.onnx").exists():
        return out
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=CLASSES).state_dict(),
               WORK / "mnv3s.pt")
    subprocess.run([sys.executable, "-m", "edgekit", "export", str(WORK / "mnv3s.pt"),
                    "--arch", "torchvision.models:mobilenet_v3_small", "--arch-kwargs",
                    json.dumps({"num_classes": CLASSES}), "--preprocessing", "imagenet",
                    "--parity-data", str(folder),
                    "-o", str(out)], check=True)
    return out


def peak_mb(argv: list[str]) -> tuple[float, int]:
    env = {**os.environ, "EDGEKIT_NO_PROGRESS": "1"}
    res = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True,
                         env=env)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("PEAK_KB"))
    _, kb, _, rc = line.split()
    if int(rc) != 0:
        sys.stderr.write(res.stderr[-3000:])
    return int(kb) / 1024, int(rc)


def main() -> dict[str, Any]:
    count = int(os.environ.get("BENCH_MEMORY_IMAGES", "300" if QUICK else "20000"))
    WORK.mkdir(parents=True, exist_ok=True)
    folder = make_folder(count)
    model = export_model(folder)
    profile = WORK / "memory-cpu.yaml"
    profile.write_text("schema_version: 1\nname: memory-cpu\nkind: cpu\nthreads: 2\n"
                       "batch_sizes: [1]\nruntimes: {onnxruntime: {precisions: [fp32, int8]}}\n"
                       "latency: {warmup_count: 2, warmup_seconds: 0.0, min_queries: 10, "
                       "min_seconds: 0.05, max_seconds: 2.0}\n")
    edgekit = [sys.executable, "-m", "edgekit"]
    data: dict[str, Any] = {"images": count, "image_size": SIDE, "goal_mb": GOAL_MB,
                            "whole_folder_float32_mb": round(count * 3 * SIDE * SIDE * 4 / 2**20),
                            "calib_size": min(512, count)}
    runs = {
        "evaluate": edgekit + ["bench", str(model), "--eval", str(folder), "--device", str(profile),
                               "--json"],
        "calibrate": edgekit + ["compress", str(model / "model.onnx"), "--int8", "--calib",
                                str(folder), "--calib-size", str(data["calib_size"]), "-o", str(WORK / "int8"),
                                "--overwrite", "--json"],
    }
    for name, argv in runs.items():
        mb, rc = peak_mb(argv)
        data[name] = {"peak_rss_mb": round(mb, 1), "exit_code": rc, "command": " ".join(argv[1:])}
    markdown = readme_section(data)
    if count == 20000 or QUICK:  # quick mode writes the copy of the README under .cache/
        data["readme"] = {"memory": markdown}
    write_results("memory" if count == 20000 else f"memory-{count}", data, markdown,
                  checkpoints={"mobilenet_v3_small": RANDOM_WEIGHTS})
    return data


def readme_section(data: dict[str, Any]) -> str:
    """README section memory (from benchmarks/results/memory.json)."""
    rows = [[step, data["images"], round(data[step]["peak_rss_mb"]), data["goal_mb"],
             "yes" if data[step]["exit_code"] == 0 and data[step]["peak_rss_mb"] < data["goal_mb"]
             else "NO"] for step in ("evaluate", "calibrate")]
    return ("### Peak memory from a 224×224 JPEG folder (`python benchmarks/run.py memory`)\n\n"
            + md_table(["step", "images", "peak RSS MB", "goal MB", "met"], rows)
            + f"\nEvaluate: `edgekit bench` of mobilenet_v3_small (random weights) on every image; "
            f"calibrate: `edgekit compress --int8 --calib-size {data['calib_size']}`. Reading the folder whole as "
            f"float32 would take {data['whole_folder_float32_mb']:,} MB.\n")


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"memory": ("memory", readme_section)}


if __name__ == "__main__":
    main()

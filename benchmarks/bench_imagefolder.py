"""The image-folder recipe (issue 16 part 4): a user's RGB photo folder and a torchvision
MobileNet, end to end, exactly as the README tells a user to run it:

    python scripts/fashion-mnist-to-folders.py        # data/fashion-mnist-64/{train,test}
    edgekit run recipes/imagefolder-mobilenet.yaml    # train, prune, distill, int8, export, validate

Fashion-MNIST written as 64×64 RGB JPEGs in class folders (60,000 train, 10,000 test) stands in
for the user's images. The recipe trains mobilenet_v3_small on the train folder (its checkpoint
is cached under $EDGEKIT_CACHE/models/ and reused by later runs; its sha256 and TrainConfig are
recorded here), then compresses, exports to OpenVINO fp32 and int8 and validates every artifact
on local-cpu at batch 1 with top-1 on the whole test folder. Every step streams the folders.

Run: `.venv/bin/python benchmarks/run.py imagefolder` on a quiet machine: about 1 min to write
the folders once, then the recipe: training 3 epochs of 60,000 64×64 images and distilling one
on 2 cores is most of it (30–60 min in all, estimated from the quick run); the validation about
5 min. `--quick`: 300 images per split, 1 epoch, a short protocol (no claims).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    QUICK,
    ROOT,
    checkpoint_provenance,
    quick_protocol,
    tally_latency,
    work_dir,
    write_results,
)

RECIPE = ROOT / "recipes" / "imagefolder-mobilenet.yaml"
WORK = work_dir("imagefolder")
QUICK_IMAGES = 300  # per split


def make_folders() -> Path:
    """scripts/fashion-mnist-to-folders.py (kept when already written): the data folder."""
    data = WORK / f"fashion-mnist-64-{QUICK_IMAGES}" if QUICK else ROOT / "data" / "fashion-mnist-64"
    args = ["--limit", str(QUICK_IMAGES), "-o", str(data)] if QUICK else []
    subprocess.run([sys.executable, str(ROOT / "scripts" / "fashion-mnist-to-folders.py"), *args],
                   check=True)
    return data


def recipe_file(data: Path) -> Path:
    """The shipped recipe; in quick mode a copy on the small folders with one epoch, a small
    calibration set and the quick protocol."""
    if not QUICK:
        return RECIPE
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["model"]["train"] = {**recipe["model"]["train"], "epochs": 1}
    recipe["data"] = {"train": str(data / "train"), "calib": str(data / "train"),
                      "eval": str(data / "test")}
    recipe["steps"] = [{"quantize": {"calib_size": 32}} if "quantize" in s else s
                       for s in recipe["steps"]]
    recipe["devices"][0]["latency"] = quick_protocol().model_dump()
    path = WORK / "imagefolder-mobilenet-quick.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_recipe(recipe: Path, out: Path) -> tuple[dict[str, Any], float]:
    """`edgekit run RECIPE -o OUT --fresh --json` from the repository's root (where the shipped
    recipe's data/ paths point): its JSON result and its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), "EDGEKIT_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "edgekit", "run", str(recipe), "-o", str(out), "--fresh",
           "--json"]
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    seconds = time.perf_counter() - began
    if proc.returncode not in (0, 1):  # 1: the budget failed; still a result
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: "
                           f"{proc.stderr.strip().splitlines()[-3:]}")
    result = json.loads(proc.stdout)
    tally_latency(records_of(result), f"edgekit run {recipe.name}")  # (issue 18)
    return result, seconds


def records_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The validation records of the run, without what a README table does not show."""
    from edgekit.results.store import open_store

    run_ids = [s["run_id"] for s in result["devices"].values() if s.get("run_id")]
    with open_store(result["store"]) as store:
        records = [r for run_id in run_ids for r in store.records(run_id=run_id)]
    drop = ("environment", "samples_ms", "profile")
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def trained_checkpoint(out: Path) -> Path:
    """The checkpoint the recipe started from (its run:model stage's input)."""
    manifest = json.loads((out / "manifest.json").read_text())
    stage = next(s for s in manifest["stages"] if s["stage"] == "run:model")
    return Path(stage["inputs"]["checkpoint"]["path"])


def readme_section(data: dict[str, Any]) -> str:
    """README section imagefolder (from benchmarks/results/imagefolder.json)."""
    from edgekit.results.table import gate_markdown

    ckpt = next(iter(data["checkpoints"].values()))
    cfg = ckpt.get("train_config") or {}
    stages = ", ".join(f"{s['stage']} {s['seconds']:.0f} s" for s in data["stages"])
    return (
        "### Your own images: an RGB image folder and a torchvision MobileNet "
        "(`python benchmarks/run.py imagefolder`)\n\n"
        f"`python scripts/fashion-mnist-to-folders.py && edgekit run "
        f"recipes/imagefolder-mobilenet.yaml`: Fashion-MNIST as {data['image_size']}×"
        f"{data['image_size']} RGB JPEGs in class folders ({data['train_images']:,} train, "
        f"{data['test_images']:,} test), mobilenet_v3_small trained "
        f"{cfg.get('epochs', '?')} epoch{'' if cfg.get('epochs') == 1 else 's'} on the train "
        f"folder, then {data['steps']}; "
        f"top-1 on the whole test folder, local-cpu, batch 1.\n\n"
        + gate_markdown(data["records"])
        + f"\nThe whole run took {data['seconds'] / 60:.0f} min ({stages}"
        + ("; the trained checkpoint was reused from an earlier run" if data["reused_model"]
           else "; training included") + "). Checkpoint sha256 and TrainConfig: "
        "[benchmarks/results/imagefolder.json](benchmarks/results/imagefolder.json).\n")


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"imagefolder": ("imagefolder", readme_section)}


def main() -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    data_folder = make_folders()
    recipe = recipe_file(data_folder)
    from edgekit.recipe import load_recipe

    r = load_recipe(recipe)
    out = WORK / "out"
    cache = Path(os.environ.get("EDGEKIT_CACHE", ROOT / ".cache")) / "models"
    before = set(cache.glob("*.pt")) if cache.is_dir() else set()
    result, seconds = run_recipe(recipe, out)
    checkpoint = trained_checkpoint(out)

    def count(split: str) -> int:
        return sum(1 for p in (data_folder / split).rglob("*.jpg"))

    data: dict[str, Any] = {
        "recipe": str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT) else str(recipe),
        "image_size": r.input.shape[-1], "train_images": count("train"),
        "test_images": count("test"),
        "steps": " → ".join(name for name, _ in r.step_list()),
        "seconds": round(seconds, 1), "reused_model": checkpoint in before,
        "stages": [{"stage": s["stage"], "status": s["status"], "seconds": s["seconds"]}
                   for s in result["stages"]],
        "passed": result["passed"], "records": records_of(result)}
    checkpoints = {"mobilenet_v3_small": checkpoint_provenance(checkpoint)}
    markdown = readme_section({**data, "checkpoints": checkpoints})
    data["readme"] = {"imagefolder": markdown}
    write_results("imagefolder", data, markdown, checkpoints=checkpoints)
    return data


if __name__ == "__main__":
    main()

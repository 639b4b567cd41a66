"""Distillation throughput (issue 28 parts 1 and 2): images/s of one distillation epoch, per
precision and memory layout, with the teacher run on the fly or read from the teacher cache.

Models: edgekit.zoo's resnet18_small (1×28×28, the optimize benchmark's ResNet-18) and
torchvision mobilenet_v3_small at 3×64×64, 10 classes, random weights (torch.manual_seed(0)):
throughput does not depend on the weights. The teacher is the model, the student a fresh copy
of the same architecture (the most a distillation of it costs; a pruned student is cheaper),
trained by edgekit's trainer (edgekit.zoo.train.fit: augmentation, AdamW, cosine schedule) on
BENCH_TRAIN_IMAGES random uint8 images per model (content does not change the speed).

Per model, each configuration is one epoch of `fit` with a forced TrainPlan: fp32, fp32 +
channels_last, bf16 autocast, bf16 + channels_last (bf16 only where the CPU has AVX-512 BF16 or
AMX), each with the teacher on the fly and cached (the cache built by an untimed run first, which
also warms the kernels). Configurations run in interleaved rounds (BENCH_ROUNDS, default 2) and
the best epoch of each counts; ratios are within one run. What `--train-precision auto` chooses
here (its micro-benchmark) is recorded too. With a CUDA GPU, the same on `cuda:0`.

Run: `.venv/bin/python benchmarks/run.py train_speed` on a quiet machine (1,024 images per model: about
10-15 min on 2 cores; 128 images were too few, two batches whose noise swamped the ratios), `--quick` in
seconds. Writes benchmarks/results/train-speed.json and .md. A shared or busy machine skews the
absolute numbers; compare the ratios measured in the same run.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("EDGEKIT_NO_PROGRESS", "1")  # before edgekit.progress reads it
from typing import Any

from common import QUICK, RANDOM_WEIGHTS, md_table, work_dir, write_results

IMAGES = int(os.environ.get("BENCH_TRAIN_IMAGES") or (64 if QUICK else 0)) or None
ROUNDS = int(os.environ.get("BENCH_ROUNDS") or (1 if QUICK else 2))
THREADS = int(os.environ.get("BENCH_THREADS") or 2)
BATCH = 64


def models() -> dict[str, dict[str, Any]]:
    """name -> {build, shape (1,C,H,W), images}: the two models the issue names."""
    import torchvision

    from edgekit.zoo import resnet18_small

    return {
        "resnet18_small": {"build": lambda: resnet18_small(), "shape": (1, 1, 28, 28),
                           "images": IMAGES or 1024},
        "mobilenet_v3_small@64": {
            "build": lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
            "shape": (1, 3, 64, 64), "images": IMAGES or 1024},
    }


def raw_images(shape: tuple[int, ...], count: int):
    import numpy as np

    from edgekit.data import RawImages

    rng = np.random.default_rng(0)
    c, h, w = shape[1:]
    images = rng.integers(0, 256, (count, h, w, c) if c > 1 else (count, h, w), dtype=np.uint8)
    return RawImages(images, rng.integers(0, 10, count).astype(np.int64), "random uint8")


def one_epoch(teacher, student, raw, spec, plan, cached: bool) -> dict[str, Any]:
    """One distillation epoch of a copy of `student` under `plan`; its history's numbers."""
    from edgekit.passes.distill import distillation_loss
    from edgekit.zoo.teacher import TeacherLogits
    from edgekit.zoo.train import FitOptions, TrainConfig, fit

    logits = TeacherLogits(teacher, cache=cached)
    cfg = TrainConfig(epochs=1, batch_size=BATCH, warmup_epochs=0, num_threads=THREADS)
    history = fit(copy.deepcopy(student), raw, spec, None, cfg,
                  options=FitOptions(loss_fn=distillation_loss(2.0, 0.5), train=plan,
                                     teacher=logits),
                  description="bench")
    epoch = history["epochs"][0]
    return {"images_per_s": epoch["images_per_s"], "teacher_forwards": logits.forwards,
            "cached_epochs": logits.cached_epochs}


def measure_model(name: str, entry: dict[str, Any], devices: list[str]) -> dict[str, Any]:
    import torch

    from edgekit.spec import InputSpec
    from edgekit.zoo.accel import TrainPlan, TrainSettings, bf16_supported, plan_training

    torch.manual_seed(0)
    teacher = entry["build"]().eval()
    student = entry["build"]()
    shape = entry["shape"]
    c = shape[1]
    spec = InputSpec(**{**InputSpec().with_shape(shape).model_dump(), "mean": (0.5,) * c,
                        "std": (0.25,) * c})
    raw = raw_images(shape, entry["images"])
    configs = []
    for device in devices:
        for precision in ["fp32"] + (["bf16"] if bf16_supported(device) else []):
            for channels_last in (False, True):
                for cached in (False, True):
                    configs.append({"device": device, "precision": precision,
                                    "channels_last": channels_last,
                                    "teacher": "cached" if cached else "on the fly"})
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        for cfg in configs:  # untimed: builds each precision's teacher cache (its key has the
            # precision, not the layout), warms the kernels; the rounds' best epoch counts
            if cfg["teacher"] == "cached" and not cfg["channels_last"]:
                plan = TrainPlan(cfg["device"], cfg["precision"], False, "bench")
                one_epoch(teacher, student, raw, spec, plan, cached=True)
        for _ in range(ROUNDS):
            for cfg in configs:
                plan = TrainPlan(cfg["device"], cfg["precision"], cfg["channels_last"], "bench")
                run = one_epoch(teacher, student, raw, spec, plan, cfg["teacher"] == "cached")
                cfg.setdefault("runs", []).append(run["images_per_s"])
                cfg["teacher_forwards"] = run["teacher_forwards"]
        auto = {d: plan_training(student, shape, BATCH, TrainSettings(device=d, precision="auto"))
                .record() for d in devices}
    finally:
        torch.set_num_threads(previous)
    for cfg in configs:
        cfg["images_per_s"] = max(cfg["runs"])
    return {"model": name, "input": list(shape), "images": entry["images"], "batch": BATCH,
            "configs": configs, "ratios": ratios(configs), "auto_choice": auto}


def label(cfg: dict[str, Any]) -> str:
    return cfg["precision"] + ("+channels_last" if cfg["channels_last"] else "")


def ratios(configs: list[dict[str, Any]]) -> dict[str, float]:
    """Speed-ups within the run: each option against fp32 on the fly on its device, and the
    cache against the fly per option."""
    out: dict[str, float] = {}
    by = {(c["device"], label(c), c["teacher"]): c["images_per_s"] for c in configs}
    for (device, name, teacher), speed in by.items():
        base = by[(device, "fp32", "on the fly")]
        out[f"{device} {name}, teacher {teacher} / fp32 on the fly"] = round(speed / base, 2)
        if teacher == "cached":
            out[f"{device} {name}: cached / on the fly"] = round(
                speed / by[(device, name, "on the fly")], 2)
    return out


def markdown(data: dict[str, Any]) -> str:
    parts = []
    for result in data["models"]:
        rows = []
        for cfg in result["configs"]:
            base = next(c for c in result["configs"] if c["device"] == cfg["device"] and
                        label(c) == "fp32" and c["teacher"] == "on the fly")
            rows.append([cfg["device"], label(cfg), cfg["teacher"],
                         f"{cfg['images_per_s']:.0f}",
                         f"{cfg['images_per_s'] / base['images_per_s']:.2f}×",
                         str(cfg["teacher_forwards"])])
        auto = "; ".join(f"{d}: {a['precision']}{'+channels_last' if a['channels_last'] else ''}"
                         for d, a in result["auto_choice"].items())
        parts.append(f"**{result['model']}** ({'×'.join(map(str, result['input'][1:]))}, "
                     f"{result['images']} images, batch {result['batch']}; `auto` chooses "
                     f"{auto})\n\n" + md_table(
                         ["device", "precision", "teacher", "images/s", "vs fp32 on the fly",
                          "teacher forwards"], rows))
    return ("Distillation throughput, one epoch, best of "
            f"{data['rounds']} interleaved rounds, {data['threads']} threads:\n\n"
            + "\n\n".join(parts) + "\n")


def section(data: dict[str, Any]) -> str:
    """README section train-speed (from benchmarks/results/train-speed.json)."""
    return ("### Distillation throughput on this machine (`python benchmarks/run.py train_speed`)"
            "\n\n" + markdown(data) + "\nAbsolute images/s depend on how busy the machine was; "
            "the ratios are within one run. [train-speed.json](benchmarks/results/train-speed.json)"
            "\n")


README_SECTIONS = {"train-speed": ("train-speed", section)}


def main() -> dict[str, Any]:
    import torch

    os.environ["EDGEKIT_CACHE"] = str(work_dir("train-speed") / "cache")  # its own teacher cache
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    results = [measure_model(name, entry, devices) for name, entry in models().items()]
    data = {"models": results, "rounds": ROUNDS, "threads": THREADS, "devices": devices,
            "note": "ratios within this run; absolute images/s depend on how busy the machine "
                    "was"}
    write_results("train-speed", data, markdown(data),
                  checkpoints={r["model"]: RANDOM_WEIGHTS for r in results})
    return {**data, "readme": {"train-speed": section(data)}}


if __name__ == "__main__":
    main()

"""The teacher's forward passes: PyTorch against ONNX Runtime (edgekit/zoo/teacher_engine.py).

Distillation's teacher only runs inference; where its logits are computed (a teacher-cache miss,
or the cache off), edgekit runs them on ONNX Runtime when its one-off micro-benchmark measured
that faster here. This script measures what that decision rests on, over more images than the
micro-benchmark: for the models of bench_train_speed.py (resnet18_small at 1×28×28,
torchvision mobilenet_v3_small at 3×64×64, random weights: speed does not depend on them), the
teacher's images/s in eval mode, fp32 (PyTorch in the layout edgekit's training plan measures
faster here), batch 64, BENCH_TEACHER_IMAGES images (1,024) per round,
PyTorch eager and ONNX Runtime (the teacher's export, CPU provider) in interleaved rounds
(BENCH_ROUNDS, 3), the best round of each; then what `teacher_engine.choose` decides for one
60,000-image epoch (its own measurement, in a fresh cache).

Run: `.venv/bin/python benchmarks/run.py teacher_engine` on a quiet machine (~3 min here).
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("EDGEKIT_NO_PROGRESS", "1")
from typing import Any

from common import QUICK, RANDOM_WEIGHTS, md_table, write_results

IMAGES = int(os.environ.get("BENCH_TEACHER_IMAGES") or (128 if QUICK else 1024))
ROUNDS = int(os.environ.get("BENCH_ROUNDS") or (1 if QUICK else 3))
THREADS = 2
BATCH = 64  # distillation's default batch (TrainConfig)
EPOCH = 60_000


def measure_model(name: str, build: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    import torch

    from edgekit.zoo.accel import TrainSettings, plan_training
    from edgekit.zoo.teacher_engine import OrtTeacher, agrees, choose, torch_forward

    torch.manual_seed(0)
    model = build().eval()
    plan = plan_training(model, shape, BATCH, TrainSettings(device="cpu", precision="fp32"))
    plan.place_model(model)
    x = torch.randn((IMAGES, *shape[1:]), generator=torch.Generator().manual_seed(0))
    session = OrtTeacher(model, x[:2], THREADS)
    engines = {"torch": lambda b: torch_forward(model, plan, b), "onnxruntime": session}
    best = dict.fromkeys(engines, float("inf"))
    for round_ in range(ROUNDS + 1):  # round 0 warms up
        for engine, run in engines.items():
            start = time.perf_counter()
            for i in range(0, IMAGES, BATCH):
                run(x[i:i + BATCH])
            if round_:
                best[engine] = min(best[engine], time.perf_counter() - start)
    reference, candidate = torch_forward(model, plan, x[:BATCH]), session(x[:BATCH])
    diff = float((reference - candidate).abs().max())
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("EDGEKIT_CACHE")
        os.environ["EDGEKIT_CACHE"] = cache
        try:
            _, chosen, why = choose(model, plan, x[:BATCH], EPOCH)
        finally:
            if previous is None:
                os.environ.pop("EDGEKIT_CACHE", None)
            else:
                os.environ["EDGEKIT_CACHE"] = previous
    speeds = {k: round(IMAGES / v, 1) for k, v in best.items()}
    return {"model": name, "shape": list(shape), "torch_plan": plan.label, "images_per_s": speeds,
            "ratio": round(speeds["onnxruntime"] / speeds["torch"], 2),
            "max_abs_diff": diff, "agrees": agrees(reference, candidate) is None,
            "export_s": round(session.export_s, 2),
            "epoch_s": {k: round(EPOCH / v) for k, v in speeds.items()},
            "choice": why, "chosen": "onnxruntime" if chosen is not None else "torch"}


def markdown(data: dict[str, Any]) -> str:
    rows = [[r["model"], "×".join(map(str, r["shape"][1:])),
             f"{r['images_per_s']['torch']} ({r['torch_plan']})",
             r["images_per_s"]["onnxruntime"], f"{r['ratio']:.2f}×",
             f"{r['epoch_s']['torch']} → {r['epoch_s']['onnxruntime']}",
             f"{r['max_abs_diff']:.1e}", r["export_s"], r["chosen"]] for r in data["models"]]
    return (md_table(["model", "input", "torch images/s", "onnxruntime images/s",
                      "onnxruntime ÷ torch", f"teacher s per {EPOCH:,} images", "max |Δ logit|",
                      "export s", "edgekit chooses"], rows)
            + f"\nfp32, eval mode, batch {BATCH}, {data['threads']} threads, {data['images']} "
              f"images a round, best of {data['rounds']} interleaved rounds; random weights. "
              "\"edgekit chooses\": `teacher_engine.choose` for one 60,000-image epoch, from "
              "its own measurement in a fresh cache.\n")


def section(data: dict[str, Any]) -> str:
    return ("### The teacher's forwards: PyTorch or ONNX Runtime "
            "(`python benchmarks/run.py teacher_engine`)\n\n" + markdown(data)
            + "[teacher-engine.json](benchmarks/results/teacher-engine.json)\n")


README_SECTIONS = {"teacher-engine": ("teacher-engine", section)}


def main() -> dict[str, Any]:
    import torch
    import torchvision

    from edgekit.zoo import resnet18_small

    torch.set_num_threads(THREADS)
    results = [measure_model("resnet18_small", resnet18_small, (1, 1, 28, 28)),
               measure_model("mobilenet_v3_small@64",
                             lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
                             (1, 3, 64, 64))]
    data = {"models": results, "rounds": ROUNDS, "threads": THREADS, "images": IMAGES,
            "batch": BATCH}
    write_results("teacher-engine", data, markdown(data),
                  checkpoints={r["model"]: RANDOM_WEIGHTS for r in results})
    return {**data, "readme": {"teacher-engine": section(data)}}


if __name__ == "__main__":
    main()

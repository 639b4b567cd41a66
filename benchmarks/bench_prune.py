"""Structured pruning (edgekit's prune pass) on this CPU.

1. Latency: torchvision resnet18 and mobilenet_v2 (random init, 1x3x224x224), unpruned and pruned
   at 50% of the channels (L1, local, round_to 8), exported to ONNX and timed side by side with
   ONNX Runtime on the CPU, batch 1, 2 threads. The runs alternate (unpruned, pruned, unpruned,
   pruned, ...) and each model's p50 comes from all its samples, so a load change on the machine
   hits both alike. The goal: pruned p50 at least 1.6x lower.
2. Accuracy (benchmarks/results/prune-zoo.*; BENCH_PRUNE_ZOO=0 or BENCH_PRUNE_LATENCY=0 leaves
   a part out; BENCH_PRUNE_EPOCHS sets the epochs, 2): lenet5,
   cnn_gru and cnn_lstm from .cache/zoo/NAME.pt (benchmarks/bench_zoo.py), pruned with each of
   ZOO_CASES and distilled from the unpruned model on the Fashion-MNIST train split; MACs
   (edgekit.passes.stats.model_cost), params and top-1 on the whole test split (10,000 images)
   before, after pruning and after distillation. Several minutes per case on 2 cores.

Run: `.venv/bin/python benchmarks/run.py prune` (or `make bench`) on a quiet machine: about 3
minutes of latency, then about 20-30 minutes for the four zoo cases. README sections: prune-cpu,
prune-zoo.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from typing import Any

from common import (
    QUICK,
    RANDOM_WEIGHTS,
    checkpoint_provenance,
    md_table,
    quick_protocol,
    time_alternating,
    train_source,
    work_dir,
    write_results,
    zoo_checkpoint,
)

WORK = work_dir("prune")
THREADS = 2
RATIO = 0.5
ROUND_TO = 8
ROUNDS = 1 if QUICK else 3  # alternating latency runs per model
LATENCY_MODELS = ("mobilenet_v2",) if QUICK else ("resnet18", "mobilenet_v2")
# (model, the prune step's config, the `edgekit compress` flags that build it). lenet5 keeps
# fc1/fc2 (2% of its MACs, much of its capacity) in the first case and not in the second; the
# hybrids take a MACs budget just under half and rank channels by BatchNorm scale, which keeps
# far more accuracy before distillation than L1.
ZOO_CASES = [
    ("lenet5", {"ratio": 0.5, "ignore": ["fc1", "fc2"]},
     "--prune 0.5 --prune-ignore fc1 --prune-ignore fc2"),
    ("lenet5", {"ratio": 0.5}, "--prune 0.5"),
    ("cnn_gru", {"target_macs": 0.49, "importance": "bn-scale"},
     "--target-macs 0.49 --importance bn-scale"),
    ("cnn_lstm", {"target_macs": 0.49, "importance": "bn-scale"},
     "--target-macs 0.49 --importance bn-scale"),
]
DISTILL_EPOCHS = int(os.environ.get("BENCH_PRUNE_EPOCHS", "1" if QUICK else "2"))


def protocol():
    from edgekit.runtimes.latency import LatencyProtocol

    if QUICK:
        return quick_protocol()
    return LatencyProtocol(warmup_count=10, warmup_seconds=0.3, min_queries=150,
                           min_seconds=2.0, max_seconds=15.0)


def latency_pair(name: str) -> dict[str, Any]:
    """Export `name` unpruned and pruned to ONNX, time both alternately; one result dict."""
    import numpy as np
    import torch

    from edgekit.io.models import IMAGENET_SPEC, ModelBundle, build_arch
    from edgekit.passes.prune import prune_model
    from edgekit.passes.stats import model_cost
    from edgekit.pipeline import export_artifact
    from edgekit.runtimes.ort import OrtRunner

    torch.manual_seed(0)
    arch = f"torchvision.models:{name}"
    model = build_arch(arch).eval()
    pruned = copy.deepcopy(model)
    began = time.perf_counter()
    result = prune_model(pruned, IMAGENET_SPEC, ratio=RATIO, round_to=ROUND_TO)
    prune_s = time.perf_counter() - began
    parity_x = np.random.default_rng(0).standard_normal((4, 3, 224, 224), dtype=np.float32)
    runners, costs = {}, {}
    for label, m in (("unpruned", model), ("pruned", pruned)):
        folder = WORK / name / label
        shutil.rmtree(folder, ignore_errors=True)
        bundle = ModelBundle(m, IMAGENET_SPEC, arch, {}, [], None, {"name": name})
        art, _ = export_artifact(bundle, "onnx", folder, parity_data=parity_x)
        runners[label] = OrtRunner(art.path, IMAGENET_SPEC, threads=THREADS,
                                   options={"providers": ["CPUExecutionProvider"]})
        costs[label] = {**model_cost(m, IMAGENET_SPEC), "onnx_bytes": art.path.stat().st_size}
    latency = time_alternating(runners, parity_x[:1], protocol(), ROUNDS)
    out: dict[str, Any] = {"model": name, "prune_seconds": prune_s,
                           "skipped": result.skipped, "pruned_layers": len(result.pruned)}
    for label in ("unpruned", "pruned"):
        out[label] = {**costs[label], **latency[label]}
    out["speedup_p50"] = out["unpruned"]["p50_ms"] / out["pruned"]["p50_ms"]
    out["speedup_min"] = out["unpruned"]["min_ms"] / out["pruned"]["min_ms"]
    out["macs_ratio"] = out["unpruned"]["macs"] / out["pruned"]["macs"]
    return out


def zoo_row(name: str, prune_config: dict[str, Any], flags: str) -> dict[str, Any]:
    """Prune `name` with `prune_config` and distill it: the library calls behind `edgekit
    compress .cache/zoo/NAME.pt FLAGS --train fashion-mnist:train --eval fashion-mnist:test
    --distill-epochs N` (in quick mode on 2,000 training and 500 test images)."""
    from edgekit.io.models import load_model
    from edgekit.metrics import torch_top1
    from edgekit.passes.base import PassContext
    from edgekit.passes.distill import DistillPass
    from edgekit.passes.prune import PrunePass
    from edgekit.passes.stats import model_cost

    path = zoo_checkpoint(name)
    bundle = load_model(path)
    ctx = PassContext(out_dir=WORK / name / flags.replace(" ", ""), train_source=train_source(),
                      eval_source="fashion-mnist:test",
                      **({"eval_limit": 500} if QUICK else {}))
    ctx.original = copy.deepcopy(bundle)
    before = {**model_cost(bundle.model, bundle.spec),
              "top1": torch_top1(bundle.model, ctx.eval_set(bundle.spec))}
    hidden_before = getattr(getattr(bundle.model, "rnn", None), "hidden_size", None)
    began = time.perf_counter()
    bundle = PrunePass(prune_config).apply(bundle, ctx)
    pruned = ctx.report[-1]
    bundle = DistillPass({"epochs": DISTILL_EPOCHS, **({"limit": 2000} if QUICK else {})}
                         ).apply(bundle, ctx)
    distilled = ctx.report[-1]
    return {"model": name, "flags": flags, "checkpoint": checkpoint_provenance(path),
            "before": before, "pruned": pruned, "distilled": distilled,
            "hidden_before": hidden_before,
            "hidden_after": getattr(getattr(bundle.model, "rnn", None), "hidden_size", None),
            "seconds": time.perf_counter() - began, "eval_images": len(ctx.eval_set(bundle.spec))}


def cpu_section(data: dict[str, Any]) -> str:
    """README section prune-cpu (from benchmarks/results/prune.json): MACs and ONNX Runtime p50
    before and after pruning."""
    pairs = data["latency"]
    rows = [[f"{p['model']} pruned {data['ratio']:.0%} (L1, local, round-to {data['round_to']})",
             f"{p['unpruned']['macs'] / 1e6:.0f} M → {p['pruned']['macs'] / 1e6:.0f} M",
             f"{p['unpruned']['p50_ms']:.2f} → {p['pruned']['p50_ms']:.2f} (ORT)",
             f"{p['speedup_p50']:.2f}×", "[prune.md](benchmarks/results/prune.md)"] for p in pairs]
    return ("Pruning (random weights; batch 1, 224×224):\n\n"
            + md_table(["what", "MACs", "p50 ms before → after", "speed-up", "source"], rows))


def zoo_section(data: dict[str, Any]) -> str:
    """README section prune-zoo (from benchmarks/results/prune-zoo.json): the zoo models pruned
    and distilled."""
    zoo, epochs = data["cases"], data["distill_epochs"]
    rows = []
    for r in zoo:
        before, pruned, distilled = r["before"], r["pruned"], r["distilled"]
        hidden = r["hidden_after"]
        rows.append([r["model"], f"`{r['flags']}`",
                     f"{before['macs']:,} → {pruned['macs']:,} "
                     f"({before['macs'] / pruned['macs']:.2f}×)",
                     "–" if hidden is None else f"{r['hidden_before']} → {hidden}",
                     f"{before['top1']:.4f} → {pruned['top1']:.4f} → {distilled['top1']:.4f}",
                     f"{100 * (distilled['top1'] - before['top1']):.2f}".replace("-", "−")])
    images = zoo[0]["eval_images"] if zoo else 0
    return (f"### Pruning + distillation (`edgekit compress .cache/zoo/NAME.pt FLAGS --train "
            f"fashion-mnist:train --eval fashion-mnist:test --distill-epochs {epochs} "
            "-o out/`)\n\n"
            + md_table(["model", "FLAGS", "MACs", "RNN hidden",
                        "top-1 before → pruned → distilled", "Δ points"], rows)
            + f"\nTop-1 on {images:,} test images. Written by `benchmarks/bench_prune.py`; "
            "checkpoints' sha256 and TrainConfig in "
            "[benchmarks/results/prune-zoo.json](benchmarks/results/prune-zoo.json).\n")


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"prune-cpu": ("prune", cpu_section), "prune-zoo": ("prune-zoo", zoo_section)}


def enabled(part: str) -> bool:
    """BENCH_PRUNE_LATENCY=0 / BENCH_PRUNE_ZOO=0 leave a part out (both run by default)."""
    return os.environ.get(f"BENCH_PRUNE_{part.upper()}", "1") not in ("", "0")


def main() -> dict[str, Any]:
    """Both parts; each writes its own results file (prune, prune-zoo) and README section."""
    import torch

    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"readme": {}}
    for part, run in (("latency", latency_part), ("zoo", zoo_part)):
        if enabled(part):
            data = run()
            out[part] = data
            out["readme"] |= data["readme"]
    return out


def zoo_part() -> dict[str, Any]:
    """The zoo models pruned and distilled: benchmarks/results/prune-zoo.json, README prune-zoo."""
    zoo = [zoo_row(*case) for case in ZOO_CASES]
    data: dict[str, Any] = {"distill_epochs": DISTILL_EPOCHS, "cases": zoo}
    markdown = zoo_section(data)
    data["readme"] = {"prune-zoo": markdown}
    write_results("prune-zoo", data, markdown,
                  checkpoints={r["model"]: r["checkpoint"] for r in zoo})
    return data


def latency_part() -> dict[str, Any]:
    """Pruning's latency on ONNX Runtime: benchmarks/results/prune.json, README prune-cpu."""
    pairs = []
    for name in LATENCY_MODELS:
        began = time.perf_counter()
        pairs.append(latency_pair(name))
        print(f"   {name}: {time.perf_counter() - began:.0f} s", flush=True)
    from edgekit.validate.env import capture_environment

    env = capture_environment()
    headers = ["model", "MACs unpruned", "MACs pruned", "MACs ÷", "p50 ms unpruned",
               "p50 ms pruned", "p50 speed-up", "p99 ms unpruned", "p99 ms pruned",
               "min speed-up", "goal p50 ≥1.6×"]
    rows = [[p["model"], f"{p['unpruned']['macs'] / 1e6:.0f} M", f"{p['pruned']['macs'] / 1e6:.0f} M",
             f"{p['macs_ratio']:.2f}", p["unpruned"]["p50_ms"], p["pruned"]["p50_ms"],
             f"{p['speedup_p50']:.2f}×", p["unpruned"]["p99_ms"], p["pruned"]["p99_ms"],
             f"{p['speedup_min']:.2f}×", "yes" if p["speedup_p50"] >= 1.6 else "NO"]
            for p in pairs]
    markdown = (
        f"### Pruning 50% (L1, local, round_to {ROUND_TO}): ONNX Runtime latency on this CPU "
        f"({env['cpu']['model']}, {THREADS} threads, batch 1, 224×224, random init)\n\n"
        + md_table(headers, rows)
        + f"\n{ROUNDS} alternating runs per model (unpruned, pruned, ...), each >= "
        f"{protocol().min_queries} queries after warm-up; p50/p99 over all samples; 'min "
        "speed-up' compares the fastest queries, a check on the p50 ratio when other processes "
        "load the cores. MACs: edgekit.passes.stats.model_cost.\n")
    data: dict[str, Any] = {"threads": THREADS, "ratio": RATIO, "round_to": ROUND_TO,
                            "protocol": protocol().model_dump(), "latency": pairs}
    data["readme"] = {"prune-cpu": cpu_section(data)}
    write_results("prune", data, markdown,
                  checkpoints=dict.fromkeys(LATENCY_MODELS, RANDOM_WEIGHTS))
    return data


if __name__ == "__main__":
    main()

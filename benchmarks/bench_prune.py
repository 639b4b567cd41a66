"""Structured pruning (edgekit's prune pass) on this CPU.

1. Latency: torchvision resnet18 and mobilenet_v2 (random init, 1x3x224x224), unpruned and pruned
   at 50% of the channels (L1, local, round_to 8), exported to ONNX and timed side by side with
   ONNX Runtime on the CPU, batch 1, 2 threads. The runs alternate (unpruned, pruned, unpruned,
   pruned, ...) and each model's p50 comes from all its samples, so a load change on the machine
   hits both alike. The goal: pruned p50 at least 1.6x lower.
2. Accuracy (only with BENCH_PRUNE_ZOO=1; BENCH_PRUNE_EPOCHS sets the epochs, 2): lenet5, cnn_gru
   and cnn_lstm from .cache/zoo/NAME.pt, pruned with ZOO_SETTINGS (>= 3x / >= 2x fewer MACs) and
   distilled from the unpruned model on the Fashion-MNIST train split; MACs (edgekit.passes.stats.model_cost), params and top-1 on
   the whole test split (10,000 images) before, after pruning and after distillation. Takes
   several minutes per model on 2 cores, so it is off by default.

Run: `.venv/bin/python benchmarks/run.py prune` (or `make bench`) on a quiet machine;
`BENCH_PRUNE_ZOO=1 .venv/bin/python benchmarks/run.py prune` adds the accuracy table.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import time
from typing import Any

from common import ROOT, md_table, time_alternating, write_results

WORK = ROOT / ".cache" / "bench-prune"
ZOO = ROOT / ".cache" / "zoo"
THREADS = 2
RATIO = 0.5
ROUND_TO = 8
ROUNDS = 3  # alternating latency runs per model
LATENCY_MODELS = ("resnet18", "mobilenet_v2")
# Per zoo model: the prune step (as `edgekit compress` flags would build it). lenet5 keeps fc1/fc2
# (2% of its MACs, much of its capacity); the hybrids take a MACs budget just under half and
# rank channels by BatchNorm scale, which keeps far more accuracy before distillation than L1.
ZOO_SETTINGS = {
    "lenet5": ({"ratio": 0.5, "ignore": ["fc1", "fc2"]},
               "--prune 0.5 --prune-ignore fc1 --prune-ignore fc2"),
    "cnn_gru": ({"target_macs": 0.49, "importance": "bn-scale"},
                "--target-macs 0.49 --importance bn-scale"),
    "cnn_lstm": ({"target_macs": 0.49, "importance": "bn-scale"},
                 "--target-macs 0.49 --importance bn-scale"),
}
DISTILL_EPOCHS = int(os.environ.get("BENCH_PRUNE_EPOCHS", "2"))


def protocol():
    from edgekit.runtimes.latency import LatencyProtocol

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


def zoo_row(name: str) -> dict[str, Any] | None:
    """Prune `name` with its ZOO_SETTINGS and distill it: the library calls behind `edgekit
    compress .cache/zoo/NAME.pt FLAGS --train fashion-mnist:train --eval fashion-mnist:test
    --distill-epochs N`."""
    from edgekit.io.models import load_model
    from edgekit.passes.base import PassContext
    from edgekit.passes.distill import DistillPass
    from edgekit.passes.prune import PrunePass
    from edgekit.passes.stats import model_cost
    from edgekit.validate.torch_eval import torch_top1

    path = ZOO / f"{name}.pt"
    if not path.is_file():
        print(f"   {name}: {path} not found, skipped", flush=True)
        return None
    bundle = load_model(path)
    ctx = PassContext(out_dir=WORK / name, train_source="fashion-mnist:train",
                      eval_source="fashion-mnist:test")
    ctx.original = copy.deepcopy(bundle)
    before = {**model_cost(bundle.model, bundle.spec),
              "top1": torch_top1(bundle.model, ctx.eval_set(bundle.spec))}
    began = time.perf_counter()
    prune_config, flags = ZOO_SETTINGS[name]
    bundle = PrunePass(prune_config).apply(bundle, ctx)
    pruned = ctx.report[-1]
    bundle = DistillPass({"epochs": DISTILL_EPOCHS}).apply(bundle, ctx)
    distilled = ctx.report[-1]
    from edgekit.io.files import sha256_file

    return {"model": name, "flags": flags, "checkpoint_sha256": sha256_file(path),
            "before": before, "pruned": pruned, "distilled": distilled,
            "hidden_after": getattr(getattr(bundle.model, "rnn", None), "hidden_size", None),
            "seconds": time.perf_counter() - began, "eval_images": len(ctx.eval_set(bundle.spec))}


def main(with_zoo: bool | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    if with_zoo is None:
        with_zoo = os.environ.get("BENCH_PRUNE_ZOO", "") not in ("", "0")
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
    if with_zoo:
        zoo = [r for r in (zoo_row(n) for n in ZOO_SETTINGS) if r is not None]
        data["zoo"] = zoo
        zoo_headers = ["model", "flags", "MACs", "MACs pruned", "MACs ÷", "params ÷", "RNN hidden",
                       "top-1", "top-1 pruned", f"top-1 distilled ({DISTILL_EPOCHS} ep)", "Δ points"]
        zoo_rows = [[r["model"], f"`{r['flags']}`", f"{r['before']['macs']:,}", f"{r['pruned']['macs']:,}",
                     f"{r['before']['macs'] / r['pruned']['macs']:.2f}",
                     f"{r['before']['params'] / r['pruned']['params']:.2f}",
                     r["hidden_after"] or "-", f"{r['before']['top1']:.4f}",
                     f"{r['pruned']['top1']:.4f}", f"{r['distilled']['top1']:.4f}",
                     f"{100 * (r['distilled']['top1'] - r['before']['top1']):+.2f}"]
                    for r in zoo]
        markdown += (
            f"\n### Pruning then distilling the zoo models ({DISTILL_EPOCHS} epochs on the "
            "Fashion-MNIST train split, distill defaults; top-1 on the whole test split)\n\n"
            + md_table(zoo_headers, zoo_rows))
    write_results("prune", data, markdown)
    return data


if __name__ == "__main__":
    main()

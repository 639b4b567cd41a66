"""Depthwise-separable substitution (edgekit's dwsep pass) on this CPU.

torchvision resnet18 (random init, 1x3x224x224): every 3×3 conv (the four stages, `layer*`)
replaced by depthwise 3×3 + pointwise 1×1 at r = 1 (the MobileNet form, SVD-initialised), against
the original. Both are exported to ONNX (and from there to OpenVINO IR, fp32) and timed side by
side, batch 1, 2 threads, with ONNX Runtime and OpenVINO on the CPU. Runs alternate (original,
dwsep, original, dwsep, ...) per runtime and each model's p50 comes from all its samples, so a
load change on the machine hits both alike. MACs: edgekit.passes.stats.model_cost (conv MACs:
convolutions only). The goal for MACs: at least 5× fewer conv MACs. The latency ratio is reported,
not a goal: depthwise convolutions move more memory per MAC than dense ones, so the wall-clock
gain is smaller than the MACs ratio, and by how much depends on the runtime.

Run: `.venv/bin/python benchmarks/run.py dwsep` (or `make bench`) on a quiet machine: about 3
minutes. README section: dwsep-cpu.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

from common import (
    QUICK,
    RANDOM_WEIGHTS,
    ROOT,
    md_table,
    quick_protocol,
    time_alternating,
    work_dir,
    write_results,
)

WORK = work_dir("dwsep")
THREADS = 2
ROUNDS = 1 if QUICK else 3  # alternating latency runs per model and runtime
RANK = 1
INCLUDE = ["layer*"]  # resnet18's 3×3 convs; conv1 (7×7) and the 1×1 downsamples stay


def protocol():
    from edgekit.runtimes.latency import LatencyProtocol

    if QUICK:
        return quick_protocol()
    return LatencyProtocol(warmup_count=10, warmup_seconds=0.3, min_queries=150,
                           min_seconds=2.0, max_seconds=15.0)


def build_pair() -> dict[str, Any]:
    """resnet18 and its dwsep'd copy as ModelBundles, with their costs and the pass's report."""
    import copy

    import torch

    from edgekit.io.models import IMAGENET_SPEC, ModelBundle, build_arch
    from edgekit.passes.base import PassContext
    from edgekit.passes.dwsep import DwsepPass
    from edgekit.passes.stats import model_cost

    torch.manual_seed(0)
    arch = "torchvision.models:resnet18"
    original = ModelBundle(build_arch(arch).eval(), IMAGENET_SPEC, arch, {}, [], None,
                           {"name": "resnet18"})
    dwsep = copy.deepcopy(original)
    dwsep.meta["name"] = "resnet18-dwsep"
    ctx = PassContext(out_dir=WORK)
    began = time.perf_counter()
    dwsep = DwsepPass({"rank": RANK, "include": INCLUDE}).apply(dwsep, ctx)
    seconds = time.perf_counter() - began
    layers = [r for r in ctx.report if r.get("layer") and "macs_after" in r]
    return {"bundles": {"original": original, "dwsep": dwsep}, "pass_seconds": seconds,
            "replaced": len(layers),
            "max_init_error": max(r["init_error"] for r in layers),
            "costs": {label: model_cost(b.model, b.spec)
                      for label, b in (("original", original), ("dwsep", dwsep))}}


def export_both(bundles: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ONNX (parity-checked against torch) and OpenVINO IR fp32 for each model."""
    import numpy as np

    from edgekit.pipeline import export_artifact

    parity_x = np.random.default_rng(0).standard_normal((4, 3, 224, 224), dtype=np.float32)
    paths: dict[str, dict[str, Any]] = {}
    for label, bundle in bundles.items():
        folder = WORK / label
        shutil.rmtree(folder, ignore_errors=True)
        onnx_art, _ = export_artifact(bundle, "onnx", folder, parity_data=parity_x)
        paths[label] = {"onnx": onnx_art.path, "onnx_bytes": onnx_art.path.stat().st_size,
                        "parity": onnx_art.metrics.get("parity", {})}
        try:
            ov_art, _ = export_artifact(folder, "openvino", folder, precision="fp32",
                                        parity_data=parity_x)
            paths[label]["openvino"] = ov_art.path
        except Exception as exc:  # noqa: BLE001 - the ONNX numbers still stand
            paths[label]["openvino_error"] = str(exc).splitlines()[0]
    return paths


def cpu_section(data: dict[str, Any]) -> str:
    """README section dwsep-cpu (from benchmarks/results/dwsep.json): conv MACs and p50 before
    and after, per runtime."""
    costs, latency, rank = data["costs"], data["latency"], data["rank"]
    conv_ratio = costs["original"]["conv_macs"] / costs["dwsep"]["conv_macs"]
    p50 = {rt: (latency[rt]["original"]["p50_ms"], latency[rt]["dwsep"]["p50_ms"]) for rt in latency}
    names = {"onnxruntime": "ORT", "openvino": "OpenVINO"}
    return ("Depthwise-separable substitution (random weights; batch 1, 224×224):\n\n"
            + md_table(["what", "MACs", "p50 ms before → after", "speed-up", "source"], [[
                f"resnet18, every 3×3 conv depthwise-separable, r = {rank}",
                f"conv {costs['original']['conv_macs'] / 1e6:.0f} M → "
                f"{costs['dwsep']['conv_macs'] / 1e6:.0f} M ({conv_ratio:.2f}×)",
                ", ".join(f"{a:.2f} → {b:.2f} ({names.get(rt, rt)})" for rt, (a, b) in p50.items()),
                " / ".join(f"{a / b:.2f}×" for a, b in p50.values()),
                "[dwsep.md](benchmarks/results/dwsep.md)"]]))


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"dwsep-cpu": ("dwsep", cpu_section)}


def main() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from edgekit.io.models import IMAGENET_SPEC
    from edgekit.runtimes.base import get_runner
    from edgekit.validate.env import capture_environment

    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    pair = build_pair()
    paths = export_both(pair["bundles"])
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32)
    latency: dict[str, Any] = {}
    ort = get_runner("onnxruntime")
    latency["onnxruntime"] = time_alternating(
        {label: ort(p["onnx"], IMAGENET_SPEC, threads=THREADS,
                    options={"providers": ["CPUExecutionProvider"]}) for label, p in paths.items()}, x, protocol(), ROUNDS)
    if all("openvino" in p for p in paths.values()):
        ov = get_runner("openvino")
        latency["openvino"] = time_alternating(
            {label: ov(p["openvino"], IMAGENET_SPEC, threads=THREADS) for label, p in paths.items()},
            x, protocol(), ROUNDS)
    costs = pair["costs"]
    conv_ratio = costs["original"]["conv_macs"] / costs["dwsep"]["conv_macs"]
    env = capture_environment()
    headers = ["model", "conv MACs", "MACs", "params", "ONNX size",
               *[f"{rt} p50 ms" for rt in latency], *[f"{rt} p99 ms" for rt in latency]]
    rows = []
    for label in ("original", "dwsep"):
        rows.append([f"resnet18{'' if label == 'original' else f' dwsep r={RANK}'}",
                     f"{costs[label]['conv_macs'] / 1e6:.0f} M", f"{costs[label]['macs'] / 1e6:.0f} M",
                     f"{costs[label]['params'] / 1e6:.2f} M",
                     f"{paths[label]['onnx_bytes'] / 2**20:.1f} MB",
                     *[latency[rt][label]["p50_ms"] for rt in latency],
                     *[latency[rt][label]["p99_ms"] for rt in latency]])
    rows.append(["ratio (original ÷ dwsep)", f"{conv_ratio:.2f}×",
                 f"{costs['original']['macs'] / costs['dwsep']['macs']:.2f}×",
                 f"{costs['original']['params'] / costs['dwsep']['params']:.2f}×",
                 f"{paths['original']['onnx_bytes'] / paths['dwsep']['onnx_bytes']:.2f}×",
                 *[f"{latency[rt]['original']['p50_ms'] / latency[rt]['dwsep']['p50_ms']:.2f}×"
                   for rt in latency],
                 *[f"{latency[rt]['original']['p99_ms'] / latency[rt]['dwsep']['p99_ms']:.2f}×"
                   for rt in latency]])
    missing = [f"{label}: {p['openvino_error']}" for label, p in paths.items() if "openvino_error" in p]
    markdown = (
        f"### Depthwise-separable resnet18 (every 3×3 conv at r={RANK}) on this CPU "
        f"({env['cpu']['model']}, {THREADS} threads, batch 1, 224×224, random init)\n\n"
        + md_table(headers, rows)
        + f"\nGoal: ≥ 5× fewer conv MACs — {'met' if conv_ratio >= 5 else 'NOT met'} "
        f"({conv_ratio:.2f}×). {pair['replaced']} convs replaced in {pair['pass_seconds']:.1f} s. "
        f"{ROUNDS} alternating runs per model and runtime, each ≥ {protocol().min_queries} "
        "queries after warm-up; p50/p99 over all samples. MACs: edgekit.passes.stats.model_cost.\n"
        + (f"\nOpenVINO not timed: {'; '.join(missing)}\n" if missing else ""))
    data: dict[str, Any] = {
        "threads": THREADS, "rank": RANK, "include": INCLUDE, "protocol": protocol().model_dump(),
        "costs": costs, "conv_macs_ratio": conv_ratio, "replaced": pair["replaced"],
        "max_init_error": pair["max_init_error"], "latency": latency,
        "parity": {label: p["parity"] for label, p in paths.items()}, "openvino_errors": missing}
    data["readme"] = {name: render(data) for name, (_, render) in README_SECTIONS.items()}
    write_results("dwsep", data, markdown, checkpoints={"resnet18": RANDOM_WEIGHTS})
    return data


if __name__ == "__main__":
    main()

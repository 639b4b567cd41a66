"""Does edgekit's latency protocol agree with the tools people already trust?

Side by side, on the same machine, same models, same thread count, one request at a time:
  - OpenVINO: edgekit's OpenVINO runner vs `benchmark_app` (latency hint, one infer request,
    INFERENCE_NUM_THREADS and f32 inference precision set through -load_config, since
    benchmark_app refuses -nthreads/-nstreams together with a hint);
  - ONNX Runtime: edgekit's ORT runner vs a bare `session.run` loop timed with perf_counter
    (no edgekit code, the same session options).
The goal is p50 within 10%. Models: LeNet-5 (tens of microseconds: per-call overhead dominates),
the CNN+GRU hybrid, and ResNet-18 at 224×224 (tens of milliseconds: the kernels dominate). Weights
are untrained: latency does not depend on them. Run on a quiet machine; every other process on
the cores skews all of it.

    .venv/bin/python benchmarks/run.py protocol           # EDGEKIT_BENCH_SECONDS=12 by default

About 3 minutes (three models, two runtimes, 12 s per tool and pair plus warm-up and exports).
README section: protocol.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import QUICK, RANDOM_WEIGHTS, md_table, timed, write_results  # noqa: E402

TOTAL_SECONDS = float(os.environ.get("EDGEKIT_BENCH_SECONDS", "1" if QUICK else "12"))
ROUNDS = int(os.environ.get("EDGEKIT_BENCH_ROUNDS", "1" if QUICK else "3"))
SECONDS = max(1, round(TOTAL_SECONDS / ROUNDS))  # per measurement; ours and the anchor alternate
THREADS = int(os.environ.get("EDGEKIT_BENCH_THREADS", "2"))
MODELS = os.environ.get("EDGEKIT_BENCH_MODELS",
                        "lenet5" if QUICK else "lenet5,cnn_gru,resnet18").split(",")
TOLERANCE = 0.10


def build_models(folder: Path) -> dict[str, dict[str, Any]]:
    """ONNX fp32 + OpenVINO IR fp32 of each model, exported with edgekit."""
    import torch

    from edgekit.io.models import ModelBundle
    from edgekit.pipeline import export_artifact
    from edgekit.spec import InputSpec
    from edgekit.zoo import build

    torch.manual_seed(0)
    out = {}
    for name in MODELS:
        if name == "resnet18":
            import torchvision

            spec = InputSpec(shape=(1, 3, 224, 224), mean=(0.485, 0.456, 0.406),
                             std=(0.229, 0.224, 0.225))
            bundle = ModelBundle(torchvision.models.resnet18(weights=None).eval(), spec,
                                 "torchvision.models:resnet18", {}, meta={"name": name})
        else:
            bundle = build(name)
        model_dir = folder / name
        export_artifact(bundle, "onnx", model_dir, precision="fp32")
        entry = {"onnx": model_dir / "model.onnx", "spec": bundle.spec}
        if shutil.which("benchmark_app") or _benchmark_app_cmd():
            export_artifact(model_dir, "openvino", model_dir, precision="fp32")
            entry["xml"] = model_dir / "model.fp32.xml"
        out[name] = entry
    return out


def protocol():
    from edgekit.runtimes.latency import LatencyProtocol

    return LatencyProtocol(warmup_count=10, warmup_seconds=0.1 if QUICK else 0.5,
                           min_queries=100, min_seconds=SECONDS, max_seconds=SECONDS * 3)


def inputs(spec) -> Any:
    """Real Fashion-MNIST images for the zoo models, random normal for ResNet-18 at 224."""
    import numpy as np

    if spec.shape[1:] == (1, 28, 28):
        from edgekit.data import load_dataset

        return load_dataset("fashion-mnist:test", spec, limit=10).x[:1].copy()
    return np.random.default_rng(0).standard_normal(spec.shape, dtype=np.float32)


# ---------------------------------------------------------------- ONNX Runtime
def edgekit_ort(path: Path, spec, x) -> dict[str, Any]:
    from edgekit.runtimes.ort import OrtRunner

    runner = OrtRunner(path, spec, threads=THREADS, options={"providers": ["cpu"]})
    stats = timed(runner, x, protocol(), "edgekit ORT")
    return {"p50_ms": stats["p50_ms"], "count": stats["count"], "mean_ms": stats["mean_ms"],
            "disturbed": stats["disturbed"]}


def bare_ort(path: Path, x) -> dict[str, Any]:
    """The loop anyone would write: a session and perf_counter around session.run."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: x}
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        session.run(None, feeds)
    times = []
    end = time.perf_counter() + SECONDS
    while time.perf_counter() < end or len(times) < 100:
        t = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": statistics.median(times), "count": len(times),
            "mean_ms": statistics.fmean(times)}


# ---------------------------------------------------------------- OpenVINO
def edgekit_ov(path: Path, spec, x) -> dict[str, Any]:
    from edgekit.runtimes.openvino import OpenVinoRunner

    runner = OpenVinoRunner(path, spec, threads=THREADS,
                            options={"device": "CPU", "performance_hint": "latency"})
    stats = timed(runner, x, protocol(), "edgekit OpenVINO")
    return {"p50_ms": stats["p50_ms"], "count": stats["count"], "mean_ms": stats["mean_ms"],
            "config": runner.describe(), "disturbed": stats["disturbed"]}


def _benchmark_app_cmd() -> list[str] | None:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if Path(exe).exists():
        return [exe]
    try:
        import openvino.tools.benchmark.main  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "openvino.tools.benchmark.main"]


def _to_ms(value: str, unit: str) -> float:
    return float(value) / 1000 if unit == "us" else float(value)


def benchmark_app(path: Path, spec) -> dict[str, Any]:
    cmd = _benchmark_app_cmd()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(THREADS),
                                              "INFERENCE_PRECISION_HINT": "f32"}}))
        shape = "[" + ",".join(map(str, spec.shape)) + "]"
        argv = [*cmd, "-m", str(path), "-d", "CPU", "-hint", "latency", "-nireq", "1",
                "-t", str(int(SECONDS)), "-report_type", "no_counters", "-report_folder", tmp,
                "-shape", shape, "-load_config", str(config)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS * 6 + 120)
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"benchmark_app failed: {text[-1500:]}")

    def grab(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)\s*(ms|us)", text)
        if not m:
            raise RuntimeError(f"no {label} in benchmark_app's output: {text[-1500:]}")
        return _to_ms(m.group(1), m.group(2))

    count = re.search(r"Count:\s+(\d+)", text)
    threads = re.search(r"INFERENCE_NUM_THREADS:\s+(\d+)", text)
    return {"p50_ms": grab("Median"), "mean_ms": grab("Average"),
            "count": int(count.group(1)) if count else None,
            "threads": int(threads.group(1)) if threads else None,
            "command": " ".join(argv[len(cmd):]).replace(tmp, "TMP")}


# ---------------------------------------------------------------- main
def alternate(ours, anchor) -> tuple[dict[str, Any], dict[str, Any]]:
    """ROUNDS measurements of each, alternating (ours, anchor, ours, ...), so that a change in
    the machine's load hits both; each side's p50 is the median of its rounds' p50s."""
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "anchor": []}
    for _ in range(ROUNDS):
        runs["ours"].append(ours())
        runs["anchor"].append(anchor())
    out = []
    for side in ("ours", "anchor"):
        rounds = runs[side]
        out.append({"p50_ms": statistics.median(r["p50_ms"] for r in rounds),
                    "count": sum(r["count"] or 0 for r in rounds),
                    "rounds_p50_ms": [round(r["p50_ms"], 5) for r in rounds],
                    **{k: v for k, v in rounds[-1].items() if k in ("config", "command",
                                                                     "threads")}})
    return out[0], out[1]


def readme_section(data: dict[str, Any]) -> str:
    """README section protocol: edgekit's p50 against each anchor's, and how many agree."""
    rows, within = [], 0
    for name, result in data["models"].items():
        for runtime, r in result.items():
            anchor = {"benchmark_app": "`benchmark_app`"}.get(r["anchor_name"], r["anchor_name"])
            rows.append([name, runtime, anchor, f"{r['edgekit']['p50_ms']:.4g}",
                         f"{r['anchor']['p50_ms']:.4g}", f"{r['ratio']:.3f}"])
            within += abs(r["ratio"] - 1) <= TOLERANCE
    return ("### Does our timing agree with the tools people trust? "
            "(`python benchmarks/run.py protocol`)\n\n"
            + md_table(["model", "runtime", "anchor", "edgekit p50 ms", "anchor p50 ms", "ratio"],
                       rows)
            + f"\n`benchmark_app -hint latency -nireq 1` with {data['threads']} threads and f32 "
            f"inference precision; {data['rounds']} alternating rounds of "
            f"{data['seconds_per_measurement']} s per tool, median: {within} of "
            f"{len(rows)} pairs agree within {TOLERANCE:.0%}. Random weights (latency does not "
            "depend on them).\n")


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"protocol": ("protocol", readme_section)}


def main() -> dict[str, Any]:
    rows = []
    data: dict[str, Any] = {"seconds_per_measurement": SECONDS, "rounds": ROUNDS,
                            "threads": THREADS, "models": {}}
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        models = build_models(Path(tmp))
        for name, m in models.items():
            x = inputs(m["spec"])
            result: dict[str, Any] = {}
            pairs = [("onnxruntime", "bare session.run loop",
                      lambda m=m, x=x: edgekit_ort(m["onnx"], m["spec"], x),
                      lambda m=m, x=x: bare_ort(m["onnx"], x))]
            if "xml" in m:
                pairs.append(("openvino", "benchmark_app",
                              lambda m=m, x=x: edgekit_ov(m["xml"], m["spec"], x),
                              lambda m=m: benchmark_app(m["xml"], m["spec"])))
            for runtime, anchor, ours_fn, anchor_fn in pairs:
                ours, ref = alternate(ours_fn, anchor_fn)
                ratio = ours["p50_ms"] / ref["p50_ms"]
                result[runtime] = {"edgekit": ours, "anchor": ref, "anchor_name": anchor,
                                   "ratio": ratio}
                rows.append([name, runtime, anchor, f"{ours['p50_ms']:.4f}",
                             f"{ref['p50_ms']:.4f}", f"{ratio:.3f}",
                             "yes" if abs(ratio - 1) <= TOLERANCE else "NO",
                             f"{ours['count']} / {ref['count']}"])
            data["models"][name] = result
    headers = ["model", "runtime", "anchor", "edgekit p50 ms", "anchor p50 ms",
               "edgekit / anchor", "within 10%", "queries (edgekit / anchor)"]
    markdown = (f"p50 latency, batch 1, {THREADS} threads; {ROUNDS} alternating rounds of "
                f"{SECONDS} s per tool, median of the rounds' p50s.\n\n" + md_table(headers, rows))
    data["readme"] = {"protocol": readme_section(data)}
    write_results("protocol", data, markdown, checkpoints=dict.fromkeys(MODELS, RANDOM_WEIGHTS))
    return data


if __name__ == "__main__":
    main()

"""Prune, depthwise-separable substitution and int8 together on the zoo models: what each
`edgekit compress` run keeps of the original's accuracy, and what it gains in MACs and latency.

Each case is one `edgekit compress .cache/zoo/MODEL.pt FLAGS --train fashion-mnist:train
--eval fashion-mnist:test --distill-epochs N -o OUT` run (top-1 on all 10,000 test images; the
int8 row's top-1 is the QDQ model on ONNX Runtime). Latency: ONNX Runtime on the CPU, 2
threads, batch 1 and batch 64, the original's fp32 ONNX model and every case's fp32 and int8
models timed in alternating rounds (shuffled each round), p50 over all samples. At batch 1 these
28×28 models take tens of µs, bound by per-node overhead rather than MACs, so a substitution
that adds nodes can be slower there; batch 64 shows what the MACs buy. Goals (issue 5): dwsep alone
within 0.5 points after one epoch of distillation; prune + dwsep + int8 within 1.0 point.

Needs the trained zoo checkpoints (`edgekit zoo train NAME -o .cache/zoo/NAME.pt`).
Run: `.venv/bin/python benchmarks/run.py compress` (or `make bench`) on a quiet machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from common import ROOT, md_table, time_alternating, write_results

WORK = ROOT / ".cache" / "bench-compress"
ZOO = ROOT / ".cache" / "zoo"
CALIB = ROOT / "calibration" / "fashion-mnist-512.npz"
THREADS = 2
ROUNDS = 3
BATCH = 64  # batch 1 is bound by per-node overhead at these sizes; batch 64 shows the compute
MODELS = tuple(os.environ.get("BENCH_COMPRESS_MODELS", "lenet5,cnn_gru").split(","))
COMBINED = ["--prune", "0.3", "--dwsep", "--dwsep-rank", "1"]
COMBINED_AUTO = ["--prune", "0.3", "--dwsep", "--dwsep-rank", "auto"]
INT8 = ["--int8", "--calib", str(CALIB)]
# (label, flags, distill epochs, goal in points); the 3-epoch case only where an epoch is cheap
CASES: dict[str, list[tuple[str, list[str], int, float]]] = {
    "lenet5": [
        ("dwsep r=1", ["--dwsep", "--dwsep-rank", "1"], 1, 0.5),
        ("dwsep r=1", ["--dwsep", "--dwsep-rank", "1"], 3, 0.5),
        ("dwsep auto", ["--dwsep", "--dwsep-rank", "auto"], 1, 0.5),
        ("prune 0.3 + dwsep r=1 + int8", [*COMBINED, *INT8], 1, 1.0),
        ("prune 0.3 + dwsep r=1 + int8", [*COMBINED, *INT8], 3, 1.0),
        ("prune 0.3 + dwsep auto + int8", [*COMBINED_AUTO, *INT8], 1, 1.0),
    ],
    "cnn_gru": [
        ("dwsep r=1", ["--dwsep", "--dwsep-rank", "1"], 1, 0.5),
        ("dwsep auto", ["--dwsep", "--dwsep-rank", "auto"], 1, 0.5),
        ("prune 0.3 + dwsep r=1 + int8", [*COMBINED, *INT8], 1, 1.0),
        ("prune 0.3 + dwsep auto + int8", [*COMBINED_AUTO, *INT8], 1, 1.0),
    ],
}


def protocol():
    from edgekit.runtimes.latency import LatencyProtocol

    return LatencyProtocol(warmup_count=20, warmup_seconds=0.3, min_queries=300,
                           min_seconds=1.0, max_seconds=10.0)


def compress(model: str, label: str, flags: list[str], epochs: int) -> dict[str, Any]:
    folder = WORK / model / f"{label.replace(' ', '').replace('+', '_')}-{epochs}ep"
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "edgekit", "compress", str(ZOO / f"{model}.pt"), *flags,
           "--train", "fashion-mnist:train", "--eval", "fashion-mnist:test",
           "--distill-epochs", str(epochs), "-o", str(folder), "--json"]
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-2:]}")
    rows = json.loads(proc.stdout)["rows"]
    final = {r["step"]: r for r in rows if "top1" in r}
    torch_row = final.get("distill") or final.get("dwsep")
    ranks = [r["r"] for r in rows if r["step"] == "dwsep" and "r" in r]
    return {"model": model, "case": label, "epochs": epochs, "folder": folder,
            "seconds": time.perf_counter() - began, "flags": " ".join(flags),
            "original_top1": rows[0]["top1"], "original_macs": rows[0]["macs"],
            "macs": torch_row["macs"], "top1": torch_row["top1"], "ranks": ranks,
            "int8_top1": final.get("int8 onnxruntime", {}).get("top1")}


def original_onnx(model: str) -> Any:
    from edgekit.io.models import load_model
    from edgekit.pipeline import export_artifact

    folder = WORK / model / "original"
    shutil.rmtree(folder, ignore_errors=True)
    art, _ = export_artifact(load_model(ZOO / f"{model}.pt"), "onnx", folder)
    return art.path


def main() -> dict[str, Any]:
    import numpy as np

    from edgekit.runtimes.ort import OrtRunner
    from edgekit.spec import InputSpec

    results: list[dict[str, Any]] = []
    latency: dict[str, Any] = {}
    for model in MODELS:
        if not (ZOO / f"{model}.pt").exists():
            print(f"skip {model}: no {ZOO / model}.pt (edgekit zoo train {model} -o ...)")
            continue
        cases = [compress(model, *case[:3]) | {"goal": case[3]} for case in CASES[model]]
        spec = InputSpec(shape=(1, 1, 28, 28))
        runners = {"original": OrtRunner(original_onnx(model), spec, threads=THREADS)}
        for i, case in enumerate(cases):
            runners[f"{i} fp32"] = OrtRunner(case["folder"] / "model.onnx", spec, threads=THREADS)
            if (case["folder"] / "model.int8.onnx").exists():
                runners[f"{i} int8"] = OrtRunner(case["folder"] / "model.int8.onnx", spec,
                                                 threads=THREADS)
        x = np.random.default_rng(0).standard_normal((BATCH, 1, 28, 28), dtype=np.float32)
        latency[model] = {batch: time_alternating(runners, x[:batch], protocol(), ROUNDS,
                                                  shuffle_seed=0) for batch in (1, BATCH)}
        for i, case in enumerate(cases):
            for batch, key in ((1, "p50_ms"), (BATCH, f"b{BATCH}_p50_ms")):
                timed = latency[model][batch]
                case[key] = timed[f"{i} fp32"]["p50_ms"]
                case[f"int8_{key}"] = timed.get(f"{i} int8", {}).get("p50_ms")
                case[f"original_{key}"] = timed["original"]["p50_ms"]
            final = case["int8_top1"] if case["int8_top1"] is not None else case["top1"]
            case["drop_points"] = round((case["original_top1"] - final) * 100, 2)
            case["goal_met"] = case["drop_points"] <= case["goal"]
            case["folder"] = str(case["folder"].relative_to(ROOT))
        results += cases
    def us(case: dict[str, Any], key: str, per: int = 1) -> str:
        fp32, int8, orig = (case[k] for k in (key, f"int8_{key}", f"original_{key}"))
        return (f"{fp32 * 1e3 / per:.1f} / " + ("-" if int8 is None else f"{int8 * 1e3 / per:.1f}")
                + f" ({orig * 1e3 / per:.1f})")

    headers = ["model", "case", "distill epochs", "dwsep r", "MACs (÷ original)",
               "top-1 fp32", "top-1 int8", "drop pts", "goal",
               "batch 1 p50 µs: fp32 / int8 (original)",
               f"batch {BATCH} p50 µs per image: fp32 / int8 (original)"]
    rows = [[c["model"], c["case"], c["epochs"], ",".join(map(str, c["ranks"])) or "-",
             f"{c['macs'] / 1e3:.0f} k ({c['original_macs'] / c['macs']:.2f}×)",
             f"{c['original_top1']:.4f} → {c['top1']:.4f}",
             "-" if c["int8_top1"] is None else f"{c['int8_top1']:.4f}",
             f"{-c['drop_points']:+.2f}", f"≤ {c['goal']} {'met' if c['goal_met'] else 'MISSED'}",
             us(c, "p50_ms"), us(c, f"b{BATCH}_p50_ms", BATCH)] for c in results]
    markdown = ("### prune + dwsep + int8 on the zoo models (Fashion-MNIST test, 10,000 images; "
                f"ONNX Runtime, {THREADS} threads)\n\n" + md_table(headers, rows)
                + "\nCommand per row: `edgekit compress .cache/zoo/MODEL.pt FLAGS --train "
                "fashion-mnist:train --eval fashion-mnist:test --distill-epochs N -o OUT`; "
                "flags in the JSON. `drop pts` is the final model (int8 where there is one) "
                "against the original. Latency: alternating rounds, p50 over all samples; at "
                "batch 1 these models are bound by per-node overhead, not MACs.\n")
    data = {"threads": THREADS, "rounds": ROUNDS, "protocol": protocol().model_dump(),
            "cases": results, "latency": latency}
    write_results("compress", data, markdown)
    return data


if __name__ == "__main__":
    main()

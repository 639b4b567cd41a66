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

Needs the trained zoo checkpoints (benchmarks/bench_zoo.py writes .cache/zoo/NAME.pt).
Run: `.venv/bin/python benchmarks/run.py compress` (or `make bench`) on a quiet machine: about
25-30 minutes (ten compress runs with distillation, then latency). README section: compress.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from common import (
    CALIB,
    QUICK,
    ROOT,
    checkpoint_provenance,
    edgekit_compress,
    md_table,
    quick_protocol,
    time_alternating,
    train_source,
    work_dir,
    write_results,
    zoo_checkpoint,
)

WORK = work_dir("compress")
THREADS = 2
ROUNDS = 1 if QUICK else 3
BATCH = 64  # batch 1 is bound by per-node overhead at these sizes; batch 64 shows the compute
MODELS = tuple(os.environ.get("BENCH_COMPRESS_MODELS",
                              "lenet5" if QUICK else "lenet5,cnn_gru").split(","))
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

    if QUICK:
        return quick_protocol()
    return LatencyProtocol(warmup_count=20, warmup_seconds=0.3, min_queries=300,
                           min_seconds=1.0, max_seconds=10.0)


def compress(model: str, label: str, flags: list[str], epochs: int) -> dict[str, Any]:
    folder = WORK / model / f"{label.replace(' ', '').replace('+', '_')}-{epochs}ep"
    began = time.perf_counter()
    rows = edgekit_compress(zoo_checkpoint(model),
                            [*flags, "--train", train_source(),
                             "--distill-epochs", str(epochs)], folder)["rows"]
    final = {r["step"]: r for r in rows if "top1" in r}
    torch_row = final.get("distill") or final.get("dwsep")
    ranks = [r["r"] for r in rows if r["step"] == "dwsep" and "r" in r]
    return {"model": model, "case": label, "epochs": epochs, "folder": folder,
            "seconds": time.perf_counter() - began, "flags": " ".join(flags).replace(str(ROOT) + "/", ""),
            "original_top1": rows[0]["top1"], "original_macs": rows[0]["macs"],
            "macs": torch_row["macs"], "top1": torch_row["top1"], "ranks": ranks,
            "int8_top1": final.get("int8 onnxruntime", {}).get("top1"),
            "layer_notes": {r["layer"]: r["note"] for r in rows
                                                 if r["step"] == "dwsep" and "layer" in r
                                                 and "note" in r}}


def original_onnx(model: str) -> Any:
    from edgekit.io.models import load_model
    from edgekit.pipeline import export_artifact

    folder = WORK / model / "original"
    shutil.rmtree(folder, ignore_errors=True)
    art, _ = export_artifact(load_model(zoo_checkpoint(model)), "onnx", folder)
    return art.path


def readme_section(data: dict[str, Any]) -> str:
    """README section compress (from benchmarks/results/compress.json): the cases in the README's
    columns, what rank auto chose and why, and the latency figures the prose after it discusses."""
    results, batch, threads = data["cases"], data["batch"], data["threads"]
    rows = [[c["model"], f"`{c['flags'].replace(str(CALIB), 'calibration/' + CALIB.name)}`",
             c["epochs"], ",".join(map(str, c["ranks"])) or "-",
             f"{c['original_macs']:,} → {c['macs']:,} ({c['original_macs'] / c['macs']:.2f}×)",
             f"{c['original_top1']:.4f} → "
             + (f"{c['int8_top1']:.4f} (int8)" if c["int8_top1"] is not None else f"{c['top1']:.4f}"),
             f"{-c['drop_points']:.2f}".replace("-", "−"),
             f"≤ {c['goal']} {'met' if c['goal_met'] else 'missed'}"] for c in results]
    auto = [f"{c['model']} {layer}: {note}" for c in results if "auto" in c["case"]
            and c["epochs"] == 1 and "int8" not in c["case"]
            for layer, note in c["layer_notes"].items()]
    b1 = [v for c in results for v in (c["p50_ms"], c["original_p50_ms"])]
    per_image = []
    for model in dict.fromkeys(c["model"] for c in results):
        mine = [c for c in results if c["model"] == model]
        first = mine[0]
        line = (f"{model} {first['case']} {first[f'b{batch}_p50_ms'] * 1e3 / batch:.1f} µs vs "
                f"the original's {first[f'original_b{batch}_p50_ms'] * 1e3 / batch:.1f}")
        int8 = [c for c in mine if c[f"int8_b{batch}_p50_ms"] is not None]
        if int8:
            slow = max(int8, key=lambda c: c[f"int8_b{batch}_p50_ms"])
            line += (f", int8 of {slow['case']} ({slow['epochs']} ep) "
                     f"{slow[f'int8_b{batch}_p50_ms'] * 1e3 / batch:.1f} µs against its fp32 "
                     f"{slow[f'b{batch}_p50_ms'] * 1e3 / batch:.1f}")
        per_image.append(line)
    return (
        "### Depthwise-separable substitution, and all three steps in one run "
        "(`python benchmarks/run.py compress`)\n\n"
        "`edgekit compress .cache/zoo/MODEL.pt FLAGS --train fashion-mnist:train --eval "
        "fashion-mnist:test --distill-epochs N -o out/`; the int8 top-1 is the QDQ model on ONNX "
        "Runtime, and the drop is the final model's against the original. Full table with latency "
        f"at batch 1 and {batch}: [compress.md](benchmarks/results/compress.md).\n\n"
        + md_table(["model", "FLAGS", "N", "dwsep r", "MACs", "top-1", "Δ points", "goal"], rows)
        + ("\nWhat rank auto chose, from the reports: " + "; ".join(auto) + "." if auto else "")
        + f"\nAt batch 1 these 28×28 models take {min(b1) * 1e3:.0f}–{max(b1) * 1e3:.0f} µs "
        f"(fp32 p50) on ONNX Runtime, {threads} threads. Batch {batch}, per image: "
        + "; ".join(per_image) + ".\n")


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"compress": ("compress", readme_section)}


def main() -> dict[str, Any]:
    import numpy as np

    from edgekit.runtimes.ort import OrtRunner
    from edgekit.spec import InputSpec

    results: list[dict[str, Any]] = []
    latency: dict[str, Any] = {}
    checkpoints = {model: checkpoint_provenance(zoo_checkpoint(model)) for model in MODELS}
    for model in MODELS:
        chosen = [CASES[model][0], CASES[model][3]] if QUICK else CASES[model]
        cases = [compress(model, *case[:3]) | {"goal": case[3]} for case in chosen]
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
            "cases": results, "latency": latency,
            "batch": BATCH}
    data["readme"] = {name: render(data) for name, (_, render) in README_SECTIONS.items()}
    write_results("compress", data, markdown, checkpoints=checkpoints)
    return data


if __name__ == "__main__":
    main()

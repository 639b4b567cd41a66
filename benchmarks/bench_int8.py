"""int8 post-training quantization on this CPU: edgekit's int8 artifacts against the anchors.

For torchvision resnet18 and mobilenet_v2 (random weights, 10 classes, BatchNorm statistics
re-estimated on 64 images so that activations have realistic magnitudes; 1x3x224x224, batch 1,
2 threads), all in the same run:
  * ORT fp32          the fp32 ONNX model on ONNX Runtime (the reference);
  * edgekit QDQ int8  edgekit's quantize pass, flavour onnxruntime (QDQ: uint8 activations,
                      per-channel int8 weights, percentile 99.99): one file, run on ONNX Runtime
                      and on OpenVINO (which reads the Q/DQ pairs as its int8 quantizers);
  * edgekit NNCF int8 edgekit's quantize pass, flavour openvino (NNCF), on OpenVINO;
  * anchor ORT int8   onnxruntime.quantization.quantize_static with its defaults (QDQ, int8
                      activations and weights, per tensor, min-max), on ONNX Runtime;
  * anchor NNCF int8  nncf.quantize with its defaults on the OpenVINO model, on OpenVINO.
The latency runs alternate between the artifacts (ROUNDS rounds, in a shuffled order each) and
each p50 comes from all of an artifact's samples, so a load change on the machine hits all of them alike. Calibration uses
the same CALIB_SIZE images of the embedded Fashion-MNIST set (resized to 224x224 RGB) for every
tool; calibration time is wall time of the whole quantization call (for edgekit's ORT flavour,
its calibration alone is also given). The cosine of int8 logits to fp32 logits on 64 test images is a
sanity check only (random weights: the classes mean nothing, and top-1 agreement is noise).

Goals: edgekit's best int8 p50 at most 1.0x the faster anchor's; at least 2.5x faster than
ORT fp32.

Run: `.venv/bin/python benchmarks/run.py int8` (or `make bench`) on a quiet machine
(`BENCH_INT8_MODELS=mobilenet_v2` for one model).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    CALIB,
    QUICK,
    RANDOM_WEIGHTS,
    ROOT,
    checkpoint_provenance,
    edgekit_compress,
    md_table,
    quick_protocol,
    time_alternating,
    work_dir,
    write_results,
    zoo_checkpoint,
)

WORK = work_dir("int8")
MODELS = tuple(os.environ.get("BENCH_INT8_MODELS",
                              "mobilenet_v2" if QUICK else "resnet18,mobilenet_v2").split(","))
ZOO_MODELS = ("lenet5", "cnn_gru", "cnn_lstm", "rowrnn")
# README column -> `edgekit compress` flags and the report row that holds its top-1
FLAVOURS = {"int8 on ONNX Runtime": (["--int8"], "int8 onnxruntime"),
            "TensorRT-flavour QDQ, run on ORT": (["--int8", "--for", "tensorrt"], "int8 tensorrt"),
            "OpenVINO IR via NNCF, `--for openvino`": (["--int8", "--for", "openvino"],
                                                      "int8 openvino")}
MAX_DROP = 0.5
THREADS = 2
CALIB_SIZE = 8 if QUICK else 128
ROUNDS = 1 if QUICK else 3
OURS = ("edgekit QDQ int8 on ORT", "edgekit QDQ int8 on OV", "edgekit NNCF int8 on OV")
ANCHORS = ("anchor ORT int8", "anchor NNCF int8")


def protocol():
    from edgekit.runtimes.latency import LatencyProtocol

    if QUICK:
        return quick_protocol()
    return LatencyProtocol(warmup_count=10, warmup_seconds=0.3, min_queries=60,
                           min_seconds=1.0, max_seconds=10.0)


def ort_anchor(onnx_path: Path, calib_x, out: Path) -> float:
    """quantize_static with its defaults; returns seconds."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib_x[i : i + 1]} for i in range(len(calib_x))])

        def get_next(self):
            return next(self.items, None)

    import logging

    logging.disable(logging.WARNING)  # its "consider pre-processing" advice, twice per model
    try:
        began = time.perf_counter()
        quantize_static(str(onnx_path), str(out), Reader())
        return time.perf_counter() - began
    finally:
        logging.disable(logging.NOTSET)


def nncf_anchor(onnx_path: Path, calib_x, out: Path) -> float:
    """nncf.quantize with its defaults on the OpenVINO model; returns seconds (quantize only)."""
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    model = ov.convert_model(str(onnx_path))
    dataset = nncf.Dataset([calib_x[i : i + 1] for i in range(len(calib_x))])
    began = time.perf_counter()
    quantized = nncf.quantize(model, dataset)
    seconds = time.perf_counter() - began
    ov.save_model(quantized, str(out))
    return seconds


def qdq_for_openvino(qdq_onnx: Path, out_xml: Path) -> Path:
    """The same QDQ model as an IR: OpenVINO reads the Q/DQ pairs as its own int8 quantizers;
    nothing is re-quantized (the runner wants an .xml)."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(qdq_onnx)), str(out_xml))
    return out_xml


def recalibrate_batchnorm(model, x) -> None:
    """Re-estimate BatchNorm statistics on real images (cumulative average). With random
    weights and default statistics mobilenet_v2's logits are ~1e-9: int8 rounds them all to 0
    and fp32 may run on denormals; after this, activations have trained-like magnitudes."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 16):
            model(torch.from_numpy(x[i : i + 16]))
    model.eval()


def ours(onnx_path: Path, folder: Path, flavour: str) -> tuple[Path, float, dict[str, Any]]:
    """edgekit's quantize pass as `edgekit compress --int8 [--for openvino]` runs it."""
    from edgekit.passes.base import PassContext
    from edgekit.passes.quantize import QuantizePass

    began = time.perf_counter()
    artifact = QuantizePass({"flavour": flavour, "calib_size": CALIB_SIZE}).apply(
        onnx_path, PassContext(out_dir=folder, calib_source=str(CALIB)))
    return artifact.path, time.perf_counter() - began, artifact.metrics


def run_model(name: str) -> dict[str, Any]:
    import numpy as np
    import torch

    from edgekit.data import load_dataset
    from edgekit.io.files import file_size
    from edgekit.io.models import IMAGENET_SPEC, ModelBundle, build_arch
    from edgekit.metrics import fidelity
    from edgekit.pipeline import export_artifact
    from edgekit.runtimes.openvino import OpenVinoRunner
    from edgekit.runtimes.ort import OrtRunner

    torch.manual_seed(0)
    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    arch = f"torchvision.models:{name}"
    model = build_arch(arch, {"num_classes": 10}).eval()
    spec = IMAGENET_SPEC
    calib_x = load_dataset(str(CALIB), spec, limit=CALIB_SIZE).x
    recalibrate_batchnorm(model, calib_x[:64])
    try:
        check_x = load_dataset("fashion-mnist:test", spec, limit=64).x
    except Exception:  # noqa: BLE001 - the data package is optional here
        check_x = np.random.default_rng(1).standard_normal((64, 3, 224, 224), dtype=np.float32)
    bundle = ModelBundle(model, spec, arch, {"num_classes": 10}, [], None, {"name": name})
    onnx_art, _ = export_artifact(bundle, "onnx", folder, parity_data=check_x[:8])
    fp32 = onnx_art.path

    seconds: dict[str, float] = {}
    paths: dict[str, tuple[Path, str]] = {"ORT fp32": (fp32, "onnxruntime")}
    path, seconds["edgekit QDQ int8 on ORT"], metrics = ours(fp32, folder, "onnxruntime")
    calib_only = metrics["calibration"].get("seconds")
    paths["edgekit QDQ int8 on ORT"] = (path, "onnxruntime")
    paths["edgekit QDQ int8 on OV"] = (qdq_for_openvino(path, folder / "model.int8.qdq.xml"),
                                       "openvino")
    path, seconds["edgekit NNCF int8 on OV"], _ = ours(fp32, folder, "openvino")
    paths["edgekit NNCF int8 on OV"] = (path, "openvino")
    seconds["anchor ORT int8"] = ort_anchor(fp32, calib_x, folder / "anchor.int8.onnx")
    paths["anchor ORT int8"] = (folder / "anchor.int8.onnx", "onnxruntime")
    seconds["anchor NNCF int8"] = nncf_anchor(fp32, calib_x, folder / "anchor.nncf.xml")
    paths["anchor NNCF int8"] = (folder / "anchor.nncf.xml", "openvino")

    runners = {}
    for label, (path, runtime) in paths.items():
        cls = OrtRunner if runtime == "onnxruntime" else OpenVinoRunner
        runners[label] = cls(path, spec, threads=THREADS)
    reference = runners["ORT fp32"].predict(check_x, batch_size=16)
    agreement = {label: fidelity(reference, r.predict(check_x, batch_size=16))
                 for label, r in runners.items()}
    latency = time_alternating(runners, check_x[:1], protocol(), ROUNDS, shuffle_seed=0)
    rows = {}
    for label in runners:
        stats = latency[label]
        rows[label] = {"runtime": paths[label][1], "p50_ms": stats["p50_ms"],
                       "min_ms": stats["min_ms"],
                       "p90_ms": stats["p90_ms"], "p99_ms": stats["p99_ms"],
                       "count": stats["count"], "bytes": file_size(paths[label][0]),
                       "top1_agreement_vs_fp32": agreement[label]["top1_agreement"],
                       "cosine_vs_fp32": agreement[label]["cosine"],
                       "quantize_seconds": seconds.get(label)}
    best_ours = min(OURS, key=lambda k: rows[k]["p50_ms"])
    fastest_anchor = min(ANCHORS, key=lambda k: rows[k]["p50_ms"])
    summary = {
        "best_ours": best_ours, "fastest_anchor": fastest_anchor,
        "ours_vs_fastest_anchor": rows[best_ours]["p50_ms"] / rows[fastest_anchor]["p50_ms"],
        "speedup_vs_ort_fp32": rows["ORT fp32"]["p50_ms"] / rows[best_ours]["p50_ms"],
        # Minimum latencies: what each artifact does when nothing else is on the cores.
        "ours_vs_fastest_anchor_min": min(rows[k]["min_ms"] for k in OURS)
        / min(rows[k]["min_ms"] for k in ANCHORS),
        "speedup_vs_ort_fp32_min": rows["ORT fp32"]["min_ms"]
        / min(rows[k]["min_ms"] for k in OURS),
        "edgekit_ort_calibration_seconds": calib_only,
    }
    summary["goal_vs_anchor_met"] = summary["ours_vs_fastest_anchor"] <= 1.0
    summary["goal_vs_fp32_met"] = summary["speedup_vs_ort_fp32"] >= 2.5
    return {"model": name, "artifacts": rows, "summary": summary}


def zoo_accuracy(name: str) -> dict[str, Any]:
    """fp32 top-1 and every int8 flavour's top-1 and drop for one zoo checkpoint."""
    path = zoo_checkpoint(name)
    out: dict[str, Any] = {"model": name, "checkpoint": checkpoint_provenance(path), "int8": {}}
    for label, (flags, step) in FLAVOURS.items():
        report = edgekit_compress(
            path, [*flags, "--calib", str(CALIB), "--max-drop", str(MAX_DROP),
                   *(["--calib-size", "32"] if QUICK else [])],
            WORK / "zoo" / name / step.replace(" ", "-"))
        rows = {r["step"]: r for r in report["rows"]}
        out["fp32_top1"] = rows["original"]["top1"]
        out["int8"][label] = {k: rows[step].get(k) for k in ("top1", "drop_pts", "budget",
                                                              "layers", "size")}
    return out


def zoo_section(data: dict[str, Any]) -> str:
    """README section int8-zoo (from benchmarks/results/int8-zoo.json): the table and what the
    manifests say stayed float."""
    zoo, max_drop = data["models"], data["max_drop"]

    def cell(r: dict[str, Any]) -> str:
        return f"{r['top1']:.4f} ({r['drop_pts']:.2f})".replace("-", "−")

    rows = [[z["model"], f"{z['fp32_top1']:.4f}", *(cell(z["int8"][k]) for k in FLAVOURS)]
            for z in zoo]
    held = sum(str(r["budget"]).startswith("holds") for z in zoo for r in z["int8"].values())
    runs = sum(len(z["int8"]) for z in zoo)
    float_layers = sorted({str(r["layers"]).split("float:", 1)[1].strip() for z in zoo
                           for r in z["int8"].values() if "float:" in str(r["layers"])})
    def layers_of(z: dict[str, Any]) -> str:
        found = {str(r["layers"]).replace("; ", ", ") for r in z["int8"].values()}
        if len(found) == 1:
            return f"{z['model']} {found.pop()}"
        return f"{z['model']} " + ", ".join(f"{r['layers']} ({lab.split(',')[0]})"
                                            for lab, r in z["int8"].items())

    layers = "; ".join(layers_of(z) for z in zoo)
    commands = ("`edgekit compress .cache/zoo/NAME.pt --int8 [--for tensorrt|openvino] --calib "
                f"calibration/fashion-mnist-512.npz --eval fashion-mnist:test --max-drop {max_drop} "
                "-o out/`")
    return (f"### int8 ({commands})\n\n"
            + md_table(["model", "fp32 top-1", *(f"{k} (drop, points)" for k in FLAVOURS)], rows)
            + f"\nThe budget ({max_drop} points) held in {held} of {runs} runs. Percentile "
            "calibration (99.99) with per-channel weights, the default. Layers in int8 (every flavour "
            "alike unless listed): "
            f"{layers}."
            + (f" Left in float: {', '.join(float_layers)} (ONNX Runtime's static QDQ and NNCF's "
               "CPU int8 do not run them in int8); the manifest lists them with that reason."
               if float_layers else "")
            + " Written by `benchmarks/bench_int8.py`; checkpoints' sha256 and TrainConfig in "
            "[benchmarks/results/int8-zoo.json](benchmarks/results/int8-zoo.json).\n")


def cpu_section(data: dict[str, Any]) -> str:
    """README section int8-cpu (from benchmarks/results/int8.json): ORT fp32 against edgekit's
    best int8 and its QDQ model on ORT."""
    results = data["models"]
    rows = []
    for r in results:
        a, s = r["artifacts"], r["summary"]
        fp32 = a["ORT fp32"]["p50_ms"]
        best = a[s["best_ours"]]["p50_ms"]
        qdq = a["edgekit QDQ int8 on ORT"]["p50_ms"]
        rows.append([f"{r['model']} int8 ({s['best_ours'].removesuffix(' int8 on OV')} "
                     "on OpenVINO)" if s["best_ours"].endswith("on OV") else
                     f"{r['model']} int8 ({s['best_ours']})",
                     f"{fp32:.2f} → {best:.2f}", f"{fp32 / best:.2f}×",
                     f"{s['ours_vs_fastest_anchor']:.2f}× the faster anchor ({s['fastest_anchor']})",
                     "[int8.md](benchmarks/results/int8.md)"])
        if s["best_ours"] != "edgekit QDQ int8 on ORT":
            rows.append([f"{r['model']} int8 QDQ on ORT", f"{fp32:.2f} → {qdq:.2f}",
                         f"{fp32 / qdq:.2f}×", "-", "[int8.md](benchmarks/results/int8.md)"])
    return (f"int8 against ONNX Runtime fp32 (random weights, BatchNorm statistics re-estimated on "
            f"real images; {data['calibration_images']} calibration images):\n\n"
            + md_table(["what", "p50 ms ORT fp32 → int8", "speed-up", "against the anchors",
                        "source"], rows))


# README section -> (the results file it is rendered from, the renderer)
README_SECTIONS = {"int8-cpu": ("int8", cpu_section), "int8-zoo": ("int8-zoo", zoo_section)}


def enabled(part: str) -> bool:
    """BENCH_INT8_LATENCY=0 / BENCH_INT8_ZOO=0 leave a part out (both run by default)."""
    return os.environ.get(f"BENCH_INT8_{part.upper()}", "1") not in ("", "0")


def main() -> dict[str, Any]:
    """Both parts; each writes its own results file (int8, int8-zoo) and README section(s)."""
    out: dict[str, Any] = {"readme": {}}
    for part, run in (("latency", latency_part), ("zoo", zoo_part)):
        if enabled(part):
            data = run()
            out[part] = data
            out["readme"] |= data["readme"]
    return out


def zoo_part() -> dict[str, Any]:
    """The zoo models' int8 accuracy: benchmarks/results/int8-zoo.json, README int8-zoo."""
    zoo = [zoo_accuracy(name) for name in ZOO_MODELS]
    data: dict[str, Any] = {"models": zoo, "max_drop": MAX_DROP}
    markdown = zoo_section(data)
    data["readme"] = {"int8-zoo": markdown}
    write_results("int8-zoo", data, markdown,
                  checkpoints={z["model"]: z["checkpoint"] for z in zoo})
    return data


def latency_part() -> dict[str, Any]:
    """int8 against the anchors: benchmarks/results/int8.json, README int8-cpu."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    results = []
    for name in MODELS:
        began = time.perf_counter()
        results.append(run_model(name))
        print(f"   {name}: {time.perf_counter() - began:.0f} s", flush=True)

    latency_rows, summary_rows, calib_rows = [], [], []
    for r in results:
        fp32 = r["artifacts"]["ORT fp32"]["p50_ms"]
        for label, a in r["artifacts"].items():
            latency_rows.append([r["model"], label, a["runtime"], a["p50_ms"], a["p90_ms"],
                                 a["p99_ms"], a["min_ms"], f"{fp32 / a['p50_ms']:.2f}x",
                                 f"{a['bytes'] / 1e6:.1f} MB",
                                 f"{a['cosine_vs_fp32']:.4f}"])
        s = r["summary"]
        summary_rows.append([r["model"], s["best_ours"], s["fastest_anchor"],
                             f"{s['ours_vs_fastest_anchor']:.2f}x "
                             f"({'met' if s['goal_vs_anchor_met'] else 'MISSED'})",
                             f"{s['speedup_vs_ort_fp32']:.2f}x "
                             f"({'met' if s['goal_vs_fp32_met'] else 'MISSED'})",
                             f"{s['ours_vs_fastest_anchor_min']:.2f}x",
                             f"{s['speedup_vs_ort_fp32_min']:.2f}x"])
        a = r["artifacts"]
        calib_rows.append([r["model"], a["edgekit QDQ int8 on ORT"]["quantize_seconds"],
                           s["edgekit_ort_calibration_seconds"],
                           a["edgekit NNCF int8 on OV"]["quantize_seconds"],
                           a["anchor NNCF int8"]["quantize_seconds"],
                           a["anchor ORT int8"]["quantize_seconds"]])
    markdown = (
        f"### int8 against the anchors (batch 1, {THREADS} threads, {ROUNDS} alternating rounds, "
        f"{CALIB_SIZE} calibration images)\n\n"
        + md_table(["model", "artifact", "runtime", "p50 ms", "p90 ms", "p99 ms", "min ms",
                    "p50 vs ORT fp32", "size", "logit cosine vs fp32"], latency_rows)
        + "\nGoals: edgekit's best int8 p50 ≤ 1.0x the faster anchor; ≥ 2.5x faster than ORT "
        "fp32. 'edgekit QDQ int8' is one file, model.int8.onnx from `edgekit compress --int8`, "
        "run by ONNX Runtime and by OpenVINO (which reads its Q/DQ pairs as int8 quantizers). "
        "'edgekit NNCF int8' is `--for openvino`: nncf.quantize with its defaults inside "
        "edgekit's pass (the budget loop around it when a budget is set), so it can differ from "
        "the NNCF anchor only by measurement noise.\n\n"
        + md_table(["model", "edgekit's best", "faster anchor", "ours / anchor p50",
                    "speed-up vs ORT fp32 (p50)", "ours / anchor (min)",
                    "speed-up vs ORT fp32 (min)"], summary_rows)
        + "\nThe goals are judged on p50; the min columns show the same ratios on each "
        "artifact's fastest run, which a busy machine disturbs least.\n"
        + "\nQuantization wall time, seconds (same calibration images for every tool):\n\n"
        + md_table(["model", "edgekit QDQ (whole pass)", "edgekit QDQ (calibration)",
                    "edgekit NNCF (whole pass)", "nncf.quantize defaults",
                    "ORT quantize_static defaults"], calib_rows))
    data: dict[str, Any] = {"models": results, "threads": THREADS,
                            "calibration_images": CALIB_SIZE, "rounds": ROUNDS,
                            "protocol": protocol().model_dump()}
    data["readme"] = {"int8-cpu": cpu_section(data)}
    write_results("int8", data, markdown, checkpoints=dict.fromkeys(MODELS, RANDOM_WEIGHTS))
    return data


if __name__ == "__main__":
    main()

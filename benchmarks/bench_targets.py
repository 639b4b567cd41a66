"""Export targets side by side on this CPU: ONNX Runtime fp32 / int8 and OpenVINO fp32 / fp16 /
int8 for lenet5, cnn_gru (trained; top-1 on the whole Fashion-MNIST test split) and torchvision
resnet18 / mobilenet_v2 (random init, 1x3x224x224; latency only), batch 1, 2 threads, one run.

The anchor is ONNX Runtime fp32 of the same model in the same run: every row gives its speed-up
against it. ORT int8 comes from edgekit's quantize pass (QDQ, percentile calibration; no budget);
OpenVINO int8 from `edgekit export --target openvino --precision int8` (NNCF). Both use the
embedded calibration set (512 images; 128 of them for the 224x224 models, to keep the run short).

OpenVINO's execution precision is reported: fp32 IRs run in f32; fp16 and int8 IRs at the CPU
plugin's default, which is bf16 on CPUs with AVX512_BF16/AMX.

Run: `.venv/bin/python benchmarks/run.py targets` (or `make bench`), on a quiet machine: about
10 minutes. The README links its table (benchmarks/results/targets.md); it writes no README section.
"""

from __future__ import annotations

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
    ZOO,
    checkpoint_provenance,
    md_table,
    quick_protocol,
    timed,
    work_dir,
    write_results,
)

WORK = work_dir("targets")
EVAL = "fashion-mnist:test"
THREADS = 2
MODELS = ("lenet5",) if QUICK else ("lenet5", "cnn_gru", "resnet18", "mobilenet_v2")
TORCHVISION = {"resnet18": "torchvision.models:resnet18",
               "mobilenet_v2": "torchvision.models:mobilenet_v2"}


def protocol():
    from edgekit.runtimes.latency import LatencyProtocol

    if QUICK:
        return quick_protocol()
    # 500 queries make p99 claimable (>= 459 samples, see runtimes/latency.py); max 20 s each.
    return LatencyProtocol(warmup_count=20, warmup_seconds=0.5, min_queries=500, min_seconds=2.0,
                           max_seconds=20.0)


def load_bundle(name: str) -> tuple[Any, str]:
    """(ModelBundle, note). Zoo models from .cache/zoo/NAME.pt, else a quick 1-epoch training."""
    from edgekit.io.models import IMAGENET_SPEC, ModelBundle, build_arch, load_model

    if name in TORCHVISION:
        import torch

        torch.manual_seed(0)
        arch = TORCHVISION[name]
        return (ModelBundle(build_arch(arch).eval(), IMAGENET_SPEC, arch, {}, [], None,
                            {"name": name}), "random init (latency only)")
    path = ZOO / f"{name}.pt"
    if path.is_file():
        return load_model(path), f"trained checkpoint {path.relative_to(ROOT)}"
    from edgekit.io.models import save_checkpoint
    from edgekit.zoo.train import TrainConfig, train_zoo_model

    quick = WORK / f"{name}-quick.pt"
    if not quick.is_file():
        bundle, _ = train_zoo_model(name, TrainConfig(epochs=1, limit=12000, num_threads=THREADS),
                                    eval_limit=2000)
        save_checkpoint(bundle, quick)
    return load_model(quick), (f"{path.relative_to(ROOT)} not found: quick-trained (1 epoch, "
                               "12,000 images), not the zoo's model")


def ort_int8(folder: Path, onnx_path: Path, calib_size: int | None) -> tuple[Path, str]:
    """edgekit's quantize pass (QDQ for ONNX Runtime); onnxruntime's quantize_static if the pass
    is unavailable."""
    try:
        from edgekit.data.given import DataSources
        from edgekit.passes.base import PassContext
        from edgekit.passes.quantize import QuantizePass

        config = {"flavour": "onnxruntime", **({"calib_size": calib_size} if calib_size else {})}
        artifact = QuantizePass(config).apply(onnx_path, PassContext(
            out_dir=folder, data=DataSources(calib=str(CALIB))))
        return artifact.path, "edgekit quantize pass"
    except ImportError:
        pass
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from edgekit.data import load_dataset
    from edgekit.io.artifacts import spec_for

    x = load_dataset(str(CALIB), spec_for(onnx_path), limit=calib_size).x

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.items, None)

    out = folder / "model.int8.onnx"
    quantize_static(str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    return out, "onnxruntime quantize_static (QDQ, per-channel)"


def export_all(name: str, bundle: Any, trained: bool) -> tuple[Path, list[dict[str, Any]]]:
    """model.onnx, ORT int8 and OpenVINO fp32/fp16/int8 in WORK/NAME; returns what to measure."""
    from edgekit.data import load_dataset
    from edgekit.pipeline import export_artifact

    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    small = bundle.spec.shape[-1] <= 64
    parity_x = load_dataset(EVAL, bundle.spec, limit=256 if small else 64).x
    calib_size = None if small else 128
    timings: dict[str, float] = {}
    start = time.perf_counter()
    onnx_art, _ = export_artifact(bundle, "onnx", folder, parity_data=parity_x)
    timings["onnx export s"] = time.perf_counter() - start
    start = time.perf_counter()
    int8_path, int8_tool = ort_int8(folder, onnx_art.path, calib_size)
    timings["ort int8 s"] = time.perf_counter() - start
    items = [{"runtime": "onnxruntime", "precision": "fp32", "path": onnx_art.path, "note": ""},
             {"runtime": "onnxruntime", "precision": "int8", "path": int8_path, "note": int8_tool}]
    for precision in ("fp32", "fp16", "int8"):
        start = time.perf_counter()
        art, _ = export_artifact(folder, "openvino", None, precision=precision, calib=str(CALIB),
                                 calib_size=calib_size, parity_data=parity_x,
                                 min_agreement=None if trained else 0.0)
        timings[f"openvino {precision} s"] = time.perf_counter() - start
        items.append({"runtime": "openvino", "precision": precision, "path": art.path,
                      "note": ""})
    return folder, [{**it, "export_timings": timings} for it in items]


def measure(item: dict[str, Any], spec: Any, eval_set: Any) -> dict[str, Any]:
    import numpy as np

    from edgekit.io.files import file_size
    from edgekit.runtimes.base import get_runner

    options: dict[str, Any] = {"performance_hint": "latency"}
    if item["runtime"] == "onnxruntime":  # runner options are typed: providers are ORT's
        options["providers"] = ["CPUExecutionProvider"]
    runner = get_runner(item["runtime"])(item["path"], spec, threads=THREADS, options=options)
    top1 = None
    if eval_set is not None:
        top1 = float(np.mean(runner.predict(eval_set.x, batch_size=100).argmax(1) == eval_set.y))
    x = (eval_set.x[:1] if eval_set is not None else
         np.random.default_rng(0).standard_normal((1, *spec.shape[1:]), dtype=np.float32))
    stats = timed(runner, np.ascontiguousarray(x), protocol(), runner.name)
    details = runner.describe()
    return {"runtime": item["runtime"], "precision": item["precision"],
            "artifact": str(Path(item["path"]).relative_to(ROOT)),
            "size_bytes": file_size(item["path"]), "top1": top1,
            "p50_ms": stats["p50_ms"], "p90_ms": stats["p90_ms"], "p99_ms": stats["p99_ms"],
            "count": stats["count"], "valid": stats["valid"],
            "p99_claimable": stats["validity"]["p99_claimable"],
            "inference_precision": details.get("inference_precision"),
            "runtime_details": details, "note": item["note"]}


def main() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import torch

    from edgekit.data import load_dataset

    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    for name in MODELS:
        began = time.perf_counter()
        bundle, note = load_bundle(name)
        notes[name] = note
        trained = name not in TORCHVISION
        folder, items = export_all(name, bundle, trained)
        eval_set = load_dataset(EVAL, bundle.spec) if trained else None
        rows = [measure(it, bundle.spec, eval_set) for it in items]
        anchor = rows[0]["p50_ms"]
        for row, item in zip(rows, items, strict=True):
            row.update(model=name, speedup_vs_ort_fp32=anchor / row["p50_ms"],
                       export_timings=item["export_timings"])
        results += rows
        print(f"   {name}: {time.perf_counter() - began:.0f} s", flush=True)
    headers = ["model", "runtime", "precision", "executes as", "top-1", "p50 ms", "p99 ms",
               "× ORT fp32", "size KB"]
    table = [[r["model"], r["runtime"], r["precision"], r["inference_precision"] or r["precision"],
              "-" if r["top1"] is None else f"{r['top1']:.4f}", r["p50_ms"], r["p99_ms"],
              f"{r['speedup_vs_ort_fp32']:.2f}", f"{r['size_bytes'] / 1024:.0f}"]
             for r in results]
    from edgekit.validate.env import capture_environment

    env = capture_environment()
    markdown = (
        f"### Export targets on this CPU ({env['cpu']['model']}, {THREADS} threads, batch 1)\n\n"
        + md_table(headers, table)
        + "\ntop-1: Fashion-MNIST test split (10,000 images) on the runtime itself. "
        "p50/p99: edgekit's latency protocol (>= 500 queries after warm-up). "
        "'executes as': OpenVINO's inference precision (fp32 IRs are compiled in f32; fp16/int8 "
        "IRs run at the CPU plugin's default). Models: "
        + "; ".join(f"{k}: {v}" for k, v in notes.items()) + ".\n")
    data = {"threads": THREADS, "protocol": protocol().model_dump(), "rows": results,
            "models": notes, "calibration": str(CALIB.relative_to(ROOT))}
    checkpoints = {name: RANDOM_WEIGHTS if name in TORCHVISION else checkpoint_provenance(
        ZOO / f"{name}.pt" if (ZOO / f"{name}.pt").is_file() else WORK / f"{name}-quick.pt")
        for name in MODELS}
    write_results("targets", data, markdown, checkpoints=checkpoints)
    return data


if __name__ == "__main__":
    main()

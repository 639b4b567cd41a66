"""Attention models through edgekit: int8 accuracy, head + MLP pruning, and fp32/int8 latency on
ONNX Runtime and OpenVINO, against NNCF's default int8 of the same model in the same run.

1. Zoo (vit_tiny, conv_attn: .cache/zoo/NAME.pt from benchmarks/bench_zoo.py, else the shipped
   checkpoint), on the Fashion-MNIST test split:
   * int8: `edgekit compress NAME.pt --int8 [--for openvino] --calib CALIB --max-drop 0.5`
     (edgekit's attention policy: projections and MLP int8, LayerNorm float on ONNX Runtime,
     score MatMuls by sensitivity, NNCF's transformer model type) and the anchor: nncf.quantize
     with its defaults on the same ONNX model, top-1 measured on OpenVINO on the same images;
   * pruning: `edgekit compress NAME.pt --target-macs 0.5 --distill-epochs E --train
     fashion-mnist:train` (heads removed whole, MLP hidden channels, conv channels) — MACs
     (attention matmuls counted) and top-1 before, after pruning, after distillation.
2. Latency, batch 1, 2 threads: the zoo models (1×1×28×28), torchvision vit_b_16 and timm's
   deit_tiny_patch16_224 (random weights, 1×3×224×224, timm only when installed). Per model, in
   alternating rounds: fp32 on ONNX Runtime and on OpenVINO, edgekit's QDQ int8 on ONNX Runtime,
   edgekit's NNCF int8 (transformer type) on OpenVINO, and the anchor NNCF default int8 on
   OpenVINO; plus the cosine of each int8 model's logits to fp32 (random weights: a sanity check).

Goals (issue 19): int8 drop ≤ 0.5 point on both zoo models on both runtimes; head+MLP pruning to
≤ 0.5× MACs within 1.0 point after distillation.

Run: `.venv/bin/python benchmarks/run.py attention` on a quiet machine: an estimated 25-35
minutes on 2 cores (the quick run took 7 minutes on the loaded development machine): the two
zoo models' int8 on 10,000 test images and 2-epoch distillations (BENCH_ATTENTION_EPOCHS), then
vit_b_16 (export and 64-image calibrations of an 86 M-parameter model, about 10-15 minutes).
BENCH_ATTENTION_MODELS picks the latency models (comma-separated), BENCH_ATTENTION_ZOO=0 /
BENCH_ATTENTION_LATENCY=0 leave a part out. `--quick` proves it works in a few minutes (conv_attn
and deit_tiny only, 300 test images, 8 calibration images, a few queries).
README section: attention.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from common import (
    CALIB,
    QUICK,
    RANDOM_WEIGHTS,
    ZOO,
    checkpoint_provenance,
    edgekit_compress,
    md_table,
    time_alternating,
    train_source,
    work_dir,
    write_results,
)

WORK = work_dir("attention")
ZOO_MODELS = ("conv_attn",) if QUICK else ("vit_tiny", "conv_attn")
LATENCY_MODELS = tuple(os.environ.get(
    "BENCH_ATTENTION_MODELS",
    "conv_attn,deit_tiny_patch16_224" if QUICK
    else "vit_tiny,conv_attn,vit_b_16,deit_tiny_patch16_224").split(","))
MAX_DROP = 0.5
TARGET_MACS = 0.5
EPOCHS = int(os.environ.get("BENCH_ATTENTION_EPOCHS", "1" if QUICK else "2"))
THREADS = 2
CALIB_SIZE = 32 if QUICK else 128
CALIB_SIZE_224 = 8 if QUICK else 64
ROUNDS = 1 if QUICK else 3
EVAL_LIMIT = 300 if QUICK else None


def checkpoint(name: str) -> Path:
    """ZOO/NAME.pt (bench_zoo.py), else the checkpoint shipped with edgekit."""
    from edgekit.zoo import shipped_checkpoint

    path = ZOO / f"{name}.pt"
    if path.is_file():
        return path
    shipped = shipped_checkpoint(name)
    if shipped is None:
        raise FileNotFoundError(f"{path} is missing and none ships: run `benchmarks/run.py zoo` "
                                f"(or `edgekit zoo train {name} -o {path}`)")
    return shipped


# ---------------------------------------------------------------- 1. zoo accuracy
def nncf_default_top1(onnx_path: Path, name: str, folder: Path) -> dict[str, Any]:
    """The anchor: nncf.quantize with its defaults (no model type) on the fp32 ONNX model, top-1
    on OpenVINO on the same test images as edgekit's rows."""
    from bench_int8 import nncf_anchor

    from edgekit.data import load_dataset
    from edgekit.metrics import top1
    from edgekit.runtimes.openvino import OpenVinoRunner
    from edgekit.zoo import default_spec

    spec = default_spec(name)
    calib_x = load_dataset(str(CALIB), spec, limit=CALIB_SIZE).x
    seconds = nncf_anchor(onnx_path, calib_x, folder / "anchor.nncf.xml")
    test = load_dataset("fashion-mnist:test", spec, limit=EVAL_LIMIT)
    fp32 = top1(OpenVinoRunner(onnx_path, spec, threads=THREADS).predict(test.x), test.y) \
        if onnx_path.suffix == ".xml" else None
    int8 = top1(OpenVinoRunner(folder / "anchor.nncf.xml", spec, threads=THREADS).predict(test.x),
                test.y)
    return {"top1": int8, "fp32_top1_openvino": fp32, "quantize_seconds": seconds}


def zoo_model(name: str) -> dict[str, Any]:
    path = checkpoint(name)
    out: dict[str, Any] = {"model": name, "checkpoint": checkpoint_provenance(path), "int8": {}}
    calib = ["--calib", str(CALIB), "--calib-size", str(CALIB_SIZE)]
    for label, flags, step in (("ONNX Runtime", ["--int8"], "int8 onnxruntime"),
                               ("OpenVINO (NNCF, transformer)", ["--int8", "--for", "openvino"],
                                "int8 openvino")):
        folder = WORK / "zoo" / name / step.replace(" ", "-")
        report = edgekit_compress(path, [*flags, *calib, "--max-drop", str(MAX_DROP)], folder,
                                  eval_limit=EVAL_LIMIT)
        rows = {r["step"]: r for r in report["rows"]}
        out["fp32_top1"] = rows["original"]["top1"]
        out["int8"][label] = {k: rows.get(step, {}).get(k) for k in
                              ("top1", "drop_pts", "budget", "layers")}
        if step == "int8 onnxruntime":
            onnx_path = next(folder.glob("model.onnx"))
            shutil.copyfile(onnx_path, WORK / f"{name}.fp32.onnx")
    anchor_dir = WORK / "zoo" / name / "anchor"
    anchor_dir.mkdir(parents=True, exist_ok=True)
    anchor = nncf_default_top1(WORK / f"{name}.fp32.onnx", name, anchor_dir)
    anchor["drop_pts"] = round(100 * (out["fp32_top1"] - anchor["top1"]), 2)
    out["int8"]["anchor: NNCF default"] = anchor
    began = time.perf_counter()
    report = edgekit_compress(path, ["--target-macs", str(TARGET_MACS), "--distill-epochs",
                                     str(EPOCHS), "--train", train_source()],
                              WORK / "zoo" / name / "prune", eval_limit=EVAL_LIMIT)
    rows = {r["step"]: r for r in report["rows"]}
    out["prune"] = {"macs_before": rows["original"]["macs"], "macs_after": rows["prune"]["macs"],
                    "macs_fraction": rows["prune"]["macs"] / rows["original"]["macs"],
                    "top1_before": rows["original"]["top1"], "top1_pruned": rows["prune"]["top1"],
                    "top1_distilled": rows["distill"]["top1"],
                    "drop_pts": round(100 * (rows["original"]["top1"] - rows["distill"]["top1"]), 2),
                    "ratio": rows["prune"].get("ratio"), "epochs": EPOCHS,
                    "seconds": round(time.perf_counter() - began, 1)}
    return out


# ---------------------------------------------------------------- 2. latency
def build_model(name: str):
    """(ModelBundle, calibration inputs, check inputs, provenance) for a latency model."""
    import torch

    from edgekit.data import load_dataset
    from edgekit.io.models import IMAGENET_SPEC, ModelBundle, build_arch, load_model
    from edgekit.zoo import ZOO, default_spec

    torch.manual_seed(0)
    if name in ZOO:
        path = checkpoint(name)
        bundle, spec = load_model(path), default_spec(name)
        provenance = checkpoint_provenance(path)
    else:
        arch = f"timm:{name}" if name.startswith("deit") else f"torchvision.models:{name}"
        model = build_arch(arch, {"num_classes": 10}).eval()
        randomize_zero_heads(model)
        spec = IMAGENET_SPEC
        bundle = ModelBundle(model, spec, arch, {"num_classes": 10}, [], None, {"name": name})
        provenance = RANDOM_WEIGHTS
    size = CALIB_SIZE if name in ZOO else CALIB_SIZE_224
    calib_x = load_dataset(str(CALIB), spec, limit=size).x
    check_x = load_dataset(str(CALIB), spec, limit=16).x
    return bundle, spec, calib_x, check_x, provenance


def randomize_zero_heads(model: Any) -> None:
    """Give a zero-initialised classifier (torchvision's ViT head) random weights: with all
    logits 0 the cosine of int8 to fp32 logits is meaningless (it read 0.000 for vit_b_16)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.detach().any():
            torch.nn.init.normal_(module.weight, std=0.02)


def latency_model(name: str) -> dict[str, Any]:
    from bench_int8 import nncf_anchor, ours, protocol

    from edgekit.metrics import fidelity
    from edgekit.pipeline import export_artifact
    from edgekit.runtimes.openvino import OpenVinoRunner
    from edgekit.runtimes.ort import OrtRunner

    folder = WORK / "latency" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    bundle, spec, calib_x, check_x, provenance = build_model(name)
    onnx_art, _ = export_artifact(bundle, "onnx", folder, parity_data=check_x[:4])
    fp32 = onnx_art.path
    paths: dict[str, tuple[Path, str]] = {"fp32 on ORT": (fp32, "onnxruntime"),
                                          "fp32 on OV": (fp32, "openvino")}
    seconds: dict[str, float] = {}
    path, seconds["edgekit int8 on ORT"], _ = ours(fp32, folder, "onnxruntime")
    paths["edgekit int8 on ORT"] = (path, "onnxruntime")
    path, seconds["edgekit int8 on OV"], _ = ours(fp32, folder, "openvino")
    paths["edgekit int8 on OV"] = (path, "openvino")
    seconds["NNCF default int8 on OV"] = nncf_anchor(fp32, calib_x, folder / "anchor.nncf.xml")
    paths["NNCF default int8 on OV"] = (folder / "anchor.nncf.xml", "openvino")
    runners = {label: (OrtRunner if runtime == "onnxruntime" else OpenVinoRunner)(
        p, spec, threads=THREADS) for label, (p, runtime) in paths.items()}
    reference = runners["fp32 on ORT"].predict(check_x, batch_size=8)
    cosine = {label: fidelity(reference, r.predict(check_x, batch_size=8))["cosine"]
              for label, r in runners.items()}
    latency = time_alternating(runners, check_x[:1], protocol(), ROUNDS, shuffle_seed=0)
    rows = {label: {"runtime": paths[label][1], **latency[label], "cosine_vs_fp32": cosine[label],
                    "quantize_seconds": seconds.get(label)} for label in runners}
    return {"model": name, "input": list(spec.shape), "provenance": provenance, "artifacts": rows}


# ---------------------------------------------------------------- README
def section(data: dict[str, Any]) -> str:
    parts = []
    zoo = data.get("zoo") or []
    if zoo:
        labels = list(zoo[0]["int8"])

        def cell(r: dict[str, Any]) -> str:
            return "-" if r.get("top1") is None else f"{r['top1']:.4f} ({r['drop_pts']:.2f})"

        rows = [[z["model"], f"{z['fp32_top1']:.4f}", *(cell(z["int8"][k]) for k in labels)]
                for z in zoo]
        parts.append(f"int8 of the attention zoo (`edgekit compress .cache/zoo/NAME.pt --int8 "
                     f"[--for openvino] --calib calibration/fashion-mnist-512.npz --eval "
                     f"fashion-mnist:test --max-drop {data['max_drop']}`; the anchor is "
                     "`nncf.quantize` with its defaults, top-1 on OpenVINO):\n\n"
                     + md_table(["model", "fp32 top-1", *(f"{k} (drop, points)" for k in labels)],
                                rows))
        rows = [[z["model"], f"{z['prune']['macs_fraction']:.2f}×",
                 f"{z['prune']['top1_before']:.4f}", f"{z['prune']['top1_pruned']:.4f}",
                 f"{z['prune']['top1_distilled']:.4f}", f"{z['prune']['drop_pts']:.2f}"]
                for z in zoo]
        parts.append(f"\nHeads (whole) + MLP hidden channels + conv channels, `edgekit compress "
                     f"NAME.pt --target-macs {data['target_macs']} --distill-epochs "
                     f"{data['epochs']} --train fashion-mnist:train` (MACs count the attention "
                     "matmuls):\n\n"
                     + md_table(["model", "MACs", "top-1 before", "pruned", "distilled",
                                 "drop (points)"], rows))
    latency = data.get("latency") or []
    if latency:
        labels = list(latency[0]["artifacts"])
        rows = [[r["model"], "×".join(map(str, r["input"][1:])),
                 *(f"{r['artifacts'][k]['p50_ms']:.2f}" for k in labels)] for r in latency]
        parts.append(f"\np50 latency (ms), batch 1, {THREADS} threads, random weights for "
                     "vit_b_16/DeiT-tiny (edgekit int8: QDQ on ONNX Runtime, NNCF transformer "
                     "type on OpenVINO; the anchor is NNCF's default int8 of the same ONNX "
                     "model):\n\n" + md_table(["model", "input", *labels], rows))
    parts.append("\nWritten by `benchmarks/bench_attention.py`; full numbers in "
                 "[attention.md](benchmarks/results/attention.md).\n")
    return "".join(parts)


README_SECTIONS = {"attention": ("attention", section)}


def enabled(part: str) -> bool:
    return os.environ.get(f"BENCH_ATTENTION_{part.upper()}", "1") not in ("", "0")


def main() -> dict[str, Any]:
    import torch

    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"max_drop": MAX_DROP, "target_macs": TARGET_MACS, "epochs": EPOCHS,
                            "zoo": [], "latency": []}
    checkpoints: dict[str, Any] = {}
    if enabled("zoo"):
        for name in ZOO_MODELS:
            began = time.perf_counter()
            data["zoo"].append(zoo_model(name))
            checkpoints[name] = data["zoo"][-1]["checkpoint"]
            print(f"   {name} (zoo): {time.perf_counter() - began:.0f} s", flush=True)
    if enabled("latency"):
        for name in LATENCY_MODELS:
            if name.startswith("deit"):
                try:
                    import timm  # noqa: F401
                except ImportError:
                    print(f"   {name}: timm is not installed, left out", flush=True)
                    continue
            began = time.perf_counter()
            data["latency"].append(latency_model(name))
            checkpoints.setdefault(name, data["latency"][-1]["provenance"])
            print(f"   {name} (latency): {time.perf_counter() - began:.0f} s", flush=True)
    markdown = section(data)
    detail = ""
    for r in data["latency"]:
        detail += f"\n### {r['model']}\n\n" + md_table(
            ["artifact", "runtime", "p50 ms", "p90 ms", "min ms", "count", "cosine vs fp32",
             "quantize s"],
            [[k, a["runtime"], a["p50_ms"], a["p90_ms"], a["min_ms"], a["count"],
              a["cosine_vs_fp32"], a["quantize_seconds"] or "-"]
             for k, a in r["artifacts"].items()])
    write_results("attention", data, markdown + detail, checkpoints=checkpoints)
    data["readme"] = {"attention": markdown}
    return data

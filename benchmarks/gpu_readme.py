"""The README's GPU section (bench:gpu), rendered from the records of the newest `make gpu-check`
(scripts/gpu_check.py writes benchmarks/results/gpu-*/gpu-summary.json; nothing is measured here,
so this runs on any machine). scripts/gpu_check.py calls it after a run; `make bench` re-renders
it from the newest records folder.

Run: `.venv/bin/python benchmarks/run.py gpu` (seconds)."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, md_table  # noqa: E402

from edgekit.runtimes.interference import disturbed_suffix  # noqa: E402


def newest_records(results: Path = HERE / "results") -> Path | None:
    """The gpu-* folder with the newest date in its name (None when there is none)."""
    dated = [(m.group(0), p) for p in results.glob("gpu-*")
             if (p / "gpu-summary.json").is_file()
             and (m := re.search(r"\d{4}-\d{2}-\d{2}", p.name))]
    return max(dated)[1] if dated else None


def gpu_name(folder: Path) -> str:
    """The GPU's name from the folder's nvidia-smi.csv ('a GPU' when it is not there)."""
    path = folder / "nvidia-smi.csv"
    if path.is_file():
        rows = list(csv.reader(path.read_text().splitlines()))
        if len(rows) > 1 and rows[1]:
            return rows[1][0].strip()
    return "a GPU"


def render(folder: Path) -> str:
    """The section's Markdown from one records folder."""
    summary: list[dict[str, Any]] = json.loads((folder / "gpu-summary.json").read_text())
    date = re.search(r"\d{4}-\d{2}-\d{2}", folder.name).group(0)
    where = folder.resolve().relative_to(ROOT)
    gpu = [r for r in summary if r.get("runtime") == "torch-cuda"]
    cpu = {r["model"]: r for r in summary if r.get("runtime") == "torch-cpu"}
    if not gpu:
        return f"No GPU records in [{where}]({where}/)."
    largest = max(r["batch"] for r in gpu)
    random_models = [m for m in dict.fromkeys(r["model"] for r in gpu) if m not in cpu]
    shown_random = random_models[:1]
    rows = []
    for r in gpu:
        trained = r["model"] in cpu
        if trained and not (r["batch"] == largest and r["variant"] in ("fp32", "fp16+graphs")):
            continue
        if not trained and r["model"] not in shown_random:
            continue
        rows.append([r["model"], r["variant"].replace("+graphs", " + CUDA graphs"), r["batch"],
                     f"{r['p50_ms']:.3f}",
                     "-" if r.get("device_p50_ms") is None else f"{r['device_p50_ms']:.3f}",
                     f"{r['throughput_per_s']:,.0f}",
                     "-" if r.get("top1") is None else f"{r['top1']:.4f}",
                     f"{cpu[r['model']]['top1']:.4f}" if trained else "-"])
    table = md_table(["model", "variant", "batch", "p50 end-to-end ms", "p50 device ms",
                      "throughput/s", "top-1 GPU", "top-1 CPU"], rows)
    text = [f"### On {gpu_name(folder)} (`make gpu-check`, {date}, records in `{where}/`)\n",
            "Written by `benchmarks/gpu_readme.py` from that folder's `gpu-summary.json` "
            "(scripts/gpu_check.py). PyTorch runner, profile `devices/nvidia-gpu.yaml`. "
            "\"End-to-end\" is host time per query including the host→device copy of the input "
            "from pinned memory, the forward (or CUDA-graph replay), the device→host copy of the "
            "logits and a synchronisation; \"device\" is CUDA-event time of the forward alone. "
            + (", ".join(random_models) + " have random weights (latency only).\n"
               if random_models else "\n"),
            table]
    notes = []
    if shown_random:
        name = shown_random[0]
        by = {(r["variant"], r["batch"]): r for r in gpu if r["model"] == name}
        fp32, fp16 = by.get(("fp32", largest)), by.get(("fp16", largest))
        if fp32 and fp16 and fp32.get("device_p50_ms") and fp16.get("device_p50_ms"):
            notes.append(f"At batch {largest} fp16 is {fp32['p50_ms'] / fp16['p50_ms']:.2f}× "
                         f"(end-to-end) and {fp32['device_p50_ms'] / fp16['device_p50_ms']:.2f}× "
                         f"(device) as fast as fp32 for {name}"
                         + disturbed_suffix(fp32.get("disturbed") or fp16.get("disturbed"))
                         + ".")
        eager, graphs = by.get(("fp32", 1)), by.get(("fp32+graphs", 1))
        if eager and graphs:
            notes.append(f"At batch 1 CUDA graphs take {name}'s fp32 p50 from "
                         f"{eager['p50_ms']:.3f} to {graphs['p50_ms']:.3f} ms (eager PyTorch "
                         "there is bound by kernel launches from Python)"
                         + disturbed_suffix(eager.get("disturbed") or graphs.get("disturbed"))
                         + ".")
    energy = [r for r in gpu if r["model"] == "resnet18" and r["variant"] in ("fp32", "fp16")
              and r.get("j_per_query") is not None]
    if energy:  # (issue 18) records from before it carry no energy: nothing is said
        parts = [f"{r['variant']} batch {r['batch']}: {r['j_per_query']:.3g} ± "
                 f"{r['j_per_query_uncertainty']:.1g} J per query ({r['mj_per_image']:.3g} mJ "
                 f"per image at {r['mean_w']:.0f} W)"
                 + disturbed_suffix(r.get("disturbed"))
                 for r in sorted(energy, key=lambda r: (r["variant"] != "fp32", r["batch"]))]
        notes.append("Energy per inference of resnet18 over the timed window (NVML's total-energy "
                     "counter): " + "; ".join(parts) + ".")
    diffs = [abs(r["top1_minus_cpu_points"]) for r in gpu
             if r.get("top1_minus_cpu_points") is not None]
    if diffs:
        notes.append(f"Top-1 on the GPU is within {max(diffs):.2f} points of the CPU's for every "
                     "variant.")
    provenance = [f"{m}: sha256 `{r['checkpoint_sha256'][:12]}…`" for m, r in cpu.items()
                  if r.get("checkpoint_sha256")]
    if cpu:
        notes.append("Checkpoints: " + "; ".join(provenance) + "."
                     if provenance else
                     "The trained checkpoints' sha256 and TrainConfig were not recorded by this "
                     "run (it predates that record), so they may not be the zoo's current ones.")
    notes += [f"ONNX Runtime CUDA provider: {r['status']}." for r in summary
              if r.get("runtime") == "onnxruntime-cuda"]
    text.append(" ".join(notes) + f" Every variant and model: [{where}/gpu-summary.md]"
                f"({where}/gpu-summary.md).\n")
    return "\n".join(text)


def main(folder: Path | None = None) -> dict[str, Any]:
    folder = folder or newest_records()
    if folder is None:
        print("   no benchmarks/results/gpu-*/gpu-summary.json: nothing to render", flush=True)
        return {}
    markdown = render(folder)
    print(markdown, flush=True)
    return {"records": str(folder), "readme": {"gpu": markdown}}


if __name__ == "__main__":
    from readme import rewrite

    print("rewrote:", rewrite(main().get("readme", {})))

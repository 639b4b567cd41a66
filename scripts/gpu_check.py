"""The GPU check (issue 9): validate lenet5, cnn_gru, resnet18 and mobilenet_v2 on
devices/nvidia-gpu.yaml with the PyTorch runner (fp32, fp16, each with and without CUDA graphs)
and ONNX Runtime's CUDA provider where present; write every record (JSON) into one folder, plus a
Markdown summary. Run by `make gpu-check` (scripts/gpu-check.sh) on a machine with an NVIDIA GPU,
PyTorch and ONNX Runtime.

Trained Fashion-MNIST models come from --zoo (edgekit checkpoints lenet5.pt, cnn_gru.pt); their
top-1 on the GPU is compared with their top-1 on this machine's CPU (same checkpoint, torch on the
CPU), on the full 10,000-image test split; ONNX Runtime's CUDA provider is reported present or
absent. resnet18 and
mobilenet_v2 are torchvision's architectures with random weights (seed 0) at 1×3×224×224,
timed on real Fashion-MNIST test images resized to 224×224. The summary records each trained
checkpoint's sha256 and TrainConfig. Every row also carries energy per query over the timed window
(NVML's total-energy counter, with its uncertainty; needs nvidia-ml-py: pip install 'edgekit[gpu]')
and whether the machine was disturbed while timed (issue 18). After a GPU run (not a --torch-device cpu dry run) into
benchmarks/results/, the README's GPU section is rewritten from it (benchmarks/gpu_readme.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = [  # (label, torch runner options)
    ("fp32", {"precision": "fp32", "cuda_graphs": False}),
    ("fp32+graphs", {"precision": "fp32", "cuda_graphs": True}),
    ("fp16", {"precision": "fp16", "cuda_graphs": False}),
    ("fp16+graphs", {"precision": "fp16", "cuda_graphs": True}),
]


def random_torchvision(name: str, folder: Path) -> Path:
    import torch

    from edgekit.io.models import IMAGENET_SPEC, ModelBundle, build_arch, save_checkpoint

    torch.manual_seed(0)
    arch = f"torchvision.models:{name}"
    model = build_arch(arch, {"num_classes": 10})
    bundle = ModelBundle(model, IMAGENET_SPEC, arch, {"num_classes": 10}, meta={"name": name})
    return save_checkpoint(bundle, folder / f"{name}.pt", weights="random init, seed 0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ROOT / ".cache" / "zoo")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="nvidia-gpu", help="device profile")
    parser.add_argument("--torch-device", default="cuda", help="cuda, cuda:N (cpu for a dry run)")
    parser.add_argument("--variants", default=",".join(v for v, _ in VARIANTS))
    args = parser.parse_args()

    import torch

    from edgekit.data import load_dataset
    from edgekit.devices import RuntimeConfig, load_profile
    from edgekit.io.files import sha256_file
    from edgekit.io.models import load_model
    from edgekit.metrics import top1, torch_logits
    from edgekit.validate.bench import measure

    args.out.mkdir(parents=True, exist_ok=True)
    device = load_profile(args.device)
    models: list[tuple[str, Path, bool]] = []
    for name in ("lenet5", "cnn_gru"):
        path = args.zoo / f"{name}.pt"
        if path.exists():
            models.append((name, path, True))
        else:
            print(f"!! {path} missing: {name} skipped", flush=True)
    work = Path(tempfile.mkdtemp(prefix="edgekit-gpu-check-"))  # random-init checkpoints
    for name in ("resnet18", "mobilenet_v2"):
        models.append((name, random_torchvision(name, work), False))

    records, summary = [], []
    for name, ckpt, trained in models:
        spec = load_model(ckpt, check_forward=False).spec
        eval_set = load_dataset("fashion-mnist:test", spec, limit=None if trained else 256)
        cpu_top1 = None
        if trained:
            cpu_bundle = load_model(ckpt)
            torch.set_num_threads(4)
            cpu_logits = torch_logits(cpu_bundle.model, eval_set.x)
            cpu_top1 = top1(cpu_logits, eval_set.y)
            summary.append({"model": name, "runtime": "torch-cpu", "variant": "fp32",
                            "top1": cpu_top1, "checkpoint_sha256": sha256_file(ckpt),
                            "train_config": cpu_bundle.meta.get("train_config")})
        else:
            cpu_logits = None
        for label, options in [v for v in VARIANTS if v[0] in args.variants.split(",")]:
            profile = device.model_copy(update={"runtimes": {**device.runtimes, "torch": RuntimeConfig(
                precisions=["fp32", "fp16"], options={"device": args.torch_device, **options})}})
            t0 = time.perf_counter()
            recs = measure({"path": ckpt, "format": "checkpoint", "precision": options["precision"],
                            "model": name}, spec, profile, eval_set=eval_set,
                           batches=device.batch_sizes, ref_logits=cpu_logits, runtime="torch",
                           model_name=name)
            for r in recs:
                r["variant"] = label
                r["trained"] = trained
                r["cpu_top1"] = cpu_top1
                lat = r["latency"]
                dev = lat.get("device_latency", {})
                summary.append({
                    "model": name, "runtime": "torch-cuda", "variant": label, "batch": r["batch"],
                    "top1": r["accuracy"].get("top1") if trained else None,
                    "top1_minus_cpu_points": (100 * (r["accuracy"]["top1"] - cpu_top1))
                    if trained else None,
                    "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
                    "device_p50_ms": dev.get("p50_ms"),
                    "throughput_per_s": lat["throughput_per_s"], "valid": lat["valid"],
                    **energy_fields(lat)})
            records += recs
            write(args.out, records, summary)  # after every run: a cut-off check keeps what it measured
            print(f"{name:13s} {label:12s} " + "  ".join(
                f"b{r['batch']}: p50 {r['latency']['p50_ms']:.3f} ms "
                f"(device {r['latency'].get('device_latency', {}).get('p50_ms', float('nan')):.3f})"
                for r in recs) + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    summary.append(ort_cuda_status())
    write(args.out, records, summary)
    print(json.dumps(summary[-1]), flush=True)
    results = ROOT / "benchmarks" / "results"
    if args.torch_device != "cpu" and args.out.resolve().parent == results.resolve():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from gpu_readme import render
        from readme import rewrite

        rewrite({"gpu": render(args.out.resolve())})
        print("README.md: GPU section rewritten from", args.out, flush=True)
    return 0


def energy_fields(lat: dict) -> dict:
    """(issue 18) Energy per inference over the timed window (NVML's total-energy counter on
    the GPU the runner used) and whether the machine was disturbed while timed."""
    energy = lat.get("energy") or {}
    nvml = (lat.get("machine") or {}).get("nvml") or {}
    return {"energy_source": energy.get("source"), "energy_note": energy.get("note"),
            "j_per_query": energy.get("j_per_query"),
            "j_per_query_uncertainty": energy.get("j_per_query_uncertainty"),
            "mj_per_image": energy.get("mj_per_image"), "mean_w": energy.get("mean_w"),
            "energy_sampling": energy.get("method"),
            "sm_clock_mhz": (nvml.get("sm_clock_mhz") or {}).get("mean"),
            "gpu_clock_event_reasons": nvml.get("clock_event_reasons"),
            "disturbed": lat.get("disturbed"), "disturbed_reasons": lat.get("disturbed_reasons"),
            "reruns": lat.get("reruns")}


def energy_cell(r: dict) -> str:
    if r.get("j_per_query") is None:
        return r.get("energy_note") or "no power source"
    return (f"{r['j_per_query']:.4g} ± {r['j_per_query_uncertainty']:.2g} J "
            f"({r['mj_per_image']:.3g} mJ/image, {r['mean_w']:.0f} W)")


def machine_cell(r: dict) -> str:
    if "disturbed" not in r:
        return "-"
    return {True: "DISTURBED ⚠", False: "quiet", None: "?"}[r["disturbed"]]


def write(out: Path, records: list, summary: list) -> None:
    (out / "gpu-records.json").write_text(json.dumps(records, default=str) + "\n")
    (out / "gpu-summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "gpu-summary.md").write_text(markdown(summary))


def markdown(summary: list) -> str:
    """The README's GPU table: end-to-end and device p50, throughput, top-1 against the CPU."""
    cpu = {r["model"]: r["top1"] for r in summary if r.get("runtime") == "torch-cpu"}
    lines = ["| model | variant | batch | p50 end-to-end ms | p50 device ms | p99 ms | "
             "throughput/s | top-1 GPU | top-1 CPU | valid | energy per query | machine |",
             "|" + "---|" * 12]
    for r in summary:
        if r.get("runtime") != "torch-cuda":
            continue
        top1 = f"{r['top1']:.4f}" if r.get("top1") is not None else "-"
        ref = f"{cpu[r['model']]:.4f}" if r["model"] in cpu else "-"
        device = "-" if r["device_p50_ms"] is None else f"{r['device_p50_ms']:.3f}"  # CPU dry run
        lines.append(f"| {r['model']} | {r['variant']} | {r['batch']} | {r['p50_ms']:.3f} | "
                     f"{device} | {r['p99_ms']:.3f} | {r['throughput_per_s']:,.0f} | "
                     f"{top1} | {ref} | {'yes' if r['valid'] else 'NO'} | {energy_cell(r)} | "
                     f"{machine_cell(r)} |")
    for r in summary:
        if r.get("runtime") == "onnxruntime-cuda":
            lines.append(f"\nONNX Runtime CUDA provider: {r['status']}.")
    return "\n".join(lines) + "\n"


def ort_cuda_status() -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"runtime": "onnxruntime-cuda", "status": "onnxruntime not installed"}
    providers = ort.get_available_providers()
    status = "present" if "CUDAExecutionProvider" in providers else \
        f"absent: onnxruntime {ort.__version__} offers {providers} (needs onnxruntime-gpu)"
    return {"runtime": "onnxruntime-cuda", "status": status}


if __name__ == "__main__":
    sys.exit(main())

"""The teacher's forward passes on ONNX Runtime, where that is measured faster than PyTorch.

Distillation's teacher only runs inference (eval mode, no gradients, fp32 on a CPU without bf16).
ONNX Runtime's CPU kernels run a conv net's inference faster than PyTorch eager on some CPUs
and models (the 2-core AVX2 EPYC, batch 64: resnet18_small 1.16×, mobilenet_v3_small at 64×64
2.31×; benchmarks/bench_teacher_engine.py), so where the teacher's logits
must be computed (a teacher cache miss, or the cache off) they come from an ONNX Runtime session
of the teacher's fp32 ONNX export when

- the teacher's plan is fp32 on the CPU (bf16 logits are another thing: torch keeps them),
- a one-off micro-benchmark (both engines on the real first batch, interleaved rounds, the best
  of each; cached per machine beside the training plans in `train-plans.json`) measured ONNX
  Runtime faster by MIN_GAIN, and
- the images still to compute repay the export (its seconds, measured with the benchmark).

The export is checked against PyTorch on the first batch (the same tolerance as fp32 parity);
outside it, PyTorch runs the teacher and the record says why. Both give fp32 logits equal to
rounding, so the teacher cache's key does not depend on the engine.

Importing this module does not import torch or onnxruntime.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.events import emit
from edgekit.zoo.accel import (
    MIN_GAIN,
    TrainPlan,
    machine_name,
    shape_class,
)
from edgekit.zoo.measured import recall, remember

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

ROUNDS = 3  # a ResNet-18 at 28×28, batch 64: ~0.4 s a torch forward here, measured once
# below this many seconds of teacher forwards (estimated from the first batch) PyTorch runs them:
# an export and the measurement cost seconds, and save at most a fraction of these
MIN_TEACHER_S = 20.0
# fp32 parity of the export on the first batch: |Δ| ≤ ATOL + RTOL·max|logit|
ATOL, RTOL = 1e-4, 1e-4


class OrtTeacher:
    """An ONNX Runtime session of the teacher's fp32 export (dynamic batch), on the CPU."""

    def __init__(self, model: nn.Module, example: torch.Tensor, threads: int) -> None:
        import copy

        import onnxruntime as ort
        import torch

        start = time.perf_counter()
        twin = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).cpu().eval()
        example = example.detach().float().cpu().contiguous()
        with tempfile.TemporaryDirectory(prefix="edgekit-teacher-") as folder:
            path = Path(folder) / "teacher.onnx"
            _export(twin, example, path)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = max(1, threads)
            opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(path), opts,
                                                providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.export_s = time.perf_counter() - start

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        batch = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input: batch})[0]).to(x.device)


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """TorchScript's exporter first (seconds; the teacher needs no more), dynamo's after."""
    from edgekit.targets.onnx import torch_to_onnx

    exporter, errors = torch_to_onnx(model, example, path, input_name="input",
                                     output_name="logits", dynamic_batch=True,
                                     order=("torchscript", "dynamo"))
    if exporter is None:
        raise RuntimeError(" | ".join(errors))


def torch_forward(model: nn.Module, plan: TrainPlan, x: torch.Tensor) -> torch.Tensor:
    """The teacher's fp32 logits of `x` by PyTorch, in its plan's precision and layout."""
    import torch

    with torch.no_grad(), plan.autocast():
        out = model(plan.place_inputs(x))
    return (out[0] if isinstance(out, (tuple, list)) else out).float()


def measure(model: nn.Module, plan: TrainPlan, x: torch.Tensor,
            engine: OrtTeacher) -> dict[str, float]:
    """Teacher images/s of PyTorch (its plan) and of `engine` on the training batch `x` (its
    size matters: torch gains more from a large batch than ONNX Runtime does): one warm-up
    each, then ROUNDS interleaved rounds, the best of each."""
    runs = {"torch": lambda: torch_forward(model, plan, x), "onnxruntime": lambda: engine(x)}
    best = dict.fromkeys(runs, float("inf"))
    for round_ in range(ROUNDS + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_:  # round 0 warms up
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: round(len(x) / seconds, 1) for name, seconds in best.items()}


def agrees(reference: torch.Tensor, candidate: torch.Tensor) -> float | None:
    """None when `candidate` is within fp32 parity of `reference`, else the max |Δ|."""
    a, b = reference.detach().float().cpu().numpy(), candidate.detach().float().cpu().numpy()
    if a.shape != b.shape:
        return float("inf")
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return None if diff <= ATOL + RTOL * float(np.max(np.abs(a)) if a.size else 0.0) else diff


def choose(model: nn.Module, plan: TrainPlan, x: torch.Tensor,
           images: int) -> tuple[torch.Tensor, OrtTeacher | None, str]:
    """The engine for the teacher's forwards of this run (`images`: how many it will compute,
    `x`: its first batch, whose logits PyTorch computes here, timed): (those logits, an
    OrtTeacher or None for PyTorch, and why)."""
    import torch

    start = time.perf_counter()
    first = torch_forward(model, plan, x)
    estimate = (time.perf_counter() - start) * images / max(1, len(x))
    if plan.device != "cpu" or plan.precision != "fp32":
        return first, None, f"torch ({plan.label} on {plan.device})"
    if estimate >= MIN_TEACHER_S:  # a first call's set-up can dominate it: timed again
        start = time.perf_counter()
        torch_forward(model, plan, x)
        estimate = (time.perf_counter() - start) * images / max(1, len(x))
    if estimate < MIN_TEACHER_S:
        return first, None, (f"torch (~{estimate:.0f} s of teacher forwards: too few to repay "
                             "an export)")
    try:
        import onnxruntime as ort
    except ImportError:
        return first, None, "torch (onnxruntime is not installed)"
    threads = torch.get_num_threads()
    key = {"machine": machine_name("cpu"), "torch": torch.__version__,
           "onnxruntime": ort.__version__, "teacher": plan.label, "threads": threads,
           "shape": shape_class(model, tuple(x.shape), len(x))}
    entry = recall(key)
    engine = None
    if entry is None:
        emit(f"note: measuring the teacher's forward on torch and onnxruntime here, once "
             f"for this machine ({type(model).__name__})")
        engine, entry = _measured(model, plan, x, first, threads)
        remember(key, entry)
    if "why" in entry or not {"torch", "onnxruntime", "export_s"} <= set(entry):
        return first, None, f"torch ({entry.get('why', 'measured earlier without a result')})"
    saved = images / entry["torch"] - images / entry["onnxruntime"]
    if entry["onnxruntime"] < MIN_GAIN * entry["torch"]:
        return first, None, (f"torch (onnxruntime {entry['onnxruntime']:.0f} images/s, torch "
                             f"{entry['torch']:.0f}: not faster here)")
    if saved <= entry["export_s"]:
        return first, None, (f"torch ({images} images: onnxruntime would save {saved:.1f} s, "
                             f"its export costs {entry['export_s']:.1f} s)")
    if engine is None:
        engine, why = _checked(model, x, first, threads)
        if engine is None:
            return first, None, f"torch ({why})"
    return first, engine, (f"onnxruntime fp32 ({entry['onnxruntime']:.0f} images/s against "
                           f"torch's {entry['torch']:.0f}, measured on this machine)")


def _checked(model: nn.Module, x: torch.Tensor, reference: torch.Tensor,
             threads: int) -> tuple[OrtTeacher | None, str]:
    """The teacher's export as a session, when it exports and agrees with torch's `reference`
    logits of `x`."""
    try:
        engine = OrtTeacher(model, x[:2], threads)
        diff = agrees(reference, engine(x))
    except Exception as exc:  # noqa: BLE001 - any export or session failure: torch runs it
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return None, f"its ONNX export failed: {first}"
    if diff is not None:
        return None, f"its ONNX export differs from torch by {diff:.3g} on the first batch"
    return engine, ""


def _measured(model: nn.Module, plan: TrainPlan, x: torch.Tensor, reference: torch.Tensor,
              threads: int) -> tuple[OrtTeacher | None, dict[str, Any]]:
    """The session and the entry train-plans.json keeps: both engines' images/s and the
    export's seconds, or why the export cannot serve (kept too: not tried again)."""
    engine, why = _checked(model, x, reference, threads)
    if engine is None:
        return None, {"why": why}
    return engine, {**measure(model, plan, x, engine), "export_s": round(engine.export_s, 2)}


__all__ = ["OrtTeacher", "agrees", "choose", "measure", "torch_forward"]

"""Where and in what precision training runs (`--train-device`, `--train-precision`).

Training (the zoo trainer, distillation) runs where it is fastest: on CUDA when torch sees a GPU
(`auto`), else on the CPU. On the CPU, bf16 autocast and the channels_last layout are used only
where a one-off micro-benchmark measured them faster for this kind of model, never assumed: a
few training steps of each option (fp32/bf16 × contiguous/channels_last), interleaved, the best
step of each compared. The choice is cached per machine under the edgekit cache dir
(`train-plans.json`), keyed by the device (CPU model and threads, or GPU name), the torch
version and the model's shape class (its class, input shape, batch size and parameter count to
a power of two), so it is measured once. Only the training moves: latency is still measured on
the target device, by the runtimes.

Importing this module does not import torch; the functions that need it do.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekit.errors import InputError
from edgekit.events import emit
from edgekit.io.files import cache_dir
from edgekit.zoo.measured import recall, remember
from edgekit.zoo.records import TrainingRecord

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
# An option must beat plain fp32 by this much to be chosen: within it, the exact and simpler one.
MIN_GAIN = 1.05


def _env_default(name: str, fallback: str) -> Any:
    return lambda: os.environ.get(name) or fallback


class TrainSettings(BaseModel):
    """Where training runs and in what precision (`--train-device`, `--train-precision`; a
    recipe's `training:`). The defaults may be set by $EDGEKIT_TRAIN_DEVICE and
    $EDGEKIT_TRAIN_PRECISION (the test suite pins cpu/fp32 so its numbers do not depend on the
    machine)."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(default_factory=_env_default("EDGEKIT_TRAIN_DEVICE", "auto"),
                        pattern=DEVICE_PATTERN, validate_default=True,
                        description="auto (CUDA when torch sees one, else cpu) | cpu | cuda[:N] "
                                    "| mps")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default_factory=_env_default("EDGEKIT_TRAIN_PRECISION", "auto"), validate_default=True,
        description="auto (bf16 autocast / channels_last where measured faster) | fp32 | bf16")

    def check(self) -> str:
        """The torch device training will use; bad input (exit 2) when it is not there."""
        return resolve_device(self.device)


def train_settings(training: TrainSettings | dict[str, Any] | None) -> TrainSettings:
    """TrainSettings from a mapping (checked: a typo names the key), an instance, or None (the
    defaults); a device asked for that torch does not see is refused (exit 2) before anything
    runs."""
    from edgekit.config import parse_as

    if training is None:
        return TrainSettings()
    if not isinstance(training, TrainSettings):
        training = parse_as(TrainSettings, dict(training), "training")
    training.check()
    return training


@dataclass(frozen=True)
class TrainPlan:
    """What one training run uses: its device, precision and memory layout, and why."""

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    chosen_by: str = "default"
    images_per_s: dict[str, float] = field(default_factory=dict)  # the micro-benchmark's

    @property
    def label(self) -> str:
        """fp32 | bf16, with +channels_last when the model trains in that layout."""
        return _label(self.precision, self.channels_last)

    def autocast(self) -> Any:
        """The autocast context of the forward passes (a no-op in fp32)."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)

    def place_model(self, model: nn.Module) -> nn.Module:
        import torch

        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def place_inputs(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def record(self) -> TrainingRecord:
        """What the manifest records about the run."""
        return {"device": self.device, "precision": self.precision,
                "channels_last": self.channels_last, "chosen_by": self.chosen_by,
                **({"images_per_s": self.images_per_s} if self.images_per_s else {})}


def release_model(model: nn.Module) -> None:
    """Back to the CPU in the default layout: what the rest of edgekit (export, save) expects."""
    import torch

    model.to("cpu")
    model.to(memory_format=torch.contiguous_format)


# ---------------------------------------------------------------- devices
def what_torch_sees() -> str:
    """One line: torch's version and build, and the accelerators it sees."""
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(cuda))
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    return (f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) sees "
            f"{cuda} CUDA device{'s' if cuda != 1 else ''}{': ' + names if names else ''}; "
            f"MPS {'available' if has_mps else 'not available'}")


def resolve_device(name: str) -> str:
    """`auto|cpu|cuda[:N]|mps` → the torch device to train on ('cpu', 'cuda:0', 'mps'). A device
    torch does not see is bad input (exit 2) saying what torch does see."""
    import re

    import torch

    if not re.match(DEVICE_PATTERN, name or ""):
        raise InputError(f"--train-device {name!r} is not a training device",
                         hint="use auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps and mps.is_available()):
            raise InputError(f"--train-device mps: {what_torch_sees()}",
                             hint="use --train-device auto or cpu on this machine")
        return "mps"
    if not torch.cuda.is_available():
        raise InputError(f"--train-device {name}: {what_torch_sees()}",
                         hint="use --train-device auto or cpu here (or a CUDA build of torch on "
                              "a machine with an NVIDIA GPU)")
    index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise InputError(f"--train-device {name}: {what_torch_sees()}",
                         hint=f"choose cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return f"cuda:{index}"


def bf16_supported(device: str) -> bool:
    """bf16 compute in hardware: AVX-512 BF16 or AMX on a CPU, bf16 on a CUDA GPU."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    if device == "cpu":
        from edgekit.cpu import cpu_flags

        flags = cpu_flags()
        if flags:
            return bool(flags & {"avx512_bf16", "amx_bf16"})
        return platform.machine().lower() in ("x86_64", "amd64") and bool(
            torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def machine_name(device: str) -> str:
    """What the micro-benchmark's result belongs to: the CPU model and torch's threads, or the GPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(int(device.split(":")[1]))
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({torch.get_num_threads()} threads)"


def shape_class(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> str:
    """The model's kind for the cached choice: class, input C×H×W, batch, 2^k parameters, and
    its grouped (depthwise) convs when it has any: a depthwise-separable student may train at
    another speed, and best in another layout, than a pruned one of the same size (on this
    AVX2 CPU a dwsep ResNet-18 student: 95 images/s in fp32, 146 channels_last)."""
    from torch import nn

    params = sum(p.numel() for p in model.parameters())
    grouped = sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    return (f"{type(model).__module__}.{type(model).__qualname__} "
            f"in={'x'.join(map(str, input_shape[1:]))} batch={batch_size} "
            f"params~2^{round(math.log2(max(params, 1)))}"
            + (f" grouped-convs={grouped}" if grouped else ""))


# ---------------------------------------------------------------- the plan
def plan_training(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                  settings: TrainSettings | None = None) -> TrainPlan:
    """The device, precision and layout a training run of `model` uses under `settings`:
    bf16 and channels_last only where measured faster here (cached per machine)."""
    settings = settings or TrainSettings()
    device = resolve_device(settings.device)
    if settings.precision == "bf16" and not bf16_supported(device):
        raise InputError(f"--train-precision bf16: {device} has no bf16 compute"
                         + (" (the CPU reports neither avx512_bf16 nor amx_bf16)"
                            if device == "cpu" else ""),
                         hint="use --train-precision auto or fp32")
    precisions = {"fp32": ["fp32"], "bf16": ["bf16"]}.get(
        settings.precision, ["fp32", "bf16"] if bf16_supported(device) else ["fp32"])
    layouts = [False, True] if _has_conv2d(model) and len(input_shape) == 4 else [False]
    options = [(p, cl) for p in precisions for cl in layouts]
    if len(options) == 1:
        how = "asked" if settings.precision != "auto" else "the only option here"
        return TrainPlan(device, options[0][0], options[0][1], how)
    key = {"machine": machine_name(device), "torch": _torch_version(),
           "shape": shape_class(model, input_shape, batch_size),
           "options": [_label(p, cl) for p, cl in options]}
    cached = _cached_choice(key)
    if cached is not None:
        return TrainPlan(device, cached["precision"], cached["channels_last"],
                         "measured earlier on this machine", cached.get("images_per_s", {}))
    emit(f"note: measuring the fastest way to train {type(model).__name__} here "
         f"({', '.join(key['options'])}), once for this machine")
    speeds = measure_options(model, input_shape, batch_size, device, options)
    default = options[0]
    best = max(options, key=lambda o: speeds[_label(*o)])
    if speeds[_label(*best)] < MIN_GAIN * speeds[_label(*default)]:
        best = default
    choice = {"precision": best[0], "channels_last": best[1], "images_per_s": speeds}
    remember(key, choice)
    return TrainPlan(device, best[0], best[1], "measured", speeds)


def _torch_version() -> str:
    import torch

    return torch.__version__


def _label(precision: str, channels_last: bool) -> str:
    return f"{precision}{'+channels_last' if channels_last else ''}"


def _has_conv2d(model: nn.Module) -> bool:
    from torch import nn

    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def measure_options(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                    device: str, options: list[tuple[str, bool]], rounds: int = 3
                    ) -> dict[str, float]:
    """Training images/s of each (precision, channels_last) option: one warm-up step each, then
    `rounds` rounds of one step per option, interleaved so a busy moment hits all alike; the best
    step of each counts. Runs on copies; `model` is not touched."""
    import copy

    import torch

    plans = {_label(p, cl): TrainPlan(device, p, cl) for p, cl in options}
    copies, optimizers = {}, {}
    generator = torch.Generator().manual_seed(0)
    x_cpu = torch.randn((batch_size, *input_shape[1:]), generator=generator)
    for name, plan in plans.items():
        m = plan.place_model(copy.deepcopy(model).float()).train()
        copies[name] = m
        optimizers[name] = torch.optim.SGD(m.parameters(), lr=1e-6)
    best = dict.fromkeys(plans, math.inf)

    def step(name: str) -> float:
        plan, m = plans[name], copies[name]
        x = plan.place_inputs(x_cpu)
        _sync(device)
        start = time.perf_counter()
        with plan.autocast():
            out = m(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        loss = out.float().logsumexp(dim=-1).mean()
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[name].step()
        _sync(device)
        return time.perf_counter() - start

    for name in plans:
        step(name)  # warm-up: kernels chosen, memory allocated
    for _ in range(rounds):
        for name in plans:
            best[name] = min(best[name], step(name))
    return {name: round(batch_size / seconds, 1) for name, seconds in best.items()}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _cached_choice(key: dict[str, Any]) -> dict[str, Any] | None:
    entry = recall(key)
    return entry if entry is not None and entry.get("precision") in ("fp32", "bf16") else None


__all__ = ["TrainPlan", "TrainSettings", "bf16_supported", "cache_dir",
           "measure_options", "plan_training", "release_model", "resolve_device",
           "train_settings", "what_torch_sees"]

"""PyTorch runner: the eager baseline every GPU number is compared with. The only runtime module
that imports torch.

Loads an edgekit checkpoint (or an output folder's checkpoint / model.pt) with the safe loader.
Options (from the device profile's `torch` runtime, or passed directly):
  device       "cpu" (default) | "cuda" | "cuda:N"
  precision    "fp32" (default) | "fp16" (CUDA only: model.half(), input cast on the device)
  cuda_graphs  false (default) | true: capture the static-shape forward once per batch size in a
               torch.cuda.CUDAGraph and replay it in the timing loop (CUDA only)
  trust_model  allow model files that execute code when loaded (see edgekit.io.models)

What is timed (stated in every record's `timing_scope`):
  CPU   the forward in torch.inference_mode on a tensor that shares the preallocated host array.
  CUDA  p50_ms etc. are END-TO-END host times per query: copy of the input from pinned host
        memory to the device, the forward (or graph replay), copy of the logits back to pinned
        host memory, and a stream synchronisation before the clock stops. `device_latency` holds
        the same statistics for CUDA-event time around the forward alone (no copies), read after
        the synchronisation and outside the host-timed span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from edgekit.errors import InputError, MissingDependencyError
from edgekit.runtimes.base import DeviceTimed, Runner, RunnerOptions
from edgekit.runtimes.records import LatencyStats, RuntimeDetails
from edgekit.spec import InputSpec

PRECISIONS = ("fp32", "fp16")
CPU_SCOPE = ("forward on CPU in torch.inference_mode; input a preallocated tensor sharing the host "
             "array (no copy)")
CUDA_SCOPE = ("end-to-end host time per query: host-to-device copy of the input from pinned host "
              "memory, the forward{graphs}, device-to-host copy of the logits into pinned host "
              "memory, stream synchronisation. device_latency: CUDA events around the forward "
              "alone on the stream (no copies), read after synchronisation")


def resolve_checkpoint(path: str | Path) -> Path:
    """A model file, or an output folder's checkpoint (manifest format 'checkpoint', else
    model.pt)."""
    path = Path(path)
    if path.is_dir():
        from edgekit.io.manifest import MANIFEST_NAME, Manifest

        if (path / MANIFEST_NAME).exists():
            hit = Manifest(path).find(format="checkpoint")
            if hit:
                return path / hit["path"]
        if (path / "model.pt").is_file():
            return path / "model.pt"
        raise InputError(f"{path} holds no PyTorch checkpoint",
                         hint="pass a .pt file, or a folder with model.pt (edgekit compress/zoo "
                         "write one)")
    return path


class TorchOptions(RunnerOptions):
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    precision: str = Field("fp32", description="fp32, or fp16 on CUDA")
    cuda_graphs: bool = Field(False, description=(
        "replay a captured CUDA graph of the static-shape forward (CUDA only)"))
    trust_model: bool = Field(False, description=(
        "load a checkpoint that needs code to be executed (pickled module, TorchScript)"))


class TorchRunner(DeviceTimed, Runner):
    name = "torch"
    package = "torch"
    install_hint = "pip install edgekit[torch] (or pip install torch)"
    dists = ("torch",)
    colour = "#d62728"
    timing_scope = CPU_SCOPE
    device_timing_scope = ("CUDA events around the forward alone on the stream (no host copies), "
                           "read after synchronisation")
    Options = TorchOptions
    options: TorchOptions

    def __init__(self, artifact: str | Path, spec: InputSpec | None = None, *,
                 threads: int | None = None,
                 options: TorchOptions | dict[str, Any] | None = None) -> None:
        """`spec` defaults to the checkpoint's own InputSpec."""
        self._graphs: dict[int, Any] = {}
        super().__init__(artifact, spec, threads=threads, options=options)  # type: ignore[arg-type]

    def load(self) -> None:
        import torch

        from edgekit.io.models import load_model

        device = self.options.device
        precision = self.options.precision
        self.cuda_graphs = self.options.cuda_graphs
        if precision not in PRECISIONS:
            raise InputError(f"the torch runner has no precision {precision!r}",
                             hint=f"choose one of: {', '.join(PRECISIONS)}")
        if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
            raise InputError(f"unknown torch device {device!r}", hint="use cpu, cuda or cuda:N")
        on_cuda = device.startswith("cuda")
        if on_cuda and not torch.cuda.is_available():
            raise MissingDependencyError(
                f"the device profile asks for {device}, but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})",
                hint="run on a machine with an NVIDIA GPU and a CUDA build of torch, or use a "
                "CPU profile (devices/local-cpu.yaml)")
        if precision == "fp16" and not on_cuda:
            raise InputError("fp16 in the torch runner needs a CUDA device",
                             hint="use precision fp32 on the CPU, or device: cuda")
        if self.cuda_graphs and not on_cuda:
            raise InputError("cuda_graphs needs a CUDA device", hint="set device: cuda")
        self.checkpoint = resolve_checkpoint(self.artifact)
        bundle = load_model(self.checkpoint, trust_model=self.options.trust_model,
                            check_forward=False)
        if self.spec is None:
            self.spec = bundle.spec
        self.bundle = bundle
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = bundle.model.eval().to(self.device)
        if precision == "fp16":
            self.model = self.model.half()
        if on_cuda:
            self.timing_scope = CUDA_SCOPE.format(
                graphs=" (replayed as a CUDA graph)" if self.cuda_graphs else "")

    def free(self) -> None:
        self.model = self.bundle = None
        self._read_device_ms = None

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def _forward(self, x):
        return self.model(x.to(self.dtype)).float()

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self._forward(torch.from_numpy(x).to(self.device))
            return out.cpu().numpy()

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        import torch

        if not self.on_cuda:
            model, tensor = self.model, torch.from_numpy(x)

            def run_cpu():
                with torch.inference_mode():
                    return model(tensor)

            return run_cpu
        host_in = torch.from_numpy(x).pin_memory()
        dev_in = torch.empty(host_in.shape, dtype=torch.float32, device=self.device)
        dev_in.copy_(host_in)
        stream = torch.cuda.current_stream(self.device)
        if self.cuda_graphs:
            try:
                step, out_shape = self._capture(dev_in)
            except RuntimeError as exc:
                raise InputError(f"CUDA graph capture failed for this model: "
                                 f"{str(exc).splitlines()[0][:300]}",
                                 hint="set cuda_graphs: false in the profile's torch options"
                                 ) from None
        else:
            with torch.inference_mode():
                out_shape = self._forward(dev_in).shape

            def step():
                with torch.inference_mode():
                    return self._forward(dev_in)
        host_out = torch.empty(out_shape, dtype=torch.float32, pin_memory=True)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self._read_device_ms = lambda: start.elapsed_time(end)
        torch.cuda.synchronize(self.device)

        def run_cuda():
            dev_in.copy_(host_in, non_blocking=True)
            start.record(stream)
            out = step()
            end.record(stream)
            host_out.copy_(out, non_blocking=True)
            stream.synchronize()
            return host_out

        return run_cuda

    def _capture(self, dev_in) -> tuple[Callable[[], Any], tuple[int, ...]]:
        """Capture the forward on the static input buffer (warm-up on a side stream first, as
        torch.cuda.graphs documents) and return (replay-and-return-output, output shape)."""
        import torch

        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):
                self._forward(dev_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            static_out = self._forward(dev_in)
        self._graphs[tuple(dev_in.shape)[0]] = graph  # keep the graph (and its pool) alive

        def replay():
            graph.replay()
            return static_out

        return replay, tuple(static_out.shape)

    @contextlib.contextmanager
    def thread_scope(self) -> Iterator[None]:
        """torch's intra-op thread count is process-wide: the profile's `threads` hold for this
        runner's own calls (inference, the timing loop) and the caller's count is put back
        after, so measuring never changes the threads of the rest of the process."""
        import torch

        if not self.threads:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(int(self.threads))
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def infer(self, x: np.ndarray) -> np.ndarray:
        with self.thread_scope():
            return super().infer(x)

    def measure_latency(self, *args: Any, **kwargs: Any) -> LatencyStats:
        with self.thread_scope():
            return super().measure_latency(*args, **kwargs)

    def nvidia_gpu(self) -> int | None:
        return (self.device.index or 0) if self.on_cuda else None

    def describe(self) -> RuntimeDetails:
        import torch

        with self.thread_scope():
            threads = torch.get_num_threads()
        info: RuntimeDetails = {"runtime": self.name, "version": torch.__version__,
                                "device": str(self.device), "precision": self.precision,
                                "cuda_graphs": self.cuda_graphs,
                                "threads": threads,
                                "checkpoint": str(self.checkpoint)}
        if self.on_cuda:
            info.update(device_name=torch.cuda.get_device_name(self.device),
                        cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                        allow_tf32_cudnn=torch.backends.cudnn.allow_tf32)
        return info

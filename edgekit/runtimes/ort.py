"""ONNX Runtime runner. Execution providers come from the device profile (options["providers"]);
the runner reports which ones the session actually uses.

A profile that asks for an accelerator (CUDA, TensorRT, ...) on a machine where none of them is
usable (not installed, or its libraries fail to load, which ONNX Runtime only logs) is an error
by default, since a GPU profile's numbers measured on the CPU would be mislabelled. With
`allow_cpu_fallback: true` in the runtime's options the run goes on on the CPU and the record
says so (describe()["fallback"]). Providers missing while another accelerator runs are listed
in describe()["providers_missing"]."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import Field

from edgekit.errors import MissingDependencyError
from edgekit.runtimes.base import Runner, RunnerOptions
from edgekit.runtimes.records import RuntimeDetails

PROVIDER_ALIASES = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
                    "cpu": "CPUExecutionProvider", "openvino": "OpenVINOExecutionProvider"}


class OrtOptions(RunnerOptions):
    providers: list[str] = Field(default_factory=lambda: ["cpu"], description=(
        "execution providers in order of preference (names or aliases: cuda, tensorrt, cpu, "
        "openvino); the CPU provider is always added last"))
    allow_cpu_fallback: bool = Field(False, description=(
        "measure on the CPU when no requested accelerator is usable, instead of failing"))


class OrtRunner(Runner):
    name = "onnxruntime"
    package = "onnxruntime"
    install_hint = "pip install onnxruntime (or onnxruntime-gpu for CUDA)"
    dists = ("onnxruntime", "onnxruntime-gpu")
    short = "ORT"
    colour = "#1f77b4"
    Options = OrtOptions
    options: OrtOptions

    @classmethod
    def normalised(cls, options: OrtOptions) -> OrtOptions:  # type: ignore[override]
        """Providers by their full names, the CPU provider added last when absent (as `load`
        asks for them)."""
        names = list(dict.fromkeys(PROVIDER_ALIASES.get(p.lower(), p) for p in options.providers))
        if "CPUExecutionProvider" not in names:
            names.append("CPUExecutionProvider")
        return options.model_copy(update={"providers": names})

    @classmethod
    def profile_layers(cls, path, spec, x, **kw):  # type: ignore[no-untyped-def]
        from edgekit.runtimes.profile import profile_onnxruntime

        return profile_onnxruntime(path, spec, x, **kw)

    @classmethod
    def usable_with(cls, options: RunnerOptions | dict[str, Any] | None) -> tuple[bool, str]:
        """The profile's first execution provider must exist here; the others are fallbacks."""
        ok, reason = cls.available()
        if not ok:
            return ok, reason
        import onnxruntime as ort

        wanted = cls.parse_options(options).providers
        first = PROVIDER_ALIASES.get(wanted[0].lower(), wanted[0]) if wanted else None
        have = ort.get_available_providers()
        if first is None or first in have:
            return True, ""
        return False, (f"the profile runs ONNX Runtime on {first}, and this onnxruntime has "
                       f"only {', '.join(have)} (pip install onnxruntime-gpu, or use the device "
                       "itself)")

    profile_prefix: str | None = None  # set (on a subclass) to turn ORT's profiler on

    def load(self) -> None:
        import onnxruntime as ort

        from edgekit.io.onnxfile import check_external_data, load_onnx

        check_external_data(load_onnx(self.artifact, load_external=False), self.artifact.parent)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if self.profile_prefix:  # runtimes/profile.py: per-node times from ORT's own profiler
            opts.enable_profiling = True
            opts.profile_file_prefix = self.profile_prefix
        wanted = [PROVIDER_ALIASES.get(p.lower(), p) for p in self.options.providers]
        available = ort.get_available_providers()
        providers = [p for p in wanted if p in available]
        self.missing_providers = [p for p in wanted if p not in available]
        if "CPUExecutionProvider" not in providers:
            providers.append("CPUExecutionProvider")
        self.session = ort.InferenceSession(str(self.artifact), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.fallback = self._check_accelerators(wanted, available)
        if any(p != "CPUExecutionProvider" for p in self.session.get_providers()):
            self.timing_scope = (
                "end-to-end on host: session.run with host (numpy) input and output, including "
                "the host-to-device and device-to-host copies; it returns when the output is on "
                "the host")

    def free(self) -> None:
        self.session = None  # ONNX Runtime releases the session's memory with its last reference

    def _check_accelerators(self, wanted: list[str], available: list[str]) -> str | None:
        """Error (or, if allowed, a recorded note) when no requested accelerator actually runs."""
        accelerators = [p for p in wanted if p != "CPUExecutionProvider"]
        used = self.session.get_providers()
        if not accelerators or any(p in used for p in accelerators):
            return None
        note = (f"asked for {', '.join(accelerators)}, none usable here (available: "
                f"{', '.join(available)}); ran on {', '.join(used)}")
        if not self.options.allow_cpu_fallback:
            raise MissingDependencyError(
                f"ONNX Runtime cannot run on the device this profile asks for: {note}",
                hint="install onnxruntime-gpu built for this CUDA (pip install onnxruntime-gpu), "
                "or set allow_cpu_fallback: true in the profile's onnxruntime options")
        return note

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        session, feeds, outputs = self.session, {self.input_name: x}, [self.output_name]
        return lambda: session.run(outputs, feeds)

    def nvidia_gpu(self) -> int | None:
        """The CUDA device of the CUDA or TensorRT provider when the session uses one."""
        options = self.session.get_provider_options()
        for name in self.session.get_providers():
            if name in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                return int((options.get(name) or {}).get("device_id", 0))
        return None

    def describe(self) -> RuntimeDetails:
        import onnxruntime as ort

        return {"runtime": self.name, "version": ort.__version__,
                "providers_used": self.session.get_providers(),
                "providers_missing": self.missing_providers, "fallback": self.fallback,
                "threads": self.threads}

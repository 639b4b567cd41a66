"""ONNX Runtime runner. Execution providers come from the device profile (options["providers"]);
the runner reports which ones the session actually uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.errors import MissingDependencyError
from edgekit.runtimes.base import Runner

PROVIDER_ALIASES = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
                    "cpu": "CPUExecutionProvider", "openvino": "OpenVINOExecutionProvider"}


class OrtRunner(Runner):
    name = "onnxruntime"
    formats = ("onnx",)
    package = "onnxruntime"
    install_hint = "pip install onnxruntime (or onnxruntime-gpu for CUDA)"

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
        wanted = [PROVIDER_ALIASES.get(p.lower(), p) for p in self.options.get("providers", ["cpu"])]
        available = ort.get_available_providers()
        providers = [p for p in wanted if p in available]
        self.missing_providers = [p for p in wanted if p not in available]
        if not providers:
            raise MissingDependencyError(
                f"none of the execution providers {wanted} is available (have {available})",
                hint="install onnxruntime-gpu for CUDA, or use a CPU profile")
        if "CPUExecutionProvider" not in providers:
            providers.append("CPUExecutionProvider")
        self.session = ort.InferenceSession(str(self.artifact), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        session, feeds, outputs = self.session, {self.input_name: x}, [self.output_name]
        return lambda: session.run(outputs, feeds)

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"runtime": self.name, "version": ort.__version__,
                "providers_used": self.session.get_providers(),
                "providers_missing": self.missing_providers, "threads": self.threads}

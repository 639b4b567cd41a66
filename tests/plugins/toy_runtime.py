"""A toy runtime in one file: ONNX's reference evaluator (numpy, in the `onnx` package) runs
.onnx files, really, one node after the other.

It reads a kind the table already has (`formats = ("onnx",)`), so this file is all there is:
device profiles may name `onnx-reference`, `edgekit bench/validate` run it, `edgekit profile`
times it (one row for the whole graph: the evaluator has no per-node profiler), optimize tries
it at the precisions the ONNX target writes, and the report draws it in its own colour."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.runtimes.base import Runner


class OnnxReferenceRunner(Runner):
    name = "onnx-reference"
    formats = ("onnx",)
    package = "onnx"
    install_hint = "pip install onnx"
    dists = ("onnx",)
    short = "ref"
    colour = "#8c564b"

    def load(self) -> None:
        from onnx.reference import ReferenceEvaluator

        self.session = ReferenceEvaluator(str(self.artifact))
        self.input_name = self.session.input_names[0]

    def free(self) -> None:
        self.session = None

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    @classmethod
    def profile_layers(cls, path: Path, spec: Any, x: np.ndarray, *, threads: int | None,
                       options: dict[str, Any], runs: int, warmup: int,
                       on_run: Any) -> list[dict[str, Any]]:
        times = []
        with cls(path, spec, threads=threads, options=options) as runner:
            run = runner.bind(runner.check_input(x))
            for i in range(warmup + runs):
                start = time.perf_counter()
                run()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000)
                on_run()
        return [{"layer": "(graph)", "op": None, "precision": "fp32",
                 "ms": float(np.median(times))}]

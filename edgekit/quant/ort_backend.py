"""The ONNX Runtime backend of the accuracy-budget loop: prepares and calibrates once, then
quantizes (QDQ) with any set of layers kept in float, and evaluates on ONNX Runtime itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import ConfigError
from edgekit.quant.ort_qdq import QdqSettings, calibrate, prepare, quantize
from edgekit.quant.report import COMPUTE_OPS, QuantReport, analyze_qdq
from edgekit.spec import InputSpec

EVAL_BATCH = 256


class OrtBackend:
    """fp32 ONNX → int8 QDQ ONNX, measured on ONNX Runtime (CPU)."""

    runtime = "onnxruntime"
    suffix = ".onnx"

    def __init__(self, onnx_path: str | Path, spec: InputSpec, calib_x: np.ndarray,
                 settings: QdqSettings, workdir: Path, *, threads: int | None = None) -> None:
        self.fp32 = Path(onnx_path)
        self.spec = spec
        self.settings = settings
        self.workdir = Path(workdir)
        self.threads = threads
        self.prepared, self.prepare_info = prepare(self.fp32, self.workdir)
        self.calibration = calibrate(self.prepared, calib_x, settings, self.workdir)

    # ----------------------------------------------------------- QuantBackend
    def reference_logits(self, x: np.ndarray) -> np.ndarray:
        return self._predict(self.fp32, x)

    def quantize(self, exclude: Sequence[str], out_stem: str) -> Path:
        return quantize(self.prepared, self.calibration["ranges"],
                        self.workdir / f"{out_stem}.onnx", self.settings, exclude=exclude,
                        spec=self.spec)

    def logits(self, artifact: Path, x: np.ndarray) -> np.ndarray:
        return self._predict(artifact, x)

    def candidates(self, artifact: Path) -> list[str]:
        import onnx

        return [layer["name"] for layer in
                analyze_qdq(onnx.load(str(artifact)))["quantized_layers"]]

    def discard(self, artifact: Path) -> None:
        from edgekit.io.onnxfile import data_path

        Path(artifact).unlink(missing_ok=True)
        data_path(artifact).unlink(missing_ok=True)  # a large model's weights

    # ----------------------------------------------------------- for the pass
    def check_layer_names(self, names: Sequence[str]) -> None:
        """Names to keep in float must be nodes of the model (as ONNX Runtime sees it)."""
        import onnx

        nodes = [n for n in onnx.load(str(self.prepared), load_external_data=False).graph.node]
        known = {n.name for n in nodes}
        missing = [n for n in names if n not in known]
        if missing:
            layers = [n.name for n in nodes if n.op_type in COMPUTE_OPS][:10]
            raise ConfigError(f"no node named {', '.join(map(repr, missing))} in the model",
                              hint=f"name ONNX nodes, e.g. {', '.join(layers)}")

    def finalize(self, artifact: Path, target: Path) -> Path:
        """Move the chosen artifact into place (same folder tree: an atomic rename; a large
        model's weights file is renamed after it)."""
        from edgekit.io.onnxfile import move_onnx

        return move_onnx(artifact, target)

    def report(self, artifact: Path, kept_float: dict[str, str]) -> QuantReport:
        import onnx

        return analyze_qdq(onnx.load(str(artifact)), flavour=self.settings.flavour,
                           kept_float=kept_float)

    def _predict(self, path: Path, x: np.ndarray) -> np.ndarray:
        from edgekit.runtimes.ort import OrtRunner

        with OrtRunner(path, self.spec, threads=self.threads) as runner:
            return runner.predict(x, batch_size=EVAL_BATCH)

"""int8 post-training quantization with a calibration set and an accuracy budget that is kept.

An ONNX pass: it takes the fp32 ONNX model the pipeline exported and writes
  * `model.int8.onnx`      QDQ for ONNX Runtime (flavour `onnxruntime`, the default),
  * `model.int8.trt.onnx`  QDQ for TensorRT's explicit quantization (flavour `tensorrt`),
  * `model.int8.xml/.bin`  an OpenVINO IR quantized by NNCF (flavour `openvino`).
With an eval set, fp32 and int8 top-1 are measured on the runtime that runs the artifact; with a
budget (`max_drop` points, `max_drop_rel` fraction), the most sensitive layers are kept in float
one at a time until it holds, or the step fails (GateError, exit 1) with the table of what was
tried and writes nothing. The manifest records the calibration set (hash, count, per class), the
settings, both accuracies, which layers run in int8 with their scales, and which stayed float
and why (LSTM/GRU, budget, request)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from edgekit.errors import ConfigError, DataError, ExportError, MissingLabelsError
from edgekit.passes.base import Pass, PassConfig, PassContext


class Flavour:
    """What one int8 flavour does differently (as NNCF's per-backend entity, chosen once per
    pass): the file it writes, what it checks first, its backend, what it records. The pass
    holds one (`QuantizePass.flavour`) and never branches on the flavour's name."""

    name: ClassVar[str]
    filename: ClassVar[str]
    format: ClassVar[str] = "onnx"  # the artifact's manifest format
    default_method: ClassVar[str] = "percentile"
    qdq: ClassVar[str] = "onnxruntime"  # the QDQ layout of its settings (edgekit.quant.ort_qdq)
    latency_here: ClassVar[bool] = True  # latency_fallback can profile its runtime here

    def check(self, cfg: QuantizeConfig) -> None:
        if cfg.preset is not None:
            raise ConfigError("preset applies to the openvino flavour only",
                              hint="drop preset, or use --for openvino")

    def backend(self, cfg: QuantizeConfig, settings: Any, onnx_path: Path, spec: Any,
                calib_x: Any, workdir: Path) -> Any:
        from edgekit.quant.ort_backend import OrtBackend

        return OrtBackend(onnx_path, spec, calib_x, settings, workdir)

    def attention_runtime(self, backend: Any) -> str:
        """The runtime whose kernels the attention policy keeps float for."""
        return backend.runtime

    def verify(self, path: Path, float_layers: list[str]) -> dict[str, Any]:
        """Checks of the written model beyond parity; what they record in the metrics."""
        return {}

    def record(self, cfg: QuantizeConfig, backend: Any, settings: Any
               ) -> tuple[dict[str, Any], dict[str, str]]:
        """(the manifest config's quantization entry, the library versions) of the artifact."""
        from edgekit.io.manifest import library_versions

        return (getattr(backend, "settings", settings).describe(),
                library_versions("onnxruntime", "onnx"))


class OrtFlavour(Flavour):
    """QDQ for ONNX Runtime (the default)."""

    name = "onnxruntime"
    filename = "model.int8.onnx"

    def backend(self, cfg, settings, onnx_path, spec, calib_x, workdir):  # type: ignore[no-untyped-def]
        import dataclasses

        import onnx

        from edgekit.quant.attention import ort_settings

        settings = dataclasses.replace(settings, **ort_settings(
            onnx.load(str(onnx_path), load_external_data=False), cfg.attention))
        return super().backend(cfg, settings, onnx_path, spec, calib_x, workdir)


class TensorRtFlavour(Flavour):
    """QDQ for TensorRT's explicit quantization (signed, symmetric, per-channel), checked for
    what TensorRT would not run as intended. Its engine is built on the device."""

    name = "tensorrt"
    filename = "model.int8.trt.onnx"
    qdq = "tensorrt"
    latency_here = False

    def attention_runtime(self, backend: Any) -> str:
        return "tensorrt"

    def verify(self, path: Path, float_layers: list[str]) -> dict[str, Any]:
        QuantizePass._check_tensorrt(path, float_layers)
        return {"tensorrt_checks": "passed"}


class OpenVinoFlavour(Flavour):
    """An OpenVINO IR quantized by NNCF (its own ranges and presets)."""

    name = "openvino"
    filename = "model.int8.xml"
    format = "openvino"
    default_method = "nncf default"

    def check(self, cfg: QuantizeConfig) -> None:
        if cfg.method is not None:
            raise ConfigError(f"calibration method {cfg.method!r} does not apply to the "
                              "openvino flavour: NNCF estimates its own ranges",
                              hint="drop --calib-method, or use --for onnxruntime|tensorrt")
        from edgekit.targets.openvino import import_nncf

        import_nncf()

    def backend(self, cfg, settings, onnx_path, spec, calib_x, workdir):  # type: ignore[no-untyped-def]
        import onnx

        from edgekit.quant.attention import nncf_model_type
        from edgekit.quant.openvino import OpenVinoBackend

        model_type = nncf_model_type(onnx.load(str(onnx_path), load_external_data=False),
                                     cfg.attention)
        return OpenVinoBackend(onnx_path, spec, calib_x, workdir, preset=cfg.preset,
                               model_type=model_type)

    def record(self, cfg, backend, settings):  # type: ignore[no-untyped-def]
        from edgekit.io.manifest import library_versions

        return ({"tool": "nncf.quantize", "preset": cfg.preset or "default",
                 **({"model_type": backend.model_type}
                    if getattr(backend, "model_type", None) else {})},
                library_versions("openvino", "nncf", "onnx"))


FLAVOURS: dict[str, Flavour] = {f.name: f() for f in (OrtFlavour, TensorRtFlavour,
                                                      OpenVinoFlavour)}
FILENAMES = {name: flavour.filename for name, flavour in FLAVOURS.items()}


class QuantizeConfig(PassConfig):
    method: Literal["minmax", "percentile", "entropy", "mse"] | None = Field(
        None, description="activation range calibration (default percentile); "
        "onnxruntime and tensorrt flavours only: NNCF picks its own ranges")
    percentile: float = Field(99.99, gt=50, le=100)
    calib_size: int | None = Field(None, ge=1, description="samples, stratified by class "
                                   "(default: the whole calibration set)")
    per_channel: bool = True
    flavour: Literal["onnxruntime", "tensorrt", "openvino"] = "onnxruntime"
    max_drop: float | None = Field(None, description="allowed top-1 drop in points; a negative "
                                   "value demands int8 beat fp32 (an impossible budget)")
    max_drop_rel: float | None = Field(None, ge=0, lt=1,
                                       description="allowed drop as a fraction of fp32 top-1")
    exclude: list[str] = Field(default_factory=list, description="ONNX node names kept in float")
    sensitivity_samples: int = Field(500, ge=10, description="eval samples used to rank layers")
    max_float_layers: int | None = Field(None, ge=0,
                                         description="most layers the budget loop may keep float")
    reduce_range: bool | None = Field(
        None, description="7-bit weights, for ONNX Runtime's u8s8 kernels on x86 CPUs without "
        "VNNI, whose int16 sums saturate (default: on when this machine is such a CPU, where the "
        "int8 model is checked; see edgekit.quant.ort_qdq.default_reduce_range)")
    calib_batch: int = Field(32, ge=1)
    preset: Literal["performance", "mixed"] | None = Field(None, description="NNCF preset "
                                                           "(openvino flavour)")
    latency_fallback: bool = Field(False, description="keep in float the layers whose int8 "
                                   "form runs slower than float on `latency_device` (per-layer "
                                   "profiles of both models on the flavour's runtime)")
    latency_device: str = Field("local-cpu", description="device profile (local) the latency "
                                "fallback measures on")
    latency_min_ratio: float = Field(1.1, ge=1.0, description="int8 time over float time above "
                                     "which a layer is kept float")
    latency_min_ms: float = Field(0.002, ge=0, description="and at least this much slower, in "
                                  "ms (2 µs: twice ONNX Runtime's profiler resolution)")
    latency_batch: int = Field(1, ge=1)
    attention: Literal["auto", "float", "int8"] = Field(
        "auto", description="attention models: auto (projections/MLP int8; on ONNX Runtime "
        "residual Adds, GELU, LayerNorm, Softmax float; score MatMuls by sensitivity; NNCF "
        "transformer type), float (score MatMuls float too), int8 (no attention-specific "
        "choice); see edgekit.quant.attention")
    min_agreement: float | None = Field(
        None, ge=0, le=1, description="parity on the eval data, the rule `edgekit export` "
        "applies: top-1 agreement with the fp32 model at least this on the samples that are "
        "not near-ties (default 0.90)")
    seed: int = 0


class QuantizePass(Pass):
    name = "quantize"
    kind = "onnx"
    order = 40
    Config = QuantizeConfig

    @property
    def flavour(self) -> Flavour:
        return FLAVOURS[self.config.flavour]

    # ----------------------------------------------------------- checks before anything is written
    def check(self, subject: Any, ctx: PassContext) -> None:
        """Calibration set, eval set (labels when a budget is set), flavour's libraries — all
        before the pipeline writes anything. `subject` is the ModelBundle (for its InputSpec)."""
        cfg: QuantizeConfig = self.config
        spec = subject.spec
        self.flavour.check(cfg)
        if cfg.latency_fallback:
            if not self.flavour.latency_here:
                raise ConfigError("latency_fallback profiles on the flavour's runtime here, and "
                                  "the tensorrt flavour's engine is built on the device",
                                  hint="use latency_fallback with the onnxruntime or openvino "
                                  "flavour")
            from edgekit.devices import load_profile

            load_profile(cfg.latency_device)  # a bad name fails before anything is written
        self._settings()
        self._calibration(spec, ctx)
        self._eval_set(spec, ctx)

    def _budget(self, ctx: PassContext | None = None):
        """The int8 budget; in a compress run that started from a PyTorch model it bounds the
        whole chain against the original's top-1 (ctx.original_top1)."""
        from edgekit.quant.budget import DropBudget

        original = getattr(ctx, "original_top1", None) if ctx is not None else None
        max_drop, max_drop_rel = self.config.max_drop, self.config.max_drop_rel
        if max_drop is None and max_drop_rel is None and ctx is not None:
            # the chain's budget (compress --max-drop, or its default 1.0 point)
            max_drop, max_drop_rel = ctx.max_drop, ctx.max_drop_rel
        return DropBudget(max_drop, max_drop_rel, original)

    def _settings(self):
        from edgekit.quant.ort_qdq import QdqSettings, default_reduce_range

        cfg: QuantizeConfig = self.config
        return QdqSettings(method=cfg.method or "percentile", percentile=cfg.percentile,
                           per_channel=cfg.per_channel,
                           flavour=self.flavour.qdq,
                           # auto: the onnxruntime flavour on this CPU (TensorRT runs on a GPU)
                           reduce_range=(default_reduce_range() and self.flavour.qdq == "onnxruntime"
                                         if cfg.reduce_range is None else cfg.reduce_range),
                           calib_batch=cfg.calib_batch)

    def _calibration(self, spec, ctx: PassContext):
        from edgekit.quant.calibration import default_calibration_source, load_calibration_set

        cfg: QuantizeConfig = self.config
        source = ctx.calib_source or default_calibration_source(spec)
        key = f"calib:{source}:{cfg.calib_size}:{cfg.seed}:{spec.to_json()}"
        if key not in ctx._cache:
            ctx._cache[key] = load_calibration_set(source, spec, size=cfg.calib_size,
                                                   data_dir=ctx.data_dir, seed=cfg.seed)
        return ctx._cache[key]

    def _eval_set(self, spec, ctx: PassContext):
        budget = self._budget()
        if budget.active and ctx.eval_source is None:
            raise DataError("an accuracy budget (--max-drop / --max-drop-rel) needs an eval set "
                            "with labels", hint="pass --eval SOURCE, e.g. --eval fashion-mnist:test")
        try:
            return ctx.eval_set(spec, required=False)
        except MissingLabelsError as exc:
            if budget.active:
                raise MissingLabelsError(f"{exc.message}; the accuracy budget (--max-drop) "
                                         "compares top-1, which needs labels",
                                         hint=exc.hint) from None
            raise

    def _parity(self, outcome: Any) -> dict[str, Any] | None:
        """The parity rule `edgekit export` applies to an int8 artifact (targets/onnx.py's
        check_parity: top-1 agreement with the fp32 model on the samples that are not near-ties,
        at least min_agreement), judged here on the eval data; None without eval data."""
        if outcome.logits is None or outcome.reference_logits is None:
            return None
        from edgekit.targets.onnx import Tolerance, check_parity

        cfg: QuantizeConfig = self.config
        measured = check_parity(
            outcome.reference_logits, outcome.logits,
            what=f"int8 ({cfg.flavour}) against the fp32 ONNX model on the eval data",
            agreement="int8" if cfg.min_agreement is None else cfg.min_agreement,
            tolerance=Tolerance(0.0, 0.0, None),
            hint="keep sensitive layers in float (--max-drop lets the budget choose them), "
                 "or calibrate with more representative data")
        measured["inputs"] = "eval data"
        return measured

    def outputs(self) -> list[str]:
        name = self.flavour.filename
        return [name, name[:-4] + ".bin"] if name.endswith(".xml") else [name]

    # ----------------------------------------------------------- the pass
    def apply(self, onnx_path: Path, ctx: PassContext):
        from edgekit.io.artifacts import spec_for
        from edgekit.io.files import file_size, format_size
        from edgekit.quant.budget import keep_budget
        from edgekit.quant.report import summary_line
        from edgekit.targets.base import Artifact

        cfg: QuantizeConfig = self.config
        onnx_path = Path(onnx_path)
        spec = spec_for(onnx_path)
        calib, calib_info = self._calibration(spec, ctx)
        eval_set = self._eval_set(spec, ctx)
        budget = self._budget(ctx)
        out_dir = Path(ctx.out_dir)
        target = out_dir / self.flavour.filename
        from edgekit.io.debris import pid_tag

        workdir = Path(tempfile.mkdtemp(prefix=f".quantize-{pid_tag()}-", dir=out_dir))
        try:
            backend = self._backend(onnx_path, spec, calib.x, workdir)
            backend.check_layer_names(cfg.exclude)
            attention_float = self._attention_float(backend, onnx_path)
            exclude = [*cfg.exclude, *(n for n in attention_float if n not in cfg.exclude)]
            outcome = keep_budget(
                backend, None if eval_set is None else eval_set.x,
                None if eval_set is None else eval_set.y, budget, exclude=exclude,
                sensitivity_samples=cfg.sensitivity_samples,
                max_float_layers=cfg.max_float_layers, seed=cfg.seed)
            parity = self._parity(outcome)
            latency = self._latency_fallback(backend, outcome, eval_set) \
                if cfg.latency_fallback else None
            report = backend.report(outcome.artifact,
                                    self._kept_float(attention_float, latency, outcome))
            checks = self.flavour.verify(outcome.artifact, outcome.float_layers)
            final = backend.finalize(outcome.artifact, target)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

        calibration = self._calibration_record(calib_info, backend)
        accuracy = outcome.accuracy(backend.runtime, ctx.eval_source)
        if outcome.logits is not None:
            from edgekit.metrics import fidelity

            accuracy["fidelity"] = fidelity(outcome.reference_logits, outcome.logits)
        if parity is not None:
            accuracy["parity"] = parity
        metrics = {
            "calibration": calibration,
            "accuracy": accuracy,
            "budget": outcome.budget_record(budget),
            "layers": {"int8": report["quantized_layers"], "float": report["float_layers"]},
            "scale_ranges": report["scale_ranges"],
            "counts": report["counts"],
            **({"preparation": backend.prepare_info} if hasattr(backend, "prepare_info") else {}),
            **({"nncf": report["nncf"]} if "nncf" in report else {}),
            **({"latency_fallback": latency.as_dict()} if latency else {}),
            **checks,
        }
        if outcome.fp32_top1 is not None:
            ctx.add_row(step=f"fp32 onnx on {backend.runtime}", top1=outcome.fp32_top1)
        ctx.add_row(step=f"int8 {cfg.flavour}", top1=outcome.top1,
                    drop_pts=None if outcome.drop_points is None else round(outcome.drop_points, 2),
                    budget=None if outcome.held is None else f"holds ({budget.describe()})",
                    layers=summary_line(report)
                    + (f"; kept float: {', '.join(outcome.float_layers)}"
                       if outcome.float_layers else ""),
                    size=format_size(file_size(final)))
        config: dict[str, Any] = {"float_layers": outcome.float_layers}
        if cfg.flavour != QuantizeConfig.model_fields["flavour"].default:
            config["flavour"] = cfg.flavour
        config["quantization"], versions = self.flavour.record(cfg, backend, self._settings())
        return Artifact(path=final, format=self.flavour.format,
                        precision="int8", metrics=metrics, config=config, versions=versions)

    def _kept_float(self, attention_float: dict[str, str], latency: Any,
                    outcome: Any) -> dict[str, str]:
        """Each layer left in float and why: asked for, attention, slower in int8, the budget."""
        cfg: QuantizeConfig = self.config
        ranks = {s["layer"]: s for s in outcome.sensitivity}
        kept_float = {name: "kept in float on request (exclude)" for name in cfg.exclude}
        kept_float.update({k: v for k, v in attention_float.items() if k not in kept_float})
        for name in latency.nodes if latency else []:
            kept_float[name] = latency.reason(name)
        for name in outcome.float_layers:
            if name not in kept_float and name in ranks:
                r = ranks[name]
                kept_float[name] = (
                    f"kept in float by the accuracy budget (sensitivity rank {r['rank']} of "
                    f"{len(ranks)}: alone in float, top-1 agreement with fp32 "
                    f"{100 * r['agreement_gained']:+.1f} points)")
        return kept_float

    def _calibration_record(self, calib_info: dict[str, Any], backend: Any) -> dict[str, Any]:
        """What the manifest says of the calibration: the set, the backend's settings, the method."""
        cfg: QuantizeConfig = self.config
        calibration = {**calib_info, **{k: v for k, v in backend.calibration.items()
                                        if k != "ranges"}}
        calibration["method"] = cfg.method or self.flavour.default_method
        if calibration["method"] == "percentile":
            calibration["percentile"] = cfg.percentile
        return calibration

    def _latency_fallback(self, backend, outcome, eval_set):
        """Profile fp32 and int8 on the latency device; re-quantize with the int8 layers that
        ran slower than float kept in float (top-1 measured again when there is an eval set)."""
        from edgekit.devices import load_profile
        from edgekit.metrics import top1
        from edgekit.quant.latency import latency_fallback

        cfg: QuantizeConfig = self.config
        found = latency_fallback(backend, outcome.artifact, load_profile(cfg.latency_device),
                                 batch=cfg.latency_batch, min_ratio=cfg.latency_min_ratio,
                                 min_ms=cfg.latency_min_ms,
                                 candidates=backend.candidates(outcome.artifact))
        if not found.nodes:
            return found
        kept = [*outcome.float_layers, *[n for n in found.nodes if n not in outcome.float_layers]]
        candidate = backend.quantize(kept, "latency")
        if eval_set is not None and outcome.fp32_top1 is not None:
            logits = backend.logits(candidate, eval_set.x)
            accuracy = top1(logits, eval_set.y)
            drop = 100.0 * (outcome.fp32_top1 - accuracy)
            if outcome.allowed_points is not None and drop > outcome.allowed_points + 1e-9:
                backend.discard(candidate)  # float should not cost accuracy; if it does, the
                found.nodes = []            # budget wins and the layers stay int8
                return found
            outcome.logits, outcome.top1, outcome.drop_points = logits, accuracy, drop
        backend.discard(outcome.artifact)
        outcome.artifact, outcome.float_layers = candidate, kept
        return found

    def _attention_float(self, backend, onnx_path: Path) -> dict[str, str]:
        """Attention nodes kept float by the `attention` policy (edgekit.quant.attention), named
        as the backend's model names them (ONNX Runtime: the prepared model)."""
        import onnx

        from edgekit.quant.attention import float_nodes

        model_path = getattr(backend, "prepared", onnx_path)
        model = onnx.load(str(model_path), load_external_data=False)
        return float_nodes(model, self.config.attention, self.flavour.attention_runtime(backend))

    def _backend(self, onnx_path: Path, spec, calib_x, workdir: Path):
        return self.flavour.backend(self.config, self._settings(), onnx_path, spec, calib_x,
                                    workdir)

    @staticmethod
    def _check_tensorrt(path: Path, float_layers: list[str]) -> None:
        import onnx

        from edgekit.targets.tensorrt import tensorrt_qdq_problems

        problems, _ = tensorrt_qdq_problems(onnx.load(str(path)), allow_float=tuple(float_layers))
        if problems:
            raise ExportError("the TensorRT-flavour QDQ model would not run as intended in "
                              f"TensorRT: {'; '.join(problems[:3])}"
                              + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""),
                              hint="report the model; the onnxruntime flavour may still work")

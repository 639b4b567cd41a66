"""OpenVINO export: IR (.xml + .bin) from the fp32 ONNX model, in fp32, fp16 (weights compressed
to fp16) or int8 (NNCF post-training quantization with a calibration set).

The export compiles the IR and runs it once on real inputs against the fp32 ONNX model (ONNX
Runtime), recording max abs difference, cosine and top-1 agreement; above tolerance it fails.
The InputSpec and the precision are stored in the IR's rt_info (`edgekit/input_spec`,
`edgekit/precision`), so the IR describes itself without the manifest.

`quantize_openvino()` is the reusable int8 step: the accuracy-budget loop (quantize pass) calls it
again with `ignored_nodes` to keep sensitive layers in float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from edgekit.errors import DataError, ExportError, InputError, MissingDependencyError
from edgekit.io.manifest import library_versions
from edgekit.runtimes.openvino import import_openvino, ir_weights_path, openvino_logits
from edgekit.spec import InputSpec
from edgekit.targets.base import Artifact, Target, TargetOptions
from edgekit.targets.onnx import (
    Tolerance,
    check_parity,
    ort_logits,
    parity_inputs,
    recorded_fp32_floor,
)

RT_INFO_SPEC = ["edgekit", "input_spec"]
RT_INFO_PRECISION = ["edgekit", "precision"]
NNCF_HINT = "pip install edgekit[openvino] (or pip install nncf)"
# Recurrent layers stay float in the int8 export by default: a quantized LSTMSequence lost a
# third of top-1 agreement on cnn_lstm (and can fail to compile on the CPU plugin); the
# convolutions and linear layers around them carry the speed-up.
RECURRENT_TYPES = ("LSTMSequence", "GRUSequence", "RNNSequence")
TOLERANCE_SCALE = {"fp32": 1.0, "fp16": 100.0}


def import_nncf():
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("int8 OpenVINO export needs NNCF, which is not installed",
                                     hint=NNCF_HINT) from None
    nncf.set_log_level(logging.ERROR)
    return nncf


def ir_paths(out_dir: Path, precision: str, filename: str | None = None) -> tuple[Path, Path]:
    xml = out_dir / (filename or f"model.{precision}.xml")
    return xml, ir_weights_path(xml)


def convert_onnx(onnx_path: str | Path):
    """The ONNX model as an ov.Model (OpenVINO's ONNX frontend)."""
    ov = import_openvino()
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as exc:  # noqa: BLE001 - the frontend raises several types
        raise ExportError(f"OpenVINO cannot convert {onnx_path}: {str(exc).splitlines()[0][:300]}",
                          hint="check that the ONNX model runs in ONNX Runtime; report the model"
                          ) from None


def save_ir(model, xml_path: Path, *, spec: InputSpec | None, precision: str,
            compress_to_fp16: bool = False) -> Path:
    """Write model as XML_PATH + its .bin atomically: both go to temp names first; the old .xml
    is removed before the new pair is renamed in, so an interrupted run never leaves an .xml
    beside a .bin it does not belong to."""
    ov = import_openvino()
    if spec is not None:
        model.set_rt_info(spec.to_json(), RT_INFO_SPEC)
    model.set_rt_info(precision, RT_INFO_PRECISION)
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_xml = xml_path.with_name(f".{xml_path.stem}.pid{os.getpid()}.part.xml")
    tmp_bin = ir_weights_path(tmp_xml)
    try:
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
        xml_path.unlink(missing_ok=True)
        os.replace(tmp_bin, ir_weights_path(xml_path))
        os.replace(tmp_xml, xml_path)
    finally:
        tmp_xml.unlink(missing_ok=True)
        tmp_bin.unlink(missing_ok=True)
    return xml_path


def _ov_names_for(model, ignored_nodes: Iterable[str]) -> tuple[list[str], list[str]]:
    """Map names to OpenVINO op names. A name may be an OpenVINO op's friendly name or an ONNX
    node name: OpenVINO's ONNX frontend names the ops it makes from node X 'X' or 'X/...' (a Conv
    with bias becomes 'X/WithoutBiases' + 'X'), so every op so named is taken. Returns
    (op names, names that matched nothing)."""
    ops = [op.get_friendly_name() for op in model.get_ops()]
    found: list[str] = []
    missing: list[str] = []
    for name in ignored_nodes:
        hits = [op for op in ops if op == name or op.startswith(name + "/")]
        if hits:
            found += [h for h in hits if h not in found]
        else:
            missing.append(name)
    return found, missing


@dataclass(frozen=True)
class NNCFSettings:
    """How NNCF quantizes (quantize_openvino's `settings`; the fields are described there)."""

    ignored_nodes: Sequence[str] = ()
    ignored_types: Sequence[str] = ()
    preset: str | None = None
    subset_size: int | None = None
    fast_bias_correction: bool = False
    model_type: str | None = None


def quantize_openvino(onnx_path: str | Path, calib_x: np.ndarray, out_xml: str | Path,
                      settings: NNCFSettings | None = None, *,
                      spec: InputSpec | None = None) -> dict[str, Any]:
    """Quantize an fp32 ONNX model to an int8 OpenVINO IR with NNCF and write it atomically.

    Stable API (the accuracy-budget loop of the quantize pass calls it repeatedly):
      onnx_path     the fp32 ONNX model.
      calib_x       model-ready float32 NCHW calibration inputs (e.g. load_dataset(src, spec).x);
                    each sample is fed to NNCF as a batch of one.
      out_xml       where the IR goes (the .bin lands beside it with the same stem).
      spec          stored in the IR's rt_info; and the NNCFSettings:
      ignored_nodes layers kept in float: ONNX node names (as in the fp32 ONNX graph) or
                    OpenVINO op names; every op made from a named ONNX node is kept in float.
                    A name that matches nothing is an InputError (it lists some known names).
      ignored_types OpenVINO op types kept in float (e.g. "MatMul", "GRUSequence").
      preset        "performance" (symmetric activations) | "mixed" (asymmetric activations) |
                    None (NNCF's default for the model).
      subset_size   calibration samples used (default: all of calib_x).
      fast_bias_correction  NNCF's fast (True) or full (False, our default: on lenet5 it kept
                    top-1 within 0.05 points where the fast one lost 1.5) bias correction.
      model_type    None | "transformer" (NNCF's ModelType).
    Returns {"calibration_samples", "ignored_requested", "ignored_ops", "fake_quantize_ops",
    "seconds", "nncf_version", "preset"}.
    """
    s = settings or NNCFSettings()
    ignored_types, preset = s.ignored_types, s.preset
    import_openvino()
    nncf = import_nncf()
    calib_x = np.ascontiguousarray(calib_x, np.float32)
    model = convert_onnx(onnx_path)
    _check_calibration(model, calib_x)
    names, missing = _ov_names_for(model, s.ignored_nodes)
    if missing:
        known = [op.get_friendly_name() for op in model.get_ordered_ops()
                 if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")][:8]
        raise InputError(f"no layer named {', '.join(map(repr, missing))} in {Path(onnx_path).name}",
                         hint=f"name ONNX nodes or OpenVINO ops, e.g. {', '.join(known)}")
    kwargs = _nncf_arguments(nncf, s, names, len(calib_x))
    from edgekit.progress import progress

    total = min(len(calib_x), int(kwargs.get("subset_size") or len(calib_x)))
    start = time.perf_counter()
    with progress(f"Calibrating with NNCF ({total} samples)", total=total) as advance:
        seen = [0]

        def counted(x: np.ndarray) -> np.ndarray:  # NNCF reads each sample through this
            if seen[0] < total:
                seen[0] += 1
                advance(1)
            return x

        dataset = nncf.Dataset([calib_x[i : i + 1] for i in range(len(calib_x))], counted)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quantized = nncf.quantize(model, dataset, **kwargs)
    seconds = time.perf_counter() - start
    save_ir(quantized, Path(out_xml), spec=spec, precision="int8")
    fq = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
    if fq == 0:
        raise ExportError("NNCF inserted no quantizers: nothing in this model was quantized",
                          hint="check ignored_nodes / ignored_types; int8 needs Conv or MatMul "
                          "layers")
    return {"calibration_samples": kwargs["subset_size"], "ignored_requested": list(s.ignored_nodes),
            "ignored_ops": names, "ignored_types": list(ignored_types), "fake_quantize_ops": fq,
            "seconds": round(seconds, 3), "nncf_version": nncf.__version__,
            "preset": preset or "nncf default"}


def _check_calibration(model: Any, calib_x: np.ndarray) -> None:
    """Calibration inputs NNCF can use for `model`: N,C,H,W, finite, of the model's C,H,W."""
    if calib_x.ndim != 4 or not len(calib_x):
        raise DataError(f"calibration inputs must be a non-empty N,C,H,W array, got shape "
                        f"{calib_x.shape}", hint="load them with edgekit.data.load_dataset")
    if not np.isfinite(calib_x).all():
        raise DataError("calibration inputs contain NaN or Inf", hint="clean or rebuild the set")
    shape = model.inputs[0].get_partial_shape()
    want = tuple(d.get_length() if d.is_static else None for d in shape)[1:] \
        if shape.rank.is_static else ()
    if len(want) != calib_x.ndim - 1 or any(
            w is not None and w != got for w, got in zip(want, calib_x.shape[1:], strict=True)):
        raise DataError(f"calibration inputs have shape (C,H,W) {tuple(calib_x.shape[1:])}, the "
                        f"model expects {want}",
                        hint="build the set for this model (uint8 images are resized to fit)")


def _nncf_arguments(nncf: Any, s: NNCFSettings, names: list[str], samples: int) -> dict[str, Any]:
    """nncf.quantize's keyword arguments for these settings."""
    kwargs: dict[str, Any] = {
        "subset_size": int(min(s.subset_size or samples, samples)),
        "fast_bias_correction": s.fast_bias_correction,
    }
    if names or s.ignored_types:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=names, types=list(s.ignored_types),
                                                    validate=False)
    if s.preset is not None:
        presets = {"performance": nncf.QuantizationPreset.PERFORMANCE,
                   "mixed": nncf.QuantizationPreset.MIXED}
        if s.preset not in presets:
            raise InputError(f"unknown quantization preset {s.preset!r}",
                             hint=f"choose one of: {', '.join(presets)}")
        kwargs["preset"] = presets[s.preset]
    if s.model_type is not None:
        kwargs["model_type"] = nncf.ModelType(s.model_type)
    return kwargs


def load_calibration(calib: str | Path | np.ndarray | None, spec: InputSpec,
                     data_dir: str | None = None, limit: int | None = None) -> tuple[np.ndarray, str]:
    """Calibration inputs from an array, a .npz calibration set or any data source."""
    if calib is None:
        from edgekit.data.hints import calibration_hint

        raise InputError("int8 needs a calibration set", hint=calibration_hint(spec))
    if isinstance(calib, np.ndarray):
        return calib, "array"
    from edgekit.data import load_dataset

    dataset = load_dataset(str(calib), spec, data_dir=data_dir, limit=limit)
    return dataset.x, str(calib)


class OpenVinoOptions(TargetOptions):
    calib: Any = Field(None, description="int8: calibration set (.npz or a data source)")
    calib_size: int | None = Field(None, ge=1, description="int8: images taken from it")
    ignored_nodes: tuple[str, ...] = Field((), description="int8: nodes NNCF keeps float")
    ignored_types: tuple[str, ...] = Field(RECURRENT_TYPES,
                                           description="int8: op types NNCF keeps float")
    preset: str | None = Field(None, description="int8: NNCF preset (performance | mixed)")
    min_agreement: float | None = Field(None, ge=0, le=1,
                                        description="parity: top-1 agreement at least this")


class OpenVinoTarget(Target):
    name = "openvino"
    precisions = ("fp32", "fp16", "int8")
    Options = OpenVinoOptions

    def export(self, source: str | Path, out_dir: Path, *, precision: str = "fp32",
               parity_data: np.ndarray | None = None, data_dir: str | None = None,
               **options: Any) -> Artifact:
        """IR from the fp32 ONNX model `source`; parity-checked against it with ONNX Runtime."""
        from edgekit.io.artifacts import spec_for

        opts = self.parse_options(options)
        calib, calib_size, filename = opts.calib, opts.calib_size, opts.filename
        ignored_nodes, ignored_types, preset = opts.ignored_nodes, opts.ignored_types, opts.preset
        min_agreement, atol, rtol = opts.min_agreement, opts.atol, opts.rtol

        self.check_precision(precision)
        ov = import_openvino()
        onnx_path = Path(source)
        spec = spec_for(onnx_path)
        out_dir = Path(out_dir)
        xml, weights = ir_paths(out_dir, precision, filename)
        config: dict[str, Any] = {"source_onnx": onnx_path.name, "weights": weights.name,
                                  "input_profile": _input_profile(spec)}
        if precision == "int8":
            calib_x, calib_source = load_calibration(calib, spec, data_dir, calib_size)
            if tuple(calib_x.shape[1:]) != tuple(spec.shape[1:]):
                raise DataError(f"calibration set {calib_source} has inputs of shape (C,H,W) "
                                f"{tuple(calib_x.shape[1:])}, the model expects "
                                f"{tuple(spec.shape[1:])}",
                                hint="store uint8 images in the set to have them resized")
            report = quantize_openvino(onnx_path, calib_x, xml, NNCFSettings(
                ignored_nodes=ignored_nodes, ignored_types=ignored_types, preset=preset),
                spec=spec)
            config["quantization"] = {**report, "calibration": _calib_info(calib, calib_source)}
        else:
            model = convert_onnx(onnx_path)
            save_ir(model, xml, spec=spec, precision=precision,
                    compress_to_fp16=precision == "fp16")
            config["compress_to_fp16"] = precision == "fp16"
        try:
            x, x_source = parity_inputs(spec, parity_data)
            reference = ort_logits(onnx_path, x)
            # Parity runs as the runner would: fp32 IRs in f32, others at the device's default.
            hint = "f32" if precision == "fp32" else None
            candidate, compiled_as = openvino_logits(xml, x, inference_precision=hint)
            measured = check_parity(
                reference, candidate, what=f"OpenVINO {precision} against the fp32 ONNX model",
                agreement=precision if min_agreement is None else min_agreement,
                # the rounding floor the ONNX export measured for this model, where it needed one
                tolerance=Tolerance(atol, rtol, TOLERANCE_SCALE.get(precision),
                                    fp32_floor=(lambda: recorded_fp32_floor(onnx_path))
                                    if precision == "fp32" else None),
                hint="for int8, try another calibration set or keep sensitive layers in float "
                     "(edgekit compress --int8 --max-drop ...); otherwise report the model")
            measured.update(inputs=x_source, inference_precision=compiled_as)
        except BaseException:
            xml.unlink(missing_ok=True)
            weights.unlink(missing_ok=True)
            raise
        return Artifact(path=xml, format="openvino", precision=precision,
                        metrics={"parity": measured}, config=config,
                        versions={**library_versions("openvino", "nncf", "onnx", "onnxruntime"),
                                  "openvino_runtime": ov.get_version()})


def _input_profile(spec: InputSpec) -> dict[str, Any]:
    return {"input": spec.input_name, "shape": list(spec.shape), "dynamic_batch": spec.dynamic_batch}


def _calib_info(calib: Any, source: str) -> dict[str, Any]:
    if isinstance(calib, str | Path) and Path(calib).suffix == ".npz" and Path(calib).is_file():
        from edgekit.data.calibration import calibration_info

        return calibration_info(calib)
    return {"source": source}



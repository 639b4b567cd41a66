"""Version skew, caught before sending: what the device's ONNX Runtime can load (asked of itself by
the agent's probe: its highest IR version and opset, the operators it has kernels or schemas for)
against what each ONNX artifact needs. An artifact the device cannot run is refused here, on the
workstation, with the fix (`edgekit export … --opset N`, or the node to keep float), instead of
failing on the device after the copy.

The rule: an ONNX artifact runs on the device's onnxruntime when
  - its IR version is at most the runtime's (`max_ir_version`),
  - its ai.onnx opset is at most the runtime's, and at most the profile's `max_opset` when set,
  - every node's operator is one the runtime has a kernel for (on the profile's providers) or a
    schema of, introduced at or before the model's opset for that domain.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from edgekit.devices import DeviceProfile
from edgekit.errors import InputError
from edgekit.remote.device import DeviceReport

ONNX_DOMAINS = {"ai.onnx": ""}


class RuntimeSkewError(InputError):
    """An artifact needs a newer runtime than the device has (refused before copying)."""


class OnnxNeeds(TypedDict):
    """What an ONNX file needs of a runtime: its IR version, opset per domain ("" is ai.onnx)
    and its operators as (node name, domain, op)."""

    ir_version: int
    opsets: dict[str, int]
    nodes: list[tuple[str, str, str]]


class RuntimeLimits(TypedDict):
    """What the device's onnxruntime loads (its probe's capabilities, the profile's max_opset
    applied): IR version, opset per domain, and per domain {op: the opset it came in} for the
    operators it has kernels and schemas for."""

    version: str
    max_ir_version: int | None
    max_opset: dict[str, int]
    kernels: dict[str, dict[str, int]]
    schemas: dict[str, dict[str, int]]


def onnx_needs(path: str | Path) -> OnnxNeeds:
    """IR version, opset per domain and the operators (node name, domain, op) of an ONNX file."""
    from edgekit.io.onnxfile import load_onnx

    model = load_onnx(path, load_external=False)
    functions = {(f.domain, f.name) for f in model.functions}
    nodes = [(n.name or (n.output[0] if n.output else "?"), ONNX_DOMAINS.get(n.domain, n.domain),
              n.op_type) for n in model.graph.node if (n.domain, n.op_type) not in functions]
    return {"ir_version": int(model.ir_version),
            "opsets": {ONNX_DOMAINS.get(o.domain, o.domain): int(o.version)
                       for o in model.opset_import},
            "nodes": nodes}


def device_limits(profile: DeviceProfile, report: DeviceReport) -> RuntimeLimits | None:
    """The device's onnxruntime version and capabilities, with the profile's max_opset applied;
    None when the device has no usable onnxruntime (nothing to check against)."""
    info = report.runtimes.get("onnxruntime") or {}
    caps = info.get("capabilities")
    if not info.get("importable") or not caps:
        if profile.max_opset is None:
            return None
        caps = {}
    max_opset = dict(caps.get("max_opset") or {})
    if profile.max_opset is not None:
        max_opset[""] = min(max_opset.get("", profile.max_opset), profile.max_opset)
    return {"version": info.get("version") or "?", "max_ir_version": caps.get("max_ir_version"),
            "max_opset": max_opset, "kernels": caps.get("kernels") or {},
            "schemas": caps.get("schemas") or {}}


def _op_since(domain: str, op: str, opset: int) -> int | None:
    """The opset that introduced the schema of `op` used at `opset` (this machine's onnx)."""
    try:
        import onnx.defs

        return int(onnx.defs.get_schema(op, opset, domain).since_version)
    except Exception:  # noqa: BLE001 - unknown to this onnx
        return None


def export_source(folder: Path) -> str:
    """The model file an output folder's ONNX export came from (its manifest), for the fix."""
    import json

    from edgekit.io.manifest import MANIFEST_NAME

    try:
        stages = json.loads((folder / MANIFEST_NAME).read_text()).get("stages", [])
    except (OSError, ValueError):
        return "SOURCE"
    for stage in stages:
        inputs = stage.get("inputs") or {}
        if str(stage.get("stage", "")).startswith(("export-onnx", "compress")):
            found = (inputs.get("source") or inputs.get("model") or {}).get("path")
            if found and not str(found).endswith(".onnx"):
                return str(found)
    return "SOURCE"


def artifact_problems(needs: OnnxNeeds, limits: RuntimeLimits, *, name: str,
                      precision: str, source: str = "SOURCE", out: str = "OUT"
                      ) -> list[tuple[str, str]]:
    """(what, fix) for each reason the device's runtime cannot run this artifact."""
    version = limits["version"]
    where = f"the device's onnxruntime {version}"
    problems: list[tuple[str, str]] = []
    max_opset = limits["max_opset"].get("")
    opset = needs["opsets"].get("")
    again = f"{out}-opset{max_opset}"
    fix_opset = (f"export it again for this device: edgekit export {source} --opset {max_opset} "
                 f"-o {again}/ (and for int8: edgekit compress {again}/model.onnx --int8 -o "
                 f"{again}/), or install a newer onnxruntime on the device")
    if opset is not None and max_opset is not None and opset > max_opset:
        problems.append((f"{name} uses ONNX opset {opset}; {where} loads opsets up to "
                         f"{max_opset}", fix_opset))
    max_ir = limits.get("max_ir_version")
    if max_ir is not None and needs["ir_version"] > max_ir:
        problems.append((f"{name} has ONNX IR version {needs['ir_version']}; {where} reads IR "
                         f"versions up to {max_ir}",
                         fix_opset if max_opset is not None else "install a newer onnxruntime "
                         "on the device"))
    if problems:  # the loader refuses the file before any operator matters
        return problems
    kernels, schemas = limits["kernels"], limits["schemas"]
    for node, domain, op in needs["nodes"]:
        if domain not in kernels and domain not in schemas:
            continue  # a domain the probe does not describe (nothing to judge it by)
        model_opset = needs["opsets"].get(domain, 1)
        first = min(kernels.get(domain, {}).get(op, 10 ** 6), schemas.get(domain, {}).get(op, 10 ** 6))
        if first <= model_opset:
            continue
        label = f"{domain}:{op}" if domain else op
        since = _op_since(domain, op, model_opset)
        what = (f"{name}: node {node!r} uses operator {label}"
                + (f" (opset {since})" if since else "") + f", which {where} does not have")
        if precision == "int8":
            fix = (f"keep that node float: edgekit compress {source} --int8 --keep-float {node} "
                   "(or install a newer onnxruntime on the device)")
        elif first < 10 ** 6 or (since and max_opset and since > max_opset):
            fix = fix_opset
        else:
            fix = "replace that operator in the model, or install a newer onnxruntime on the device"
        problems.append((what, fix))
    return problems


def check_skew(target: str | Path, profile: DeviceProfile, report: DeviceReport) -> list[str]:
    """Refuse (RuntimeSkewError, before anything is copied) when an ONNX artifact of `target`
    needs a newer onnxruntime than the device's. Returns the names of the artifacts checked."""
    from edgekit.io.artifacts import list_artifacts

    if "onnxruntime" not in profile.runtimes:
        return []
    limits = device_limits(profile, report)
    if limits is None:
        return []
    checked, problems = [], []
    target = Path(target)
    folder = target if target.is_dir() else target.parent
    for entry in list_artifacts(target):
        path = Path(entry["path"])
        if str(entry.get("format")) != "onnx":
            continue
        name = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name
        checked.append(name)
        problems += artifact_problems(onnx_needs(path), limits, name=name,
                                      precision=str(entry.get("precision", "fp32")),
                                      source=export_source(folder), out=str(folder))
    if problems:
        lines = "; ".join(what for what, _ in problems)
        fixes = list(dict.fromkeys(fix for _, fix in problems))
        raise RuntimeSkewError(
            f"{profile.name}: {len(problems)} problem(s) the device's runtime cannot run, "
            f"refused before copying anything: {lines}", hint="; ".join(fixes))
    return checked

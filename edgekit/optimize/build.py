"""Building candidates with the existing passes and targets, cached in the output folder.

A candidate is an architecture (pruning ratio, dwsep choice) with its weights at one stage —
`original` (unchanged), `init` (pruned/substituted, not trained yet), `short` or `full`
(distilled from the original) — exported to the fp32 ONNX model, then made into the artifact
one runtime runs at one precision. Each folder under out/candidates/ is keyed by everything that
made it, and holds a manifest like any edgekit output folder; a folder whose manifest records
its artifact is reused as it is.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.io.manifest import Manifest
from edgekit.optimize.cache import digest
from edgekit.optimize.space import SearchSpace, dwsep_label


class UnchangedError(InputError):
    """A candidate's pass changed nothing: it would be a copy of the model it started from."""


def runtime_target(runtime: str) -> tuple[str | None, str | None]:
    """(the export target that writes what `runtime` reads, that artifact's format), from the
    table of kinds (edgekit/kinds.py)."""
    from edgekit.kinds import KINDS

    kind = next((k for k in KINDS if runtime in k.runtimes and k.target), None)
    return (kind.target, kind.format) if kind else (None, None)


@dataclass(frozen=True)
class Arch:
    prune: float
    dwsep: str | int

    @property
    def changed(self) -> bool:
        return self.prune > 0 or self.dwsep != "off"

    @property
    def label(self) -> str:
        if not self.changed:
            return "original"
        parts = [f"prune {self.prune:g}"] if self.prune > 0 else []
        if self.dwsep != "off":
            parts.append(f"dwsep {dwsep_label(self.dwsep)}")
        return " + ".join(parts)


def fallback_nodes(onnx_path: Path, fallback: str) -> list[str]:
    """ONNX node names of a float-fallback set: a named set resolved on this graph (first-conv:
    the first Conv; depthwise: every grouped Conv), else the comma-separated names given."""
    if fallback in ("none", "latency"):  # latency: found by quantize's own profiling
        return []
    if fallback not in ("first-conv", "depthwise", "first-conv+depthwise"):
        return [n for n in fallback.split(",") if n]
    import onnx

    convs = [n for n in onnx.load(str(onnx_path), load_external_data=False).graph.node
             if n.op_type == "Conv"]
    names: list[str] = []
    if "first-conv" in fallback and convs:
        names.append(convs[0].name)
    if "depthwise" in fallback:
        for node in convs:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group > 1 and node.name not in names:
                names.append(node.name)
    return names


class Builder:
    """Makes (and finds again) the candidates of one optimize run."""

    def __init__(self, original: Any, checkpoint_sha: str, root: Path, space: SearchSpace, *,
                 train_source: str | None, calib_source: str | None, data_dir: str | None,
                 parity_x: Any, seed: int = 0, train: Any = None) -> None:
        self.original = original
        self.checkpoint_sha = checkpoint_sha
        self.root = Path(root) / "candidates"
        self.space = space
        self.train_source = train_source
        self.calib_source = calib_source
        self.data_dir = data_dir
        self.parity_x = parity_x
        self.seed = seed
        self.train = train  # TrainSettings: where distillation trains
        self._bundles: dict[str, Any] = {}
        self.seconds = {"build_s": 0.0, "distill_s": 0.0}

    # ------------------------------------------------------------ the fp32 model of a stage
    def _ctx(self, out_dir: Path):
        from edgekit.passes import PassContext

        # No eval source: the passes' own torch top-1 would cost time; the candidate's top-1 is
        # measured on its runtime.
        return PassContext(out_dir=out_dir, original=self.original,
                           train_source=self.train_source, calib_source=self.calib_source,
                           data_dir=self.data_dir, train=self.train)

    def _stage_key(self, arch: Arch, stage: str, round_to: int | None) -> dict[str, Any]:
        key: dict[str, Any] = {"checkpoint": self.checkpoint_sha, "prune": arch.prune,
                               "dwsep": arch.dwsep, "stage": stage}
        if arch.prune > 0:
            key.update(importance=self.space.importance, round_to=round_to)
        if arch.dwsep == "auto":
            key["dwsep_max_error"] = self.space.dwsep_max_error
        if stage in ("short", "full"):
            d = self.space.distill
            key["distill"] = ((d.short_epochs, d.short_limit) if stage == "short"
                              else (d.full_epochs, d.full_limit), d.lr, d.batch_size, self.seed)
            if self.train is not None and self.train.precision != "auto":  # an asked precision
                key["train_precision"] = self.train.precision  # trains other weights
            if self.inherits:  # its start may be a distilled parent's weights (inherit.py)
                key["inherit"] = True

        return key

    def model_dir(self, arch: Arch, stage: str, round_to: int | None) -> Path:
        name = "original" if stage == "original" else \
            f"{arch.label.replace(' + ', '_').replace(' ', '')}-{stage}"
        return self.root / f"{name}-{digest(self._stage_key(arch, stage, round_to))}"

    def fp32_onnx(self, arch: Arch, stage: str, round_to: int | None) -> Path:
        """The stage's fp32 ONNX model (built, or found from an earlier run)."""
        folder = self.model_dir(arch, stage, round_to)
        found = _find(folder, format="onnx", precision="fp32")
        if found is not None:
            return found
        bundle = self.bundle(arch, stage, round_to)
        from edgekit.pipeline import export_artifact

        artifact, _ = export_artifact(bundle, "onnx", folder, precision="fp32",
                                      parity_data=self.parity_x)
        return artifact.path

    def bundle(self, arch: Arch, stage: str, round_to: int | None):
        """The PyTorch model of a stage (loaded from its checkpoint when it was made before)."""
        folder = self.model_dir(arch, stage, round_to)
        key = str(folder)
        if key in self._bundles:
            return self._bundles[key]
        if stage == "original":
            bundle = self.original
        elif (folder / "model.pt").is_file():
            from edgekit.io.models import load_model

            bundle = load_model(folder / "model.pt")
        else:
            bundle = self._make(arch, stage, round_to, folder)
        self._bundles[key] = bundle
        return bundle

    def _make(self, arch: Arch, stage: str, round_to: int | None, folder: Path):
        import time

        from edgekit.io.models import save_checkpoint
        from edgekit.io.outputs import claim_output_folder
        from edgekit.passes import get_pass

        start = time.perf_counter()
        claim_output_folder(folder)  # edgekit's own folder (manifest first), as exports expect
        ctx = self._ctx(folder)
        if stage == "init":
            bundle = copy.deepcopy(self.original)
            steps: list[tuple[str, dict[str, Any]]] = []
            if arch.prune > 0:
                steps.append(("prune", {"ratio": arch.prune, "importance": self.space.importance,
                                        "round_to": round_to}))
            if arch.dwsep != "off":
                steps.append(("dwsep", {"rank": arch.dwsep,
                                        "max_error": self.space.dwsep_max_error}))
            for name, config in steps:
                step = get_pass(name)(config)
                step.check(bundle, ctx)
                before = len(bundle.surgery)
                bundle = step.apply(bundle, ctx)
                if name == "dwsep" and len(bundle.surgery) == before:
                    # a no-op pass yields no candidate: it would be built and timed as the
                    # architecture it started from
                    raise UnchangedError(
                        f"dwsep {dwsep_label(arch.dwsep)} substitutes no conv of this model: "
                        "nothing changed", hint="leave dwsep out of the space (--dwsep off)")
            spent = "build_s"
        else:  # short / full: distil the init architecture from the original
            bundle = copy.deepcopy(self.bundle(arch, "init", round_to))
            parent = self._parent(arch, round_to) if self.inherits else None
            bundle = parent[1] if parent else bundle  # progressive shrinking (inherit.py)
            d = self.space.distill
            epochs, limit = (d.short_epochs, d.short_limit) if stage == "short" else \
                (d.full_epochs, d.full_limit)
            step = get_pass("distill")({"epochs": epochs, "limit": limit, "lr": d.lr,
                                        "batch_size": d.batch_size, "seed": self.seed})
            step.check(bundle, ctx)
            bundle = step.apply(bundle, ctx)
            history = bundle.meta.get("history", {}).get("distill", {})
            Manifest(folder).add_stage("distill", config=step.config.model_dump(mode="json"),
                                       metrics={**{k: history[k] for k in
                                                   ("training", "teacher", "early_stop")
                                                   if k in history},
                                                "inherited_from": parent[0] if parent else None})
            spent = "distill_s"
        save_checkpoint(bundle, folder / "model.pt", optimize_stage=stage)
        bundle.source = folder / "model.pt"
        self.seconds[spent] += time.perf_counter() - start
        return bundle

    @property
    def inherits(self) -> bool:
        """Whether distillation may start from an already-distilled, less pruned candidate."""
        from edgekit.optimize.inherit import INHERIT_DEFAULT

        chosen = getattr(self.space.distill, "inherit", None)
        return INHERIT_DEFAULT if chosen is None else chosen

    def _parent(self, arch: Arch, round_to: int | None) -> tuple[str, Any] | None:
        """(its label, the child's start) when `arch` can inherit from a candidate already
        distilled (its model.pt is there): edgekit.optimize.inherit."""
        from edgekit.optimize.inherit import inherit, pick_parent

        done = [(a, s) for a in {Arch(p, arch.dwsep) for p in self.space.prune}
                for s in ("short", "full") if a.prune > 0
                and (self.model_dir(a, s, round_to) / "model.pt").is_file()]
        choice = pick_parent(arch, done)
        if choice is None:
            return None
        child = inherit(self.bundle(*choice, round_to), self.bundle(arch, "init", round_to))
        return None if child is None else (f"{choice[0].label} ({choice[1]})", child)

    # ------------------------------------------------------------ the runtime's artifact
    def artifact(self, arch: Arch, stage: str, target: str, fallback: str,
                 round_to: int | None, device: str | None = None, *,
                 build_on_device: bool = False) -> dict[str, Any]:
        """The manifest entry (with an absolute `path`) of the artifact `target` (runtime:
        precision) runs, made from the stage's fp32 ONNX model with `fallback` kept float
        (`latency`: the layers whose int8 form is slower than float on the local `device`).
        `build_on_device` (TensorRT on a remote device): the folder the device builds the
        engine from instead (`device_build_folder`)."""
        import time

        runtime, precision = target.split(":")
        if build_on_device and runtime == "tensorrt":
            return self.device_build_folder(arch, stage, precision, fallback, round_to)
        onnx_path = self.fp32_onnx(arch, stage, round_to)
        if target == "onnxruntime:fp32":
            return {**_entry(onnx_path.parent, onnx_path.name), "float_layers": []}
        nodes = fallback_nodes(onnx_path, fallback) if precision == "int8" else []
        latency_device = device if precision == "int8" and fallback == "latency" else None
        folder = onnx_path.parent / f"{runtime}-{precision}" \
            f"{'-' + digest(nodes, self.space.calib_size, self.calib_source, *filter(None, [latency_device])) if precision == 'int8' else ''}"
        fmt = runtime_target(runtime)[1]
        found = _find(folder, format=fmt, precision=precision)
        if found is not None:
            return {**_entry(folder, found.name), "float_layers": nodes}
        start = time.perf_counter()
        path = self._export(arch, stage, round_to, onnx_path, folder, runtime, precision, nodes,
                            latency_device)
        self.seconds["build_s"] += time.perf_counter() - start
        return {**_entry(folder, path.name), "float_layers": nodes}

    def device_build_folder(self, arch: Arch, stage: str, precision: str, fallback: str,
                            round_to: int | None) -> dict[str, Any]:
        """A TensorRT candidate for a remote device: engines are not portable, so the device
        builds it with the TensorRT target itself (`edgekit export out --target tensorrt
        --precision P`, the remote path's build step). This makes the self-contained folder it
        builds from: the fp32 ONNX model and, for int8, the TensorRT-flavour QDQ model (signed,
        symmetric, per-channel: what explicit quantization takes), with a manifest naming both.
        The entry's `build_on_device` says which precision to build; its path is the fp32 model,
        whose sha256 with the precision keys the measurement."""
        import time

        onnx_path = self.fp32_onnx(arch, stage, round_to)
        nodes = fallback_nodes(onnx_path, fallback) if precision == "int8" else []
        folder = onnx_path.parent / f"tensorrt-{precision}-device" \
            f"{'-' + digest(nodes, self.space.calib_size, self.calib_source) if precision == 'int8' else ''}"
        name = "model.onnx"
        if _find(folder, format="onnx", precision="fp32") is None:
            start = time.perf_counter()
            from edgekit.io.artifacts import manifest_entries
            from edgekit.io.files import atomic_path
            from edgekit.io.outputs import claim_output_folder

            claim_output_folder(folder)
            copies = [(onnx_path, folder / name)]
            entries = [{**_bare(manifest_entries(onnx_path)), "path": name, "format": "onnx",
                        "precision": "fp32", "role": "reference"}]
            if precision == "int8":
                qdq_folder = folder.parent / f"{folder.name}-qdq"
                qdq_folder.mkdir(parents=True, exist_ok=True)
                qdq = self._quantize(onnx_path, qdq_folder, "tensorrt", nodes)
                copies.append((qdq, folder / "model.int8.onnx"))
                entries.append({**_bare(manifest_entries(qdq)), "path": "model.int8.onnx",
                                 "format": "onnx", "precision": "int8", "flavour": "tensorrt"})
            for source, target in copies:
                for src, dst in ((source, target), (Path(str(source) + ".data"),
                                                    Path(str(target) + ".data"))):
                    if src.is_file():
                        with atomic_path(dst) as tmp:
                            shutil.copyfile(src, tmp)
            Manifest(folder).add_stage(f"optimize-tensorrt-{precision}-source",
                                       inputs={"source": onnx_path}, outputs=entries,
                                       config={"build_on_device": precision,
                                               "float_layers": nodes})
            self.seconds["build_s"] += time.perf_counter() - start
        return {**_entry(folder, name), "float_layers": nodes, "build_on_device": precision}

    def _export(self, arch: Arch, stage: str, round_to: int | None, onnx_path: Path,
                folder: Path, runtime: str, precision: str, nodes: list[str],
                latency_device: str | None = None) -> Path:
        from edgekit.pipeline import export_artifact

        folder.mkdir(parents=True, exist_ok=True)
        if precision == "int8":
            flavour = runtime
            path = self._quantize(onnx_path, folder, flavour, nodes, latency_device)
            if runtime != "tensorrt":
                return path
            artifact, _ = export_artifact(path, "tensorrt", folder, precision="int8",
                                          parity_data=self.parity_x)
            return artifact.path
        if runtime == "onnxruntime":  # fp16 comes from the PyTorch model
            source: Any = self.bundle(arch, stage, round_to)
        else:
            source = onnx_path
        artifact, _ = export_artifact(source, runtime_target(runtime)[0], folder,
                                      precision=precision, parity_data=self.parity_x)
        return artifact.path

    def _quantize(self, onnx_path: Path, folder: Path, flavour: str, nodes: list[str],
                  latency_device: str | None = None) -> Path:
        from edgekit.io.artifacts import spec_for
        from edgekit.passes import get_pass
        from edgekit.pipeline import _run_onnx_passes

        config = {"flavour": flavour, "exclude": nodes, "calib_size": self.space.calib_size,
                  "seed": self.seed}
        if latency_device:
            config.update(latency_fallback=True, latency_device=latency_device)
        step = get_pass("quantize")(config)
        spec = spec_for(onnx_path)
        ctx = self._ctx(folder)
        _run_onnx_passes([("quantize", step)], onnx_path, self.original.name, spec, ctx)
        return folder / Manifest(folder).artifacts()[-1]["path"]


def _find(folder: Path, **match: Any) -> Path | None:
    """The artifact a finished folder records (and still holds), else None."""
    if not (folder / "manifest.json").is_file():
        return None
    hit = Manifest(folder).find(**match)
    if hit is None or not (folder / hit["path"]).is_file():
        return None
    return folder / hit["path"]


def _bare(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The last manifest entry without what names its old place (path, sha256, size, role)."""
    entry = dict(entries[-1]) if entries else {}
    for key in ("path", "sha256", "size_bytes", "role", "flavour", "for"):
        entry.pop(key, None)
    return entry


def _entry(folder: Path, name: str) -> dict[str, Any]:
    from edgekit.io.artifacts import manifest_entries

    entries = manifest_entries(folder / name)
    entry = dict(entries[-1]) if entries else {}
    entry["path"] = folder / name
    return entry

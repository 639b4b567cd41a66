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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.data.given import DataSources
from edgekit.errors import InputError
from edgekit.io.artifacts import ArtifactEntry
from edgekit.io.manifest import Manifest
from edgekit.kinds import weights_file
from edgekit.optimize.cache import digest
from edgekit.optimize.records import Params
from edgekit.optimize.space import SearchSpace


class UnchangedError(InputError):
    """A candidate's pass changed nothing: it would be a copy of the model it started from.
    `knob` and `value` name the choice (optimize drops it from the space)."""

    def __init__(self, message: str, hint: str | None = None, *, knob: str | None = None,
                 value: Any = None) -> None:
        super().__init__(message, hint)
        self.knob, self.value = knob, value


def runtime_target(runtime: str) -> tuple[str | None, str | None]:
    """(the export target that writes what `runtime` reads, that artifact's format), from the
    table of kinds (edgekit/kinds.py) and the formats the runtime's Runner reads."""
    from edgekit.kinds import by_format, formats_read_by

    for fmt in formats_read_by(runtime):
        kind = by_format(fmt)
        if kind is not None and kind.target:
            return kind.target, kind.format
    return None, None


def portable(runtime: str) -> bool:
    """Whether what `runtime` reads can be built here and copied to a device (False: TensorRT
    engines, built on the device that runs them)."""
    from edgekit.kinds import by_format

    kind = by_format(runtime_target(runtime)[1])
    return kind is None or kind.portable


class Arch:
    """A candidate's architecture: one choice per searchable pass field (`Pass.search`), in the
    passes' usual order. `Arch(0.25, "auto")` gives them in that order, `Arch(prune=0.25)` by
    name; a knob not given is off. Read a choice as an attribute (`arch.prune`)."""

    __slots__ = ("choices",)

    def __init__(self, *values: Any, **named: Any) -> None:
        from edgekit.optimize.space import knobs

        found = knobs()
        if len(values) > len(found):
            raise TypeError(f"Arch takes {len(found)} choices, got {len(values)}")
        given = {k.name: v for k, v in zip(found, values, strict=False)}
        given.update(named)
        object.__setattr__(self, "choices", tuple(
            (k.name, _normal(k, given.get(k.name, k.off))) for k in found))

    @classmethod
    def of(cls, params: Params) -> Arch:
        """The architecture of a trial's params (choices as the study stores them)."""
        from edgekit.optimize.space import knobs

        return cls(**{k.name: params[k.name] for k in knobs() if k.name in params})

    def __getattr__(self, name: str) -> Any:
        for knob, value in object.__getattribute__(self, "choices"):
            if knob == name:
                return value
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Arch is frozen")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and self.choices == other.choices

    def __hash__(self) -> int:
        return hash(self.choices)

    def __repr__(self) -> str:
        return f"Arch({', '.join(f'{k}={v!r}' for k, v in self.choices)})"

    def on(self) -> list[tuple[Any, Any]]:
        """(knob, choice) for every knob whose pass runs in this candidate."""
        from edgekit.optimize.space import knobs

        values = dict(self.choices)
        return [(k, values[k.name]) for k in knobs() if not k.is_off(values[k.name])]

    @property
    def changed(self) -> bool:
        return bool(self.on())

    @property
    def label(self) -> str:
        if not self.changed:
            return "original"
        return " + ".join(f"{k.name} {k.label(v)}" for k, v in self.on())


def _normal(knob: Any, value: Any) -> Any:
    """A choice as the space holds it (a study stores categoricals as given: '2' or 2)."""
    if knob.is_off(value):
        return knob.off
    return knob.parse(value) if isinstance(value, str) else value


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
                 data: DataSources, parity_x: Any, seed: int = 0, train: Any = None) -> None:
        self.original = original
        self.checkpoint_sha = checkpoint_sha
        self.root = Path(root) / "candidates"
        self.space = space
        self.data = data  # train and calib (no eval: candidates are scored on their runtime)
        self.calib_source = data.calib
        self.parity_x = parity_x
        self.seed = seed
        self.train = train  # TrainSettings: where distillation trains
        self._bundles: dict[str, Any] = {}
        # teacher_s is the part of distill_s spent in the teacher (forwards, or reading its cache)
        self.seconds = {"build_s": 0.0, "distill_s": 0.0, "teacher_s": 0.0}

    # ------------------------------------------------------------ the fp32 model of a stage
    def _ctx(self, out_dir: Path):
        from edgekit.passes import PassContext

        # No eval source: the passes' own torch top-1 would cost time; the candidate's top-1 is
        # measured on its runtime.
        return PassContext(out_dir=out_dir, original=self.original,
                           data=self.data.model_copy(update={"eval": None}), train=self.train)

    def _stage_key(self, arch: Arch, stage: str, round_to: int | None) -> dict[str, Any]:
        key: dict[str, Any] = {"checkpoint": self.checkpoint_sha, **dict(arch.choices),
                               "stage": stage}
        device = {"round_to": round_to}
        for knob, value in arch.on():  # what else made it: the settings its passes ran with
            key.update({s: getattr(self.space, s) for s in knob.key_settings(value)})
            key.update({attr: device.get(attr) for attr in knob.device.values()})
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
        import time

        from edgekit.pipeline import export_artifact

        start = time.perf_counter()  # the export and its parity check are building too
        artifact, _ = export_artifact(bundle, "onnx", folder, precision="fp32",
                                      parity_data=self.parity_x)
        self.seconds["build_s"] += time.perf_counter() - start
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
            from edgekit.pipeline import apply_passes

            bundle = copy.deepcopy(self.original)
            passes = [(name, get_pass(name)(config))
                      for name, config in self.steps(arch, round_to)]
            bundle = apply_passes(bundle, passes, ctx, check=True, record=False,
                                  around=lambda name, _, before: _must_change(arch, name, before))
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
            self.seconds["teacher_s"] += float(history.get("teacher", {}).get("teacher_s", 0.0))
        save_checkpoint(bundle, folder / "model.pt", optimize_stage=stage)
        bundle.source = folder / "model.pt"
        self.seconds[spent] += time.perf_counter() - start
        return bundle

    def steps(self, arch: Arch, round_to: int | None) -> list[tuple[str, dict[str, Any]]]:
        """The compress steps that make `arch` from the original: per pass whose knob is on,
        its choice, the space's settings for it and the device's (round_to)."""
        from edgekit.passes.base import search_knobs

        device = {"round_to": round_to}
        values = dict(arch.choices)
        steps: dict[str, dict[str, Any]] = {}
        for pass_cls, knob in search_knobs():
            if knob.is_off(values[knob.name]):
                continue
            config = steps.setdefault(pass_cls.name, {})
            config[knob.field] = values[knob.name]
            config.update({f: getattr(self.space, s) for s, f in knob.settings.items()})
            config.update({f: device.get(attr) for f, attr in knob.device.items()})
        return list(steps.items())

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

        done = [(a, s) for a in {Arch(**{**dict(arch.choices), "prune": p}) for p in self.space.prune}
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
                 build_on_device: bool = False) -> ArtifactEntry:
        """The manifest entry (with an absolute `path`) of the artifact `target` (runtime:
        precision) runs, made from the stage's fp32 ONNX model with `fallback` kept float
        (`latency`: the layers whose int8 form is slower than float on the local `device`).
        `build_on_device` (TensorRT on a remote device): the folder the device builds the
        engine from instead (`device_build_folder`)."""
        import time

        runtime, precision = target.split(":")
        if build_on_device and not portable(runtime):
            return self.device_build_folder(arch, stage, runtime, precision, fallback, round_to)
        onnx_path = self.fp32_onnx(arch, stage, round_to)
        if runtime_target(runtime)[1] == "onnx" and precision == "fp32":  # the model itself
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

    def device_build_folder(self, arch: Arch, stage: str, runtime: str, precision: str,
                            fallback: str, round_to: int | None) -> ArtifactEntry:
        """A candidate of `runtime` (TensorRT) for a remote device: engines are not portable,
        so the device builds it with the TensorRT target itself (`edgekit export out --target tensorrt
        --precision P`, the remote path's build step). This makes the self-contained folder it
        builds from: the fp32 ONNX model and, for int8, the TensorRT-flavour QDQ model (signed,
        symmetric, per-channel: what explicit quantization takes), with a manifest naming both.
        The entry's `build_on_device` says which precision to build; its path is the fp32 model,
        whose sha256 with the precision keys the measurement."""
        import time

        onnx_path = self.fp32_onnx(arch, stage, round_to)
        nodes = fallback_nodes(onnx_path, fallback) if precision == "int8" else []
        folder = onnx_path.parent / f"{runtime}-{precision}-device" \
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
                qdq = self._quantize(onnx_path, qdq_folder, runtime, nodes)
                copies.append((qdq, folder / "model.int8.onnx"))
                entries.append({**_bare(manifest_entries(qdq)), "path": "model.int8.onnx",
                                 "format": "onnx", "precision": "int8", "flavour": runtime})
            for source, target in copies:
                for src, dst in ((source, target), (weights_file(source),
                                                    weights_file(target))):
                    if src is not None and dst is not None and src.is_file():
                        with atomic_path(dst) as tmp:
                            shutil.copyfile(src, tmp)
            Manifest(folder).add_stage(f"optimize-{runtime}-{precision}-source",
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
        target = runtime_target(runtime)[0]
        if precision == "int8":
            from edgekit.kinds import by_suffix, runtimes_reading

            flavour = runtime
            path = self._quantize(onnx_path, folder, flavour, nodes, latency_device)
            kind = by_suffix(path)
            if kind is not None and runtime in runtimes_reading(kind.format):
                return path  # the quantizer wrote what the runtime reads (QDQ ONNX, NNCF's IR)
            artifact, _ = export_artifact(path, target, folder, precision="int8",
                                          parity_data=self.parity_x)  # e.g. a TensorRT engine
            return artifact.path
        from edgekit.targets.base import get_target

        # a target that exports from the PyTorch model (ONNX fp16) gets it; others the fp32 ONNX
        source: Any = self.bundle(arch, stage, round_to) \
            if get_target(target).source == "checkpoint" else onnx_path
        artifact, _ = export_artifact(source, target, folder, precision=precision,
                                      parity_data=self.parity_x)
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


def _must_change(arch: Arch, name: str, before: Any) -> Callable[[Any], None]:
    """A pass whose knob declares what changing nothing means (`Knob.unchanged`) and that
    changed nothing (no surgery recorded, no weight shape changed) yields no candidate: it
    would be built and timed as the architecture it started from (UnchangedError)."""
    surgery = len(before.surgery)
    shapes = _shapes(before.model)

    def check(after: Any) -> None:
        for knob, value in arch.on():
            if knob.unchanged and _pass_of(knob) == name and len(after.surgery) == surgery \
                    and _shapes(after.model) == shapes:
                raise UnchangedError(
                    f"{knob.name} {knob.label(value)} {knob.unchanged}: nothing changed",
                    hint=f"leave {knob.name} out of the space (--{knob.name} "
                         f"{knob.label(knob.off)})", knob=knob.name, value=value)

    return check


def _pass_of(knob: Any) -> str:
    from edgekit.passes.base import search_knobs

    return next(p.name for p, k in search_knobs() if k is knob)


def _shapes(model: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


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


def _entry(folder: Path, name: str) -> ArtifactEntry:
    from edgekit.io.artifacts import manifest_entries

    entries = manifest_entries(folder / name)
    entry: ArtifactEntry = dict(entries[-1]) if entries else {}
    entry["path"] = folder / name
    return entry

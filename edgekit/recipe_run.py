"""`edgekit run`: a recipe, stage by stage, each stage recorded in the output folder's manifest
(`run:model`, `run:compress`, `run:export-…`, `run:validate-<device>`, `run:report`).

Resume: every stage carries a key (a hash of its part of the recipe and of the sha256 of what it
reads). Rerun after an interruption, a stage whose record has the same key and whose outputs are
still there with the same sha256 is skipped; the first stage that differs runs, and so does every
stage after it (their keys include its outputs). Validation records go into the results store
under a run id equal to the stage key, so a run killed between storing and recording the stage
does not store twice. Artifacts are written atomically (temp file, then rename), so a killed
stage leaves nothing a later stage would take for whole.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import errors
from edgekit.errors import ConfigError, InputError, MissingDependencyError
from edgekit.events import discard, emit, sink
from edgekit.io.files import cache_dir, sha256_file
from edgekit.io.manifest import MANIFEST_NAME, Manifest
from edgekit.io.outputs import check_inside, check_output_folder, check_outputs, claim_output_folder
from edgekit.recipe import Recipe, device_profile, load_recipe, resolve_path

PREFIX = "run:"
STORE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


TAG = "edgekit run"  # the lines a run says: [edgekit run] ...


# ---------------------------------------------------------------- the model
def model_checkpoint(recipe: Recipe, recipe_path: Path, data_dir: str | None) -> Path:
    """The trained model file the recipe starts from: a zoo model (the checkpoint shipped with
    edgekit, else trained on first use and cached in .cache/zoo/NAME.pt with the zoo's default
    training), the recipe's file, or an
    architecture trained on the recipe's train data (cached under .cache/models/)."""
    src = recipe.model
    if src.path:
        path = Path(resolve_path(src.path, recipe_path))
        if not path.is_file():
            raise ConfigError(f"{recipe_path}: model.path {src.path} does not exist",
                              hint="train or download the model first, or use zoo: NAME")
        return path
    overrides = src.train.model_dump(exclude_none=True, exclude_defaults=True) if src.train else {}
    if src.zoo:
        from edgekit.zoo import get_entry

        entry = get_entry(src.zoo)
        if not overrides:  # the zoo's default training: the checkpoint shipped with edgekit
            from edgekit.zoo import shipped_checkpoint

            shipped = shipped_checkpoint(src.zoo)
            if shipped is not None:
                emit(f"model: the trained {src.zoo} shipped with edgekit ({shipped})", TAG)
                return shipped
        suffix = "" if not overrides else "-" + _key(overrides)[:8]
        path = cache_dir() / "zoo" / f"{src.zoo}{suffix}.pt"
        if path.is_file():
            emit(f"model: reusing the trained {src.zoo} in {path}", TAG)
            return path
        from edgekit.io.models import save_checkpoint
        from edgekit.zoo.train import TrainConfig, train_zoo_model

        cfg = TrainConfig(**{"epochs": entry.epochs, **entry.train, **overrides})
        emit(f"model: training {src.zoo} ({cfg.epochs} epochs) on first use -> {path}", TAG)
        bundle, summary = train_zoo_model(src.zoo, cfg, data_dir=data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(bundle, path)
        emit(f"model: {src.zoo} test top-1 {summary['test_top1']:.4f}", TAG)
        return path
    return _train_arch(recipe, data_dir, overrides)


def _train_arch(recipe: Recipe, data_dir: str | None, overrides: dict[str, Any]) -> Path:
    src = recipe.model
    if recipe.input is None or recipe.input.shape is None:
        raise ConfigError("a model built from model.arch needs input.shape",
                          hint="add e.g. `input: {shape: [1, 3, 32, 32]}`")
    if not recipe.data.train:
        raise ConfigError("a model built from model.arch is trained on data.train, which is "
                          "missing", hint="add data.train (e.g. fashion-mnist:train), or give "
                          "model.path with trained weights")
    from edgekit.io.models import build_arch, resolve_model_spec

    # an untrusted recipe's arch is built as a model file's is (edgekit.recipe, io.archs)
    model = build_arch(src.arch, src.arch_kwargs, trusted=recipe.trusted)
    ov = recipe.input
    # The one rule (edgekit.preprocessing.resolve_preprocessing): the recipe's keys or a preset it names.
    # edgekit trains this model itself, so without mean/std it trains with what the
    # architecture documents (preset "arch"), and the checkpoint records it.
    given = _given(ov)
    if given["preset"] is None and (ov.mean is None or ov.std is None):
        given["preset"] = "arch"
    try:
        spec, _ = resolve_model_spec(None, what=src.arch, model=model, arch=src.arch,
                                     input_shape=ov.shape, preprocessing=given)
    except InputError as exc:
        raise ConfigError(f"input: {exc.message}", hint=RECIPE_INPUT_HINT) from None
    spec = _spec(recipe, spec)
    name = src.arch.split(":")[-1]
    path = cache_dir() / "models" / f"{name}-{_key(src.arch, src.arch_kwargs, overrides, spec.to_json(), recipe.data.train)[:10]}.pt"
    if path.is_file():
        emit(f"model: reusing the trained {name} in {path}", TAG)
        return path
    from edgekit.data import load_dataset, load_raw
    from edgekit.io.models import ModelBundle, save_checkpoint
    from edgekit.zoo.train import TrainConfig, fit

    cfg = TrainConfig(**{"epochs": 1, **overrides})
    raw = load_raw(recipe.data.train, data_dir=data_dir)
    if getattr(raw, "class_names", ()) and not spec.class_names:  # an image folder's classes
        spec = spec.model_copy(update={"class_names": tuple(raw.class_names)})
    eval_set = load_dataset(recipe.data.eval, spec, data_dir=data_dir,
                            limit=recipe.data.eval_limit or 2000)
    emit(f"model: training {name} ({cfg.epochs} epochs) on {recipe.data.train} -> {path}", TAG)
    history = fit(model, raw, spec, eval_set, cfg, description=f"Training {name}")
    bundle = ModelBundle(model, spec, src.arch, dict(src.arch_kwargs),
                         meta={"name": name, "train_config": cfg.model_dump(mode="json"),
                               "history": history})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(bundle, path)
    return path


RECIPE_INPUT_HINT = ("add input.shape, input.mean and input.std (e.g. shape: [1, 3, 64, 64], "
                     "mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]), or name a preset: "
                     "input.preprocessing: imagenet | cifar10 | fashion-mnist | mnist | arch")


def _given(ov: Any) -> dict[str, Any]:
    """A recipe's input keys as the one preprocessing rule takes them."""
    if ov is None:
        return {"preset": None}
    keys = ("mean", "std", "resize", "crop", "channel_order")
    return {"preset": ov.preprocessing, **{k: getattr(ov, k) for k in keys}}


def _spec(recipe: Recipe, base: Any):
    """The recipe's input keys (shape, mean, std, resize, crop, channel_order, class_names) over
    the model's spec."""
    from edgekit.spec import InputSpec

    ov = recipe.input
    spec = base
    if ov is None:
        return spec
    if ov.shape is not None:
        from edgekit.spec import channel_change_problem, channels_hint

        if problem := channel_change_problem(spec, ov.shape[1], {"mean": ov.mean, "std": ov.std}):
            raise ConfigError(f"the recipe's input.shape: {problem}",
                              hint=channels_hint(ov.shape[1]).replace("--mean", "input.mean")
                              .replace("--std", "input.std").replace("--input-shape", "input.shape"))
    if ov.shape is not None and tuple(ov.shape) != spec.shape:
        spec = spec.with_shape(ov.shape)
    spec = spec.with_preprocessing(mean=ov.mean, std=ov.std, resize=ov.resize, crop=ov.crop,
                                   channel_order=ov.channel_order)
    if ov.class_names is not None:
        spec = InputSpec.model_validate({**spec.model_dump(), "class_names": ov.class_names})
    return spec


def load_bundle(recipe: Recipe, checkpoint: Path):
    from edgekit.io.models import load_model

    src = recipe.model
    shape = recipe.input.shape if recipe.input and recipe.input.shape else None
    try:
        bundle = load_model(checkpoint, arch=src.arch if src.path else None,
                            arch_kwargs=src.arch_kwargs if src.path else None, input_shape=shape,
                            trust_model=src.trust_model, preprocessing=_given(recipe.input),
                            trusted_arch=recipe.trusted)
    except errors.MissingPreprocessingError as exc:
        raise ConfigError(f"input: {exc.message}", hint=RECIPE_INPUT_HINT) from None
    bundle.spec = _spec(recipe, bundle.spec)
    return bundle


# ---------------------------------------------------------------- stages
class RecipeRun:
    """One `edgekit run`: the recipe, its output folder, the store, and the stage log."""

    def __init__(self, recipe_path: str | Path, out_dir: str | Path | None = None, *,
                 store: str | Path | None = None, data_dir: str | None = None,
                 fresh: bool = False, trust_recipe: bool = False) -> None:
        self.fresh = fresh
        self.recipe_path = Path(recipe_path)
        self.recipe = load_recipe(self.recipe_path, trust=trust_recipe)
        self.out = Path(out_dir or Path("out") / self.recipe.name)
        check_output_folder(self.out)
        report = self.recipe.report
        # A recipe names its outputs; they stay inside the output folder, with a report's suffix.
        self.store_path = Path(store) if store else check_inside(
            report.store, self.out, "report.store", suffixes=STORE_SUFFIXES)
        self.html_path = check_inside(report.html, self.out, "report.html",
                                      suffixes=(".html", ".htm"))
        self.md_path = check_inside(report.markdown, self.out, "report.markdown",
                                    suffixes=(".md", ".markdown")) if report.markdown else None
        self.data_dir = data_dir or (resolve_path(self.recipe.data.data_dir, self.recipe_path)
                                     if self.recipe.data.data_dir else None)
        self.log: list[dict[str, Any]] = []
        self.devices: dict[str, dict[str, Any]] = {}
        self.run_ids: list[str] = []

    # --------------------------------------------------------------- helpers
    def data(self, value: str | None) -> str | None:
        return resolve_path(value, self.recipe_path) if value else None

    def _done(self, name: str, key: str) -> dict[str, Any] | None:
        """The stage's record when it finished with this key and its outputs are intact."""
        if self.fresh:
            return None
        manifest = Manifest(self.out) if (self.out / "manifest.json").exists() else None
        record = manifest.stage(PREFIX + name) if manifest else None
        if not record or record["config"].get("key") != key:
            return None
        for item in record["metrics"].get("produced", []):
            path = self.out / item["path"]
            if not path.is_file() or sha256_file(path) != item["sha256"]:
                return None
        return record

    def _record(self, name: str, key: str, *, inputs: dict[str, Path] | None = None,
                produced: list[str] | None = None, **metrics: Any) -> None:
        items = [{"path": p, "sha256": sha256_file(self.out / p)} for p in produced or []]
        Manifest(self.out).add_stage(PREFIX + name, inputs=inputs or {},
                                     config={"key": key, "recipe": str(self.recipe_path)},
                                     metrics={"produced": items, **metrics})

    def _stage(self, name: str, key: str, work: Callable[[], dict[str, Any] | None], *,
               spent_s: float = 0.0) -> dict:
        """Run `work` unless the stage finished earlier with this key; log its seconds.
        `spent_s`: seconds this run already spent on the stage before its key was known (the
        model stage: obtaining, maybe training, the checkpoint whose sha256 the key holds)."""
        record = self._done(name, key)
        if record is not None:
            emit(f"{name}: finished earlier (key {key}), skipped", TAG)
            self.log.append({"stage": name, "status": "resumed", "seconds": round(spent_s, 2)})
            return record["metrics"]
        emit(f"{name}: running", TAG)
        start = time.perf_counter()
        metrics = work() or {}
        seconds = round(spent_s + time.perf_counter() - start, 2)
        self.log.append({"stage": name, "status": metrics.pop("_status", "done"),
                         "seconds": seconds})
        return metrics

    def _artifact_shas(self) -> list[tuple[str, str]]:
        manifest = Manifest(self.out)
        return sorted((a["path"], a.get("sha256", "")) for a in manifest.artifacts()
                      if not a["stage"].startswith(PREFIX))

    # --------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        from edgekit.results.store import open_store

        r = self.recipe
        self._check_outputs()
        if self.store_path.exists():  # refuse a store that is not ours before any work
            open_store(self.store_path).close()
        source = None
        if r.model.path:  # the user's model (arch, state_dict, input) fits before anything is written
            with sink(discard):  # said below, when the model stage takes it
                source = model_checkpoint(r, self.recipe_path, self.data_dir)
            load_bundle(r, source)
        if (self.out / MANIFEST_NAME).is_file() and not any(
                str(s.get("stage", "")).startswith(PREFIX) for s in Manifest(self.out).stages):
            # an edgekit folder no run made (compress, export): another model's outputs there
            # are refused, as export refuses them, before the run forgets or replaces anything
            from edgekit.pipeline import check_export_reuse

            check_export_reuse(self.out, source, None, PREFIX + "model")
        claim_output_folder(self.out)
        start = time.perf_counter()  # training a model on first use is the model stage's time
        checkpoint = model_checkpoint(r, self.recipe_path, self.data_dir)
        model_s = time.perf_counter() - start
        model_key = _key(r.model.model_dump(mode="json"), r.input and r.input.model_dump(mode="json"),
                         sha256_file(checkpoint))

        def model_stage() -> dict[str, Any]:
            self._record("model", model_key, inputs={"checkpoint": checkpoint})
            return {}

        self._stage("model", model_key, model_stage, spent_s=model_s)
        data = r.data.model_dump(mode="json")
        compress_key = _key(model_key, r.step_list(), data)
        self._stage("compress", compress_key, lambda: self._compress(checkpoint, compress_key))
        for spec in r.exports:
            if spec.target == "onnx" and spec.precision == "fp32":
                continue  # the compress stage made it (the fp32 reference)
            key = _key(compress_key, spec.model_dump(mode="json"), r.data.calib, r.data.eval)
            self._stage(spec.stage, key, lambda s=spec, k=key: self._export(s, k))
        shas = self._artifact_shas()
        for i, ref in enumerate(r.devices):
            device = device_profile(ref, where=f"{self.recipe_path}: devices[{i}]")
            key = _key(device.model_dump(mode="json"), r.budget.model_dump(mode="json"),
                       r.data.eval, r.data.eval_limit, r.decide, shas)
            metrics = self._stage(f"validate-{device.name}", key,
                                  lambda d=device, k=key: self._validate(d, k))
            self.devices[device.name] = metrics
            if metrics.get("run_id"):
                self.run_ids.append(metrics["run_id"])
        if not any(m.get("run_id") for m in self.devices.values()):
            reasons = "; ".join(f"{n}: {m.get('skipped', '?')}" for n, m in self.devices.items())
            raise MissingDependencyError(f"no device of {self.recipe_path} could be validated "
                                         f"here ({reasons})",
                                         hint="run `edgekit devices` to see what works here")
        self._report()
        passed = all(m.get("passed", True) for m in self.devices.values() if m.get("run_id"))
        return {"recipe": r.name, "out": str(self.out), "store": str(self.store_path),
                "report": str(self.html_path), "markdown": str(self.md_path or ""),
                "stages": self.log, "devices": self.devices, "passed": passed}

    def _check_outputs(self) -> None:
        """No output of the run (report, store, the folder's own files) is one of its inputs
        (the recipe, its model, its data) or another output."""
        from edgekit.data.paths import source_paths
        from edgekit.passes import get_pass

        r = self.recipe
        model = Path(resolve_path(r.model.path, self.recipe_path)) if r.model.path else None
        written = [MANIFEST_NAME, "original.onnx", "model.pt", "model.onnx",
                   *(n for name, config in r.step_list() for n in get_pass(name)(config).outputs())]
        check_outputs(
            {"report.html": self.html_path, "report.markdown": self.md_path,
             "the results store": [self.store_path, self.store_path.with_suffix(".jsonl")],
             "the output": [self.out / n for n in written]},
            {"the recipe": self.recipe_path, "model.path": model,
             **{f"data.{name}": source_paths(self.data(value), self.data_dir)
                for name, value in (("train", r.data.train), ("eval", r.data.eval),
                                    ("calib", r.data.calib))}})

    def _compress(self, checkpoint: Path, key: str) -> dict[str, Any]:
        from edgekit.passes import PassContext
        from edgekit.pipeline import compress, export_artifact
        from edgekit.zoo.accel import train_settings

        # A fresh compress replaces what an earlier, different run of this folder made: the
        # manifest forgets those stages (files stay; nothing is deleted behind the user's back).
        Manifest(self.out).forget(lambda s: s["stage"] == PREFIX + "model")
        r = self.recipe
        bundle = load_bundle(r, checkpoint)
        steps = r.step_list()
        from edgekit.passes import get_pass

        if any(get_pass(name).kind == "torch" for name, _ in steps):
            self._export_original(bundle)
        if steps:
            from edgekit.data.given import DataSources

            data = DataSources(train=self.data(r.data.train), eval=self.data(r.data.eval),
                               calib=self.data(r.data.calib), data_dir=self.data_dir,
                               eval_limit=r.data.eval_limit)
            ctx = PassContext(out_dir=self.out, data=data, train=train_settings(r.training))
            result = compress(bundle, steps, ctx, claim=False)  # the run owns the folder
            rows = [{k: v for k, v in row.items() if isinstance(v, str | int | float | None)}
                    for row in result["rows"]]
        else:
            export_artifact(bundle, "onnx", self.out, precision="fp32",
                            parity_source=self.data(r.data.eval), data_dir=self.data_dir)
            rows = []
        produced = [a["path"] for a, _ in self._artifact_paths()]
        self._record("compress", key, inputs={"checkpoint": checkpoint}, produced=produced,
                     rows=rows)
        return {"rows": rows}

    def _export_original(self, bundle) -> None:
        """The uncompressed model as `original.onnx`, marked as the fp32 reference: the gate
        then measures what compression as a whole cost, and the report plots where it started."""
        from edgekit.pipeline import parity_sample
        from edgekit.targets.base import get_target

        r = self.recipe
        parity = parity_sample(bundle.spec, self.data(r.data.eval), self.data_dir)
        artifact = get_target("onnx").export(bundle, self.out, precision="fp32",
                                             parity_data=parity, filename="original.onnx")
        Manifest(self.out).add_stage(
            "export-onnx-fp32-original", inputs={"source": bundle.source} if bundle.source else {},
            config={"target": "onnx", "precision": "fp32", "role": "reference"},
            outputs=[{**artifact.manifest_entry(self.out), "role": "reference",
                      "model": bundle.name, "input_spec": bundle.spec.model_dump(mode="json")}],
            metrics=artifact.metrics, versions=artifact.versions)

    def _artifact_paths(self):
        manifest = Manifest(self.out)
        return [(a, self.out / a["path"]) for a in manifest.artifacts()
                if not a["stage"].startswith(PREFIX) and (self.out / a["path"]).is_file()]

    def _export(self, spec, key: str) -> dict[str, Any]:
        from edgekit.pipeline import export_artifact

        if spec.on_device:
            self._record(spec.stage, key, note="built on the device that runs it (remote "
                         "validation builds it there)")
            return {"_status": "on device"}
        r = self.recipe
        options = dict(spec.options)
        from edgekit.targets.base import get_target

        if spec.precision == "int8" and "calib" in get_target(spec.target).Options.model_fields:
            options.setdefault("calib", self.data(r.data.calib))
        try:
            artifact, _ = export_artifact(self.out, spec.target, self.out, precision=spec.precision,
                                          parity_source=self.data(r.data.eval),
                                          data_dir=self.data_dir, **options)
        except MissingDependencyError as exc:
            emit(f"{spec.stage}: skipped, {exc.message}", TAG)
            self._record(spec.stage, key, skipped=exc.message)
            return {"_status": "skipped"}
        self._record(spec.stage, key, produced=[str(artifact.path.relative_to(self.out))])
        return {}

    def _validate(self, device, key: str) -> dict[str, Any]:
        from edgekit.data.given import DataSources
        from edgekit.executors import ValidationJob
        from edgekit.results.store import open_store
        from edgekit.validate.validator import save, summarize, validate

        r = self.recipe
        run_id = f"{r.name}-{key}"
        if self.fresh:  # measure again; the earlier records stay in the store
            from edgekit.results.store import new_run_id

            run_id += f"-{new_run_id()[:8]}"
        with open_store(self.store_path) as store:
            stored = store.records(run_id=run_id) if store.has_run(run_id) else None
        if stored:  # stored before an interruption; the stage record was not written yet
            emit(f"validate-{device.name}: records of run {run_id} already stored", TAG)
            summary = summarize(stored, r.decide)
        else:
            try:
                result = validate(ValidationJob(
                    target=self.out, device=device,
                    budget=r.budget,
                    artifact=r.decide, run_id=run_id,
                    data=DataSources(eval=self.data(r.data.eval), data_dir=self.data_dir,
                                     eval_limit=r.data.eval_limit)))
            except MissingDependencyError as exc:
                emit(f"validate-{device.name}: skipped, {exc.message}", TAG)
                self._record(f"validate-{device.name}", key, skipped=exc.message)
                return {"skipped": exc.message, "_status": "skipped"}
            ids = save(result, self.store_path)
            run_id = getattr(result, "run_id", run_id)
            summary = summarize(result.records, r.decide)
            summary["stored_ids"] = len(ids)
            for status in result.missing_runtimes:
                emit(f"validate-{device.name}: runtime {status.name} not usable here: "
                     f"{status.reason} (validated the rest)", TAG)
        summary["run_id"] = run_id
        self._record(f"validate-{device.name}", key, **summary)
        return dict(summary)

    def _report(self) -> None:
        from edgekit.results.report import write_report
        from edgekit.results.store import open_store

        start = time.perf_counter()
        with open_store(self.store_path) as store:
            records = [rec for run_id in self.run_ids
                       for rec in store.records(with_samples=True, run_id=run_id)]
        write_report(records, self.html_path, markdown_path=self.md_path,
                     title=f"edgekit report: {self.recipe.name}", source=str(self.store_path))
        self.log.append({"stage": "report", "status": "done",
                         "seconds": round(time.perf_counter() - start, 2)})
        emit(f"report: {self.html_path}", TAG)


def run_recipe(recipe_path: str | Path, out_dir: str | Path | None = None, *,
               store: str | Path | None = None, data_dir: str | None = None,
               fresh: bool = False, trust_recipe: bool = False) -> dict[str, Any]:
    """Run a recipe into `out_dir` (default out/<recipe name>); see the module docstring.
    `fresh` runs every stage again instead of resuming; `trust_recipe` (--trust-recipe) lets
    the recipe name any arch and trust its model file (edgekit.recipe)."""
    from edgekit.io.outputs import removed_on_refusal

    run = RecipeRun(recipe_path, out_dir, store=store, data_dir=data_dir, fresh=fresh,
                    trust_recipe=trust_recipe)
    with removed_on_refusal(run.out):  # refused after claiming it: nothing half-made stays
        return run.run()

"""Stages that chain through an output folder's manifest: export (and, with the recipe runner,
compress and validate). Each stage reads what it needs from the manifest and records what it made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.chain_budget import annotate_drops, chain_budget, check_chain_budget
from edgekit.compress_checks import check_compress_outputs, check_data_exists, check_image_data
from edgekit.errors import EdgekitError, InputError
from edgekit.io.manifest import MANIFEST_NAME, Manifest
from edgekit.io.outputs import check_output_folder, check_outputs, claim_output_folder
from edgekit.kinds import TORCH_SUFFIXES
from edgekit.preprocessing import Preprocessing
from edgekit.targets.base import Artifact, get_target

# What each target exports from: a torch model (checkpoint) or the fp32 ONNX model.
DEFAULT_PARITY_SOURCE = "fashion-mnist:test"


def resolve_source(source: Path, kind: str, model_options: dict[str, Any]) -> tuple[Any, Path]:
    """The export source (a ModelBundle or an ONNX path) from a model file or an output folder."""
    if source.is_dir() and (source / MANIFEST_NAME).exists():
        manifest = Manifest(source)
        match = manifest.find(format="checkpoint") if kind == "checkpoint" else \
            manifest.find(format="onnx", precision="fp32")
        if match is None:
            want = "an edgekit checkpoint" if kind == "checkpoint" else "an fp32 ONNX model"
            raise InputError(f"{source} holds no {want} to export from",
                             hint="export to ONNX first: edgekit export MODEL.pt --target onnx -o "
                             f"{source}")
        source = source / match["path"]
    elif source.is_dir():
        raise InputError(f"{source} is a directory without {MANIFEST_NAME}",
                         hint="pass a model file, or an output folder written by edgekit")
    if kind == "checkpoint":
        if source.suffix == ".onnx":
            raise InputError("the onnx target exports from a PyTorch model, not from an .onnx file",
                             hint="pass the .pt file (or the folder holding its checkpoint)")
        from edgekit.io.models import load_model

        return load_model(source, **model_options), source
    if source.suffix != ".onnx":
        raise InputError(f"this target exports from an ONNX model, got {source.name}",
                         hint="export to ONNX first, then pass the output folder or the .onnx file")
    return source, source


def parity_sample(spec, source: str | None, data_dir: str | None = None):
    """Real inputs for parity checks; None (random inputs, recorded as such) when unavailable."""
    from edgekit.data import load_dataset
    from edgekit.errors import DataError

    try:
        return load_dataset(source or DEFAULT_PARITY_SOURCE, spec, data_dir=data_dir, limit=256).x
    except DataError:
        if source:
            raise
        return None


def recorded_eval(source: Path) -> str | None:
    """The eval data a compress into `source`'s folder recorded (where parity is judged when
    no --parity-data is given): the user's own data, not a built-in set of another shape."""
    folder = source if source.is_dir() else source.parent
    if not (folder / MANIFEST_NAME).is_file():
        return None
    try:
        stages = Manifest(folder).stages
    except EdgekitError:
        return None
    for stage in reversed(stages):
        data = (stage.get("config") or {}).get("data") or {}
        if isinstance(data, dict) and isinstance(data.get("eval"), str):
            return data["eval"]
    return None


def export_artifact(source: Any, target: str, out_dir: str | Path | None, *,
                    precision: str = "fp32", model_options: dict[str, Any] | None = None,
                    parity_source: str | None = None, data_dir: str | None = None,
                    **options: Any) -> tuple[Artifact, dict[str, Any]]:
    """Export `source` (a model file, an output folder, an .onnx file or a loaded ModelBundle)
    with `target` into `out_dir` and record the stage in its manifest."""
    from edgekit.io.models import ModelBundle

    bundle = source if isinstance(source, ModelBundle) else None
    source = Path(bundle.source or "model") if bundle else Path(source)
    if out_dir is None:
        if not source.is_dir():
            raise InputError("no output folder given", hint="pass -o OUT/")
        out_dir = source
    out_dir = Path(out_dir)
    check_output_folder(out_dir)  # a folder edgekit does not own is refused before any work
    exporter = get_target(target)
    exporter.check_precision(precision)
    if exporter.source != "checkpoint" and (bundle is not None or source.suffix in TORCH_SUFFIXES):
        # A PyTorch model for a target that reads ONNX (OpenVINO, TensorRT): its fp32 ONNX
        # first, into the same folder, as a user would chain the two commands.
        export_artifact(bundle or source, "onnx", out_dir, model_options=model_options,
                        parity_source=parity_source, data_dir=data_dir)
        bundle, source = None, out_dir
    if bundle is not None:
        loaded, source_file = bundle, bundle.source
    else:
        loaded, source_file = resolve_source(source, exporter.source, model_options or {})
    if target == "onnx":
        spec = loaded.spec
    else:
        from edgekit.io.artifacts import spec_for

        spec = spec_for(loaded)
    # Every target checks parity on real inputs (against torch for ONNX, the fp32 ONNX otherwise).
    parity_data = options.pop("parity_data", None)
    from edgekit.data.paths import source_paths

    calib = options.get("calib")
    check_outputs({"the output": out_dir / MANIFEST_NAME},
                  {"the source": source_file, "--parity-data": source_paths(parity_source, data_dir),
                   "--calib": source_paths(calib, data_dir) if isinstance(calib, str) else None})
    check_export_reuse(out_dir, source_file, loaded, f"export-{target}-{precision}")
    if parity_data is None and parity_source is None and bundle is None:
        parity_source = recorded_eval(source)  # the eval data the folder knows
    if parity_data is None:
        parity_data = parity_sample(spec, parity_source, data_dir)
    created = not Path(out_dir).exists()
    claim_output_folder(out_dir)
    try:
        artifact = exporter.export(loaded, out_dir, precision=precision, parity_data=parity_data,
                                   data_dir=data_dir, **options)
    except Exception:
        # Refused mid-way (a --calib that is not a calibration set): a folder this call made
        # holds nothing whole, so it goes with its empty manifest; an existing one stays as is.
        if created:
            import shutil

            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if parity_source and isinstance(artifact.metrics.get("parity"), dict):
        artifact.metrics["parity"].setdefault("source", parity_source)
    return artifact, _record_export(artifact, loaded, spec, out_dir, source_file, target,
                                    precision, options)


def _record_export(artifact: Artifact, loaded: Any, spec: Any, out_dir: Path, source_file: Any,
                   target: str, precision: str, options: dict[str, Any]) -> dict[str, Any]:
    """The export's manifest stage: what it made (with the model's name and InputSpec), from
    what, with which options."""
    model_name = loaded.name if hasattr(loaded, "name") and not isinstance(loaded, Path) else None
    if model_name is None and isinstance(loaded, Path):  # exported from an ONNX model: its name
        from edgekit.io.artifacts import recorded

        model_name = recorded(loaded, "model")
    entry = {**artifact.manifest_entry(out_dir), "input_spec": spec.model_dump(mode="json")}
    if model_name:
        entry["model"] = model_name
    return Manifest(out_dir).add_stage(
        f"export-{target}-{precision}",
        inputs={"source": source_file} if source_file and Path(source_file).is_file() else {},
        config={"target": target, "precision": precision, **{
            k: v for k, v in options.items() if isinstance(v, str | int | float | bool | None)}},
        outputs=[entry],
        metrics=artifact.metrics,
        versions=artifact.versions,
    )


def check_export_reuse(out_dir: Path, source_file: Any, loaded: Any, stage: str) -> None:
    """Refuse to export into a folder that holds another model's outputs (a compress folder of
    lenet5, say, and a cnn_gru checkpoint to export): the new model.onnx would sit beside the
    other model's int8 and checkpoint. What the folder records must chain by sha256 to the
    source (made from it, or it made from them), as `compress` checks (check_reuse); the
    outputs of the very `stage` this export records again are replaced, not left beside it."""
    from edgekit.io.files import sha256_file
    from edgekit.io.lineage import ancestry, recorded_parents

    if not (out_dir / MANIFEST_NAME).is_file():
        return
    manifest = Manifest(out_dir)
    made = [o for s in manifest.stages if s.get("stage") != stage
            for o in s.get("outputs") or [] if o.get("sha256")]
    if not made:
        return
    parents = recorded_parents(manifest)
    source_sha = sha256_file(source_file) if source_file and Path(source_file).is_file() else None
    line = ancestry(source_sha, parents) if source_sha else set()
    foreign = [o for o in made if not ancestry(o["sha256"], parents) & line]
    if not foreign:
        return
    models = sorted({o["model"] for o in foreign if o.get("model")})
    files = sorted({o["path"] for o in foreign})
    name = getattr(loaded, "name", None) if not isinstance(loaded, Path) else None
    what = f"{Path(source_file).name}" if source_file else (name or "the model")
    raise InputError(f"{out_dir} holds the outputs of another model"
                     + (f" ({', '.join(models)}: {', '.join(files)})" if models
                        else f" ({', '.join(files)})")
                     + f", which {what} was not made from; exporting into it would leave them "
                       "beside the new export",
                     hint="export into a new folder (another -o), or compress this model into "
                          "its own folder")


# ---------------------------------------------------------------- compress
def compress_key(model_file: Path | None, steps: list[tuple[str, dict[str, Any]]],
                 ctx: Any) -> str:
    """What a compress output folder was made from and how: the input model's sha256, the
    steps and the data. Two compress runs into one folder must agree on it (or --overwrite)."""
    import hashlib
    import json

    from edgekit.io.files import sha256_file

    parts = [sha256_file(model_file) if model_file and Path(model_file).is_file() else None,
             [[name, config] for name, config in steps], ctx.train_source, ctx.eval_source,
             ctx.calib_source, ctx.eval_limit]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def check_reuse(out_dir: Path, key: str, model_file: Path | None, overwrite: bool) -> None:
    """Refuse to compress into a folder that holds another model's or other settings' outputs
    (unless `overwrite`): its old int8 beside the new fp32 would make a gate that means
    nothing."""
    from edgekit.io.files import sha256_file
    from edgekit.io.lineage import ancestry, recorded_parents

    if overwrite or not (out_dir / MANIFEST_NAME).is_file():
        return
    manifest = Manifest(out_dir)
    made = [o for s in manifest.stages for o in s.get("outputs") or []]
    prior = manifest.stage("compress")
    model_sha = sha256_file(model_file) if model_file and Path(model_file).is_file() else None
    if prior is not None:
        if prior["config"].get("key") == key:
            return  # the same job again (e.g. after an interruption)
        same_model = model_sha and prior["inputs"].get("model", {}).get("sha256") == model_sha
        what = "other settings" if same_model else "another model"
    else:
        parents = recorded_parents(manifest)
        if all(model_sha and model_sha in ancestry(o["sha256"], parents)
               for o in made if o.get("sha256")):
            return  # what is there was made from this model (an export, say)
        what = "another model"
    models = sorted({o["model"] for o in made if o.get("model")})
    steps = [name for name, _ in (prior or {}).get("config", {}).get("steps", [])]
    detail = ", ".join(x for x in [f"model {', '.join(models)}" if models else "",
                                   f"steps {', '.join(steps)}" if steps else ""] if x)
    raise InputError(f"{out_dir} holds the outputs of {what}" + (f" ({detail})" if detail else "")
                     + "; compressing into it would leave old artifacts beside new ones",
                     hint="pass --overwrite to replace them (the old stages are forgotten first), "
                          "or choose another -o")


def start_compress(out_dir: Path, key: str, model_file: Path | None,
                   steps: list[tuple[str, dict[str, Any]]], ctx: Any) -> None:
    """Claim the folder, forget every earlier stage and record this compress, in one atomic
    manifest save: a run killed after this point leaves only what it finished listed."""
    manifest = claim_output_folder(out_dir)
    manifest.forget(save=False)
    manifest.add_stage("compress",
                       inputs={"model": model_file} if model_file and Path(model_file).is_file()
                       else {},
                       config={"key": key, "steps": [[name, config] for name, config in steps],
                               "data": {"train": ctx.train_source, "eval": ctx.eval_source,
                                        "calib": ctx.calib_source, "eval_limit": ctx.eval_limit},
                               "budget": {"max_drop": getattr(ctx, "max_drop", None),
                                          "max_drop_rel": getattr(ctx, "max_drop_rel", None),
                                          "against": "original"}})


def compress(bundle: Any, steps: list[tuple[str, dict[str, Any]]], ctx: Any, *,
             overwrite: bool = False, claim: bool = True) -> dict[str, Any]:
    """Run torch steps on `bundle`, export the result to ONNX (the fp32 reference), then run ONNX
    steps (quantize) on it. Everything lands in ctx.out_dir with one manifest stage per step.
    `claim`: this compress owns the folder (refuse another model's folder unless `overwrite`,
    forget old stages first); `edgekit run` has done that itself and passes False.
    Returns {'rows': report rows, 'artifacts': manifest outputs}."""
    import copy

    from edgekit.metrics import torch_top1
    from edgekit.passes import get_pass
    from edgekit.passes.stats import model_cost

    passes = [(name, get_pass(name)(config)) for name, config in steps]
    out_dir = Path(ctx.out_dir)
    model_file = Path(bundle.source) if bundle.source else None
    check_compress_outputs(out_dir, passes, model_file, ctx)
    key = compress_key(model_file, steps, ctx)
    if claim:
        check_output_folder(out_dir)
        check_reuse(out_dir, key, model_file, overwrite)
    for _, step in passes:  # bad configurations fail before the output folder is touched
        step.check(bundle, ctx)  # ONNX passes get the bundle too (for its InputSpec)
    check_data_exists(ctx)
    check_image_data(ctx, bundle)
    if claim:
        start_compress(out_dir, key, model_file, steps, ctx)
    out_dir.mkdir(parents=True, exist_ok=True)
    Manifest(out_dir)  # a damaged manifest fails here, before any pass runs
    ctx.original = copy.deepcopy(bundle)  # the teacher; passes may edit bundle.model in place
    eval_set = ctx.eval_set(bundle.spec, required=False)
    if eval_set is not None:
        from edgekit.progress import progress

        with progress(f"Evaluating the original {bundle.name} on {len(eval_set)} images",
                      total=len(eval_set)) as advance:
            ctx.original_top1 = torch_top1(bundle.model, eval_set, advance=advance)
            advance(0, top1=f"{ctx.original_top1:.4f}")
    ctx.add_row(step="original", **model_cost(bundle.model, bundle.spec), top1=ctx.original_top1)
    bundle = _run_torch_passes(passes, bundle, model_file, ctx)
    onnx_art, _ = export_artifact(bundle, "onnx", out_dir, precision="fp32",
                                  parity_source=ctx.eval_source, data_dir=ctx.data_dir)
    _run_onnx_passes(passes, onnx_art.path, bundle.name, bundle.spec, ctx)
    annotate_drops(ctx.report, ctx.original_top1)
    return {"rows": ctx.report, "artifacts": Manifest(out_dir).artifacts(), "bundle": bundle}


def apply_passes(bundle: Any, passes: list[tuple[str, Any]], ctx: Any, *, check: bool = False,
                 record: bool = True, around: Callable[[str, Any, Any], Callable[[Any], None]]
                 | None = None) -> Any:
    """Run torch passes on `bundle` in order: the one loop `compress` and `edgekit optimize`'s
    builder share. `check`: each pass checks the bundle it gets first; `record`: one manifest
    stage per pass in ctx.out_dir (its config, its report rows); `around(name, step, bundle)`,
    called before a pass, returns what to call with the bundle it made."""
    for name, step in passes:
        if check:
            step.check(bundle, ctx)
        after = around(name, step, bundle) if around else None
        bundle = step.apply(bundle, ctx)
        if after:
            after(bundle)
        if record:
            if getattr(ctx, "original_top1", None) is not None:  # each row's drops, recorded
                annotate_drops(ctx.report, ctx.original_top1)
            Manifest(Path(ctx.out_dir)).add_stage(
                name, config=step.config.model_dump(mode="json"),
                metrics={"rows": [r for r in ctx.report if r.get("step", "").startswith(name)]})
    return bundle



def _run_torch_passes(passes: list[tuple[str, Any]], bundle: Any, model_file: Path | None,
                      ctx: Any) -> Any:
    """Apply the torch passes (one manifest stage each, its rows with their drops against the
    original), hold the chain to its budget, and save the compressed checkpoint."""
    from edgekit.io.models import save_checkpoint

    out_dir = Path(ctx.out_dir)
    torch_passes = [(n, p) for n, p in passes if p.kind == "torch"]
    if not torch_passes:
        return bundle
    bundle = apply_passes(bundle, torch_passes, ctx)
    check_chain_budget(chain_budget(passes, ctx), ctx.report)
    ckpt = save_checkpoint(bundle, out_dir / "model.pt", compressed_by=[n for n, _ in torch_passes])
    Manifest(out_dir).add_stage("checkpoint",
                                inputs={"source": model_file} if model_file
                                and model_file.is_file() else {},  # the sha256 chain
                                outputs=[{"path": ckpt.name, "format": "checkpoint",
                                          "precision": "fp32", "model": bundle.name}])
    bundle.source = ckpt  # the ONNX export's recorded input is the compressed checkpoint
    return bundle


def _run_onnx_passes(passes: list[tuple[str, Any]], onnx_path: Path, model_name: str, spec: Any,
                     ctx: Any) -> None:
    """Apply the ONNX passes (quantize) to the fp32 ONNX model, one manifest stage each."""
    out_dir = Path(ctx.out_dir)
    for name, step in passes:
        if step.kind != "onnx":
            continue
        first = len(ctx.report)
        produced = step.apply(onnx_path, ctx)
        annotate_drops(ctx.report, ctx.original_top1)
        rows = ctx.report[first:]
        for art in produced if isinstance(produced, list) else [produced]:
            Manifest(out_dir).add_stage(
                f"{name}-{art.precision}" if art.config.get("flavour") is None
                else f"{name}-{art.config['flavour']}",
                inputs={"source": onnx_path},
                config=step.config.model_dump(mode="json"),
                outputs=[{**art.manifest_entry(out_dir), "model": model_name,
                          "input_spec": spec.model_dump(mode="json")}],
                metrics={**art.metrics, "rows": rows}, versions=art.versions)


@dataclass
class OnnxSource:
    """An fp32 ONNX model given to `compress` instead of a PyTorch one (what the passes' checks
    look at: its InputSpec)."""

    path: Path
    spec: Any
    name: str


def compress_onnx(onnx_path: Path, steps: list[tuple[str, dict[str, Any]]], ctx: Any, *,
                  input_shape: tuple[int, ...] | None = None,
                  overwrite: bool = False,
                  preprocessing: Preprocessing | None = None) -> dict[str, Any]:
    """int8 from an existing fp32 ONNX model: the model (checked, its InputSpec recorded in its
    metadata) is copied into ctx.out_dir as model.onnx, then the ONNX passes run on it as they do
    after a PyTorch export. Steps that need the PyTorch model are refused before anything is
    written."""
    import onnx

    from edgekit.io.onnxfile import load_onnx, save_onnx, set_spec, spec_from_onnx
    from edgekit.passes import get_pass

    onnx_path = Path(onnx_path)
    passes = [(name, get_pass(name)(config)) for name, config in steps]
    needs_torch = [name for name, step in passes if step.kind != "onnx"]
    if needs_torch:
        raise InputError(f"{' and '.join(needs_torch)} work on the PyTorch model, and "
                         f"{onnx_path.name} is an ONNX model",
                         hint="pass the PyTorch model (.pt) for prune/dwsep/distill; an ONNX model "
                              "takes --int8 only")
    out_dir = Path(ctx.out_dir)
    check_compress_outputs(out_dir, passes, onnx_path, ctx)
    key = compress_key(onnx_path, steps, ctx)
    check_output_folder(out_dir)
    check_reuse(out_dir, key, onnx_path, overwrite)
    model = load_onnx(onnx_path)  # its external data checked to stay beside it
    try:  # by path: a model past 2 GB cannot be checked in memory
        onnx.checker.check_model(str(onnx_path))
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise InputError(f"{onnx_path.name} fails onnx.checker: {str(exc).splitlines()[0]}",
                         hint="export the model again") from None
    try:  # a model ONNX Runtime cannot load is refused before the output folder is touched
        import onnxruntime as ort

        ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise InputError(f"ONNX Runtime cannot load {onnx_path.name}: "
                         f"{str(exc).splitlines()[0][:300]}",
                         hint="export the model again with standard operators") from None
    from edgekit.io.models import check_channel_change, current_preprocessing, resolve_model_spec
    from edgekit.io.onnxfile import check_shape_fits, no_spec_error

    recorded = spec_from_onnx(model, where=onnx_path)
    given = preprocessing if preprocessing is not None else current_preprocessing()
    if input_shape is not None:
        check_channel_change(recorded, input_shape, preprocessing, onnx_path.name)
    elif recorded is None and not given.get("preset"):
        raise no_spec_error(model, onnx_path.name)

    spec, _ = resolve_model_spec(recorded, what=onnx_path.name, input_shape=input_shape,
                                 preprocessing=preprocessing)
    check_shape_fits(model, spec.shape, onnx_path.name)
    source = OnnxSource(onnx_path, spec, onnx_path.stem)
    for _, step in passes:
        step.check(source, ctx)
    check_data_exists(ctx)
    start_compress(out_dir, key, onnx_path, steps, ctx)
    set_spec(model, spec)
    target = save_onnx(model, out_dir / "model.onnx")
    Manifest(out_dir).add_stage("source-onnx", inputs={"source": onnx_path},
                                outputs=[{"path": target.name, "format": "onnx",
                                          "precision": "fp32", "model": source.name,
                                          "input_spec": spec.model_dump(mode="json")}])
    ctx.add_row(step="original", note=f"fp32 ONNX model {onnx_path.name}")
    _run_onnx_passes(passes, target, source.name, spec, ctx)
    return {"rows": ctx.report, "artifacts": Manifest(out_dir).artifacts()}


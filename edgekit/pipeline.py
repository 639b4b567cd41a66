"""Stages that chain through an output folder's manifest: export (and, with the recipe runner,
compress and validate). Each stage reads what it needs from the manifest and records what it made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.io.manifest import MANIFEST_NAME, Manifest
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
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a folder", hint="-o names a folder")
    exporter = get_target(target)
    exporter.check_precision(precision)
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
    if parity_data is None:
        parity_data = parity_sample(spec, parity_source, data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = exporter.export(loaded, out_dir, precision=precision, parity_data=parity_data,
                               data_dir=data_dir, **options)
    model_name = loaded.name if hasattr(loaded, "name") and not isinstance(loaded, Path) else None
    if model_name is None and isinstance(loaded, Path):  # exported from an ONNX model: its name
        from edgekit.io.artifacts import recorded

        model_name = recorded(loaded, "model")
    entry = {**artifact.manifest_entry(out_dir), "input_spec": spec.model_dump(mode="json")}
    if model_name:
        entry["model"] = model_name
    record = Manifest(out_dir).add_stage(
        f"export-{target}-{precision}",
        inputs={"source": source_file} if source_file and Path(source_file).is_file() else {},
        config={"target": target, "precision": precision, **{
            k: v for k, v in options.items() if isinstance(v, str | int | float | bool | None)}},
        outputs=[entry],
        metrics=artifact.metrics,
        versions=artifact.versions,
    )
    return artifact, record


# ---------------------------------------------------------------- compress
def compress(bundle: Any, steps: list[tuple[str, dict[str, Any]]], ctx: Any) -> dict[str, Any]:
    """Run torch steps on `bundle`, export the result to ONNX (the fp32 reference), then run ONNX
    steps (quantize) on it. Everything lands in ctx.out_dir with one manifest stage per step.
    Returns {'rows': report rows, 'artifacts': manifest outputs}."""
    from edgekit.io.models import save_checkpoint
    from edgekit.passes import get_pass
    from edgekit.passes.stats import model_cost
    from edgekit.validate.torch_eval import torch_top1

    passes = [(name, get_pass(name)(config)) for name, config in steps]
    for _, step in passes:  # bad configurations fail before the output folder is touched
        step.check(bundle, ctx)  # ONNX passes get the bundle too (for its InputSpec)
    out_dir = Path(ctx.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir)
    import copy

    ctx.original = copy.deepcopy(bundle)  # the teacher; passes may edit bundle.model in place
    eval_set = ctx.eval_set(bundle.spec, required=False)
    ctx.original_top1 = torch_top1(bundle.model, eval_set) if eval_set is not None else None
    ctx.add_row(step="original", **model_cost(bundle.model, bundle.spec), top1=ctx.original_top1)
    torch_passes = [(n, p) for n, p in passes if p.kind == "torch"]
    for name, step in torch_passes:
        bundle = step.apply(bundle, ctx)
        manifest = Manifest(out_dir)
        manifest.add_stage(name, config=step.config.model_dump(mode="json"),
                           metrics={"rows": [r for r in ctx.report if r.get("step", "").startswith(name)]})
    if torch_passes:
        check_chain_budget(chain_budget(passes, ctx), ctx.report)
    if torch_passes:
        ckpt = save_checkpoint(bundle, out_dir / "model.pt", compressed_by=[n for n, _ in torch_passes])
        Manifest(out_dir).add_stage("checkpoint", outputs=[{"path": ckpt.name, "format": "checkpoint",
                                                            "precision": "fp32", "model": bundle.name}])
        bundle.source = ckpt  # the ONNX export's recorded input is the compressed checkpoint
    onnx_art, _ = export_artifact(bundle, "onnx", out_dir, precision="fp32",
                                  parity_source=ctx.eval_source, data_dir=ctx.data_dir)
    _run_onnx_passes(passes, onnx_art.path, bundle.name, bundle.spec, ctx)
    return {"rows": ctx.report, "artifacts": Manifest(out_dir).artifacts(), "bundle": bundle}


def chain_budget(passes: list[tuple[str, Any]], ctx: Any) -> Any:
    """The accuracy budget of the whole compress chain against the original: the run's own
    (compress --max-drop / --max-drop-rel), else the quantize step's, else none."""
    from edgekit.quant.budget import Budget

    if ctx.max_drop is not None or ctx.max_drop_rel is not None:
        return Budget(ctx.max_drop, ctx.max_drop_rel, ctx.original_top1)
    for _, step in passes:
        cfg = step.config
        if getattr(cfg, "max_drop", None) is not None or \
                getattr(cfg, "max_drop_rel", None) is not None:
            return Budget(cfg.max_drop, cfg.max_drop_rel, ctx.original_top1)
    return Budget(original_top1=ctx.original_top1)


def check_chain_budget(budget: Any, rows: list[dict[str, Any]]) -> None:
    """After the torch steps: the top-1 they left must be within the budget of the original's,
    or the run fails (GateError, exit 1) with what each step spent, before anything else is
    exported. Steps report top-1 in their rows; the last such row is the model as it stands."""
    from edgekit.errors import GateError

    scored = [r for r in rows if r.get("top1") is not None]
    if not budget.active or budget.original_top1 is None or len(scored) < 2:
        return
    final = scored[-1]["top1"]
    allowed = budget.total_points(budget.original_top1)
    spent = budget.spent_points(final)
    if spent <= allowed + 1e-9:
        return
    steps, previous = [], budget.original_top1
    for r in scored[1:]:
        steps.append((r["step"], r["top1"], 100.0 * (previous - r["top1"])))
        previous = r["top1"]
    worst = max(steps, key=lambda s: s[2])
    chain = " → ".join([f"original {budget.original_top1:.4f}"]
                       + [f"{name} {top1:.4f} ({-drop:+.2f})" for name, top1, drop in steps])
    raise GateError(
        f"the compression chain misses the accuracy budget ({budget.describe()} against the "
        f"original): top-1 "
        f"{final:.4f} is {spent:.2f} points under the original's {budget.original_top1:.4f}, "
        f"{allowed:g} allowed; {worst[0]} spent the most ({worst[2]:.2f} points). "
        f"Top-1 by step: {chain}",
        hint="compress less (a smaller --prune, no --dwsep or a higher --dwsep-rank), distill "
        "longer (--distill-epochs), or loosen --max-drop")


def _run_onnx_passes(passes: list[tuple[str, Any]], onnx_path: Path, model_name: str, spec: Any,
                     ctx: Any) -> None:
    """Apply the ONNX passes (quantize) to the fp32 ONNX model, one manifest stage each."""
    out_dir = Path(ctx.out_dir)
    for name, step in passes:
        if step.kind != "onnx":
            continue
        produced = step.apply(onnx_path, ctx)
        for art in produced if isinstance(produced, list) else [produced]:
            Manifest(out_dir).add_stage(
                f"{name}-{art.precision}" if art.config.get("flavour") is None
                else f"{name}-{art.config['flavour']}",
                inputs={"source": onnx_path},
                config=step.config.model_dump(mode="json"),
                outputs=[{**art.manifest_entry(out_dir), "model": model_name,
                          "input_spec": spec.model_dump(mode="json")}],
                metrics=art.metrics, versions=art.versions)


@dataclass
class OnnxSource:
    """An fp32 ONNX model given to `compress` instead of a PyTorch one (what the passes' checks
    look at: its InputSpec)."""

    path: Path
    spec: Any
    name: str


def compress_onnx(onnx_path: Path, steps: list[tuple[str, dict[str, Any]]], ctx: Any, *,
                  input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """int8 from an existing fp32 ONNX model: the model (checked, its InputSpec recorded in its
    metadata) is copied into ctx.out_dir as model.onnx, then the ONNX passes run on it as they do
    after a PyTorch export. Steps that need the PyTorch model are refused before anything is
    written."""
    import onnx

    from edgekit.io.onnxfile import load_onnx, save_onnx, set_spec, spec_from_onnx
    from edgekit.passes import get_pass
    from edgekit.spec import InputSpec

    onnx_path = Path(onnx_path)
    passes = [(name, get_pass(name)(config)) for name, config in steps]
    needs_torch = [name for name, step in passes if step.kind != "onnx"]
    if needs_torch:
        raise InputError(f"{' and '.join(needs_torch)} work on the PyTorch model, and "
                         f"{onnx_path.name} is an ONNX model",
                         hint="pass the PyTorch model (.pt) for prune/dwsep/distill; an ONNX model "
                              "takes --int8 only")
    model = load_onnx(onnx_path)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise InputError(f"{onnx_path.name} fails onnx.checker: {str(exc).splitlines()[0]}",
                         hint="export the model again") from None
    try:  # a model ONNX Runtime cannot load is refused before the output folder is touched
        import onnxruntime as ort

        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise InputError(f"ONNX Runtime cannot load {onnx_path.name}: "
                         f"{str(exc).splitlines()[0][:300]}",
                         hint="export the model again with standard operators") from None
    spec = spec_from_onnx(model, where=onnx_path)
    if input_shape is not None:
        spec = (spec or InputSpec()).with_shape(input_shape)
    if spec is None:
        raise InputError(f"{onnx_path.name} does not say what input it takes (no edgekit "
                         "InputSpec in its metadata)",
                         hint="pass --input-shape N,C,H,W, e.g. --input-shape 1,1,28,28")
    source = OnnxSource(onnx_path, spec, onnx_path.stem)
    for _, step in passes:
        step.check(source, ctx)
    out_dir = Path(ctx.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_spec(model, spec)
    target = save_onnx(model, out_dir / "model.onnx")
    Manifest(out_dir).add_stage("source-onnx", inputs={"source": onnx_path},
                                outputs=[{"path": target.name, "format": "onnx",
                                          "precision": "fp32", "model": source.name,
                                          "input_spec": spec.model_dump(mode="json")}])
    ctx.add_row(step="original", note=f"fp32 ONNX model {onnx_path.name}")
    _run_onnx_passes(passes, target, source.name, spec, ctx)
    return {"rows": ctx.report, "artifacts": Manifest(out_dir).artifacts()}


"""ONNX files: safe loading (external data must stay inside the model's folder), the InputSpec
stored in metadata_props, atomic saving. Needs `onnx` only (no torch)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import InputError, ModelLoadError
from edgekit.io.debris import pid_tag
from edgekit.io.files import UMASK, atomic_path
from edgekit.spec import ONNX_METADATA_KEY, InputSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def external_locations(model: onnx.ModelProto, *, rename: str | None = None) -> list[str]:
    """The external data files the model's tensors name (relative to the model's folder), each
    once; with `rename`, every tensor is pointed at that file instead (in place)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    found: dict[str, None] = {}
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    found[entry.value] = None
                    if rename is not None:
                        entry.value = rename
    return [loc for loc in found if loc]


def check_external_data(model: onnx.ModelProto, folder: Path) -> None:
    """Refuse external-data references that leave the model's folder (path traversal)."""
    root = folder.resolve()
    for location in external_locations(model):
        target = (root / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(root):
            raise InputError(
                f"the ONNX model's tensors point at external data {location!r}, outside the "
                f"model's folder {root}",
                hint="keep external data files beside the .onnx file (relative paths, no '..')",
            )
        if not target.is_file():
            raise InputError(f"ONNX external data file {target} is missing",
                             hint="copy it next to the .onnx file")


def load_onnx(path: str | Path, *, load_external: bool = True) -> onnx.ModelProto:
    import onnx

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ModelLoadError(f"ONNX file {path} is missing or empty", hint="check the path")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ModelLoadError(f"{path} is not a valid ONNX file ({exc})",
                             hint="the file may be truncated: export it again") from None
    check_external_data(model, path.parent)
    check_onnx_graph(model, path)
    if load_external:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return model


# Operator domains some edgekit runtime executes; ops of the standard ones are checked by name.
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
RUNTIME_DOMAINS = ("com.microsoft", "com.microsoft.nchwc", "ai.onnx.preview.training",
                   "ai.onnx.training")


def check_onnx_graph(model: onnx.ModelProto, path: Path | str) -> None:
    """What edgekit needs of an ONNX image classifier, checked before a runtime allocates
    anything: one input (initializers aside), fixed input dims within edgekit.limits, and
    operators a runtime knows (the standard ones by name, a runtime's own domains, or functions
    the model defines)."""
    import onnx.defs

    from edgekit.limits import check_input_shape_size

    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelLoadError(
            f"{path} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs) or 'none'}); "
            "edgekit runs image classifiers with one input",
            hint="export the model with a single image input")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    if any(d < 0 for d in shape):
        raise ModelLoadError(f"{path}: input {inputs[0].name} has a negative dimension {shape}",
                             hint="export the model again")
    try:
        check_input_shape_size(shape or (1,), f"{path}: input {inputs[0].name}")
    except InputError as exc:
        raise ModelLoadError(exc.message, hint=exc.hint) from None
    functions = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        domain = node.domain or ""
        if (domain, node.op_type) in functions or domain in RUNTIME_DOMAINS:
            continue
        if domain not in STANDARD_DOMAINS or not onnx.defs.has(node.op_type, domain):
            raise ModelLoadError(
                f"{path}: node {node.name or node.output[0]!r} uses operator "
                f"{(domain + ':') if domain else ''}{node.op_type}, which no edgekit runtime knows",
                hint="export the model with standard ONNX operators")


def input_dims(model: onnx.ModelProto) -> tuple[str, list[int | str]]:
    """The image input's name and its dims: an int where fixed, the symbol (or "?") where not."""
    initializers = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in initializers)
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else
                             (d.dim_param or "?") for d in first.type.tensor_type.shape.dim]
    return first.name, dims


def no_spec_error(model: onnx.ModelProto, where: str | Path, *, flags: bool = True) -> InputError:
    """An ONNX model from elsewhere records no InputSpec: say which of its input's dims are
    symbolic (edgekit exports, calibrates and measures at one fixed C,H,W; only the batch may
    vary) and the --input-shape that fixes them, filled in with the dims the file does fix."""
    name, dims = input_dims(model)
    labels = "NCHW" if len(dims) == 4 else ""
    free = [f"{labels[i] if labels else i} ({d})" for i, d in enumerate(dims)
            if isinstance(d, str) and i > 0]
    template = ",".join(["1"] + [str(d) if isinstance(d, int) else (labels[i] if labels else "?")
                                 for i, d in enumerate(dims) if i > 0]) if dims else "N,C,H,W"
    shown = "[" + ", ".join(map(str, dims)) + "]"
    message = (f"{where} does not say what input it takes: no edgekit InputSpec in its metadata, "
               f"and its input {name!r} is {shown}")
    if free:
        message += (f" with symbolic {', '.join(free)}: edgekit needs a fixed "
                    f"{'C,H,W' if labels else 'size'} (only the batch may vary)")
    if flags:
        hint = (f"pass --input-shape {template} with the size the model was trained at, and "
                "its --mean and --std")
    else:
        hint = (f"record it once: edgekit compress {Path(str(where)).name} --int8 --input-shape "
                f"{template} --mean M --std S -o OUT/ (then use OUT/)")
    return InputError(message, hint=hint)


def check_shape_fits(model: onnx.ModelProto, shape: tuple[int, ...], where: str | Path) -> None:
    """The input shape edgekit will feed (recorded or --input-shape) agrees with every dim the
    ONNX file fixes (the batch aside): InputError naming the dim otherwise."""
    name, dims = input_dims(model)
    labels = "NCHW" if len(dims) == 4 else "".join(str(i) for i in range(len(dims)))
    if len(dims) != len(shape):
        raise InputError(f"{where}: input {name!r} has {len(dims)} dims "
                         f"[{', '.join(map(str, dims))}], the input shape "
                         f"{','.join(map(str, shape))} has {len(shape)}",
                         hint="pass --input-shape with one value per input dim")
    for i, (fixed, given) in enumerate(zip(dims, shape, strict=True)):
        if i > 0 and isinstance(fixed, int) and fixed != given:
            template = ",".join(str(d) if isinstance(d, int) else str(shape[j])
                                for j, d in enumerate(dims))
            raise InputError(f"{where}: input {name!r} is [{', '.join(map(str, dims))}], fixed "
                             f"at {labels[i]}={fixed}, but the input shape is "
                             f"{','.join(map(str, shape))}",
                             hint=f"pass --input-shape {template}")


def spec_from_onnx(model_or_path: onnx.ModelProto | str | Path,
                   where: str | Path | None = None) -> InputSpec | None:
    """The InputSpec edgekit recorded in the model's metadata; None when there is none, and
    ModelLoadError when the entry is not a valid InputSpec (damaged or hand-edited)."""
    from pydantic import ValidationError

    model = load_onnx(model_or_path, load_external=False) if isinstance(
        model_or_path, str | Path) else model_or_path
    for prop in model.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            try:
                return InputSpec.from_json(prop.value)
            except (ValidationError, ValueError, TypeError) as exc:
                first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else \
                    str(exc).splitlines()[0]
                where = where or (model_or_path if isinstance(model_or_path, str | Path)
                                  else "the ONNX model")
                raise ModelLoadError(
                    f"{where}: its {ONNX_METADATA_KEY} metadata is not a valid InputSpec "
                    f"({first})",
                    hint="the metadata is damaged or hand-edited: export the model again with "
                    "edgekit") from None
    return None


def set_spec(model: onnx.ModelProto, spec: InputSpec) -> None:
    set_metadata(model, ONNX_METADATA_KEY, spec.to_json())


# protobuf cannot serialise a message over 2 GB: a model past this keeps its weights in one
# external file beside it (and is checked and run from its path, never from bytes in memory).
LARGE_MODEL_BYTES = 1_800_000_000


def is_large(model: onnx.ModelProto) -> bool:
    """Whether the model must be saved with external data (its weights past LARGE_MODEL_BYTES)."""
    try:
        return model.ByteSize() > LARGE_MODEL_BYTES
    except Exception:  # noqa: BLE001 - protobuf may refuse to size a message past 2 GB
        return True


def is_large_file(path: str | Path) -> bool:
    """is_large for a saved model: its file and the external data files it names (the names
    read once per version of the file: the budget loop quantizes one prepared model many
    times)."""
    path = Path(path)
    stat = path.stat()
    locations = _saved_locations(str(path), stat.st_mtime_ns, stat.st_size)
    sizes = [stat.st_size] + [(path.parent / loc).stat().st_size for loc in locations
                              if (path.parent / loc).is_file()]
    return sum(sizes) > LARGE_MODEL_BYTES


@functools.lru_cache(maxsize=64)
def _saved_locations(name: str, _mtime_ns: int, _size: int) -> tuple[str, ...]:
    import onnx

    return tuple(external_locations(onnx.load(name, load_external_data=False)))


def data_path(path: str | Path) -> Path:
    """Where save_onnx puts a large model's weights: `model.onnx.data` beside `model.onnx`."""
    from edgekit.kinds import by_format

    path = Path(path)
    return path.with_name(path.name + by_format("onnx").data_suffix)


def save_onnx(model: onnx.ModelProto, path: str | Path, *, data_name: str | None = None) -> Path:
    """Save atomically; a large model (is_large) gets its weights in one external file beside it,
    named `data_name` (default `<file name>.data`: pass the final file's when `path` is an
    atomic_path temp, as atomic_onnx does). A large model's tensors then point at that file
    (onnx moves their data out of the ModelProto): decide with is_large before saving."""
    import onnx

    path = Path(path)
    with atomic_path(path) as tmp:
        if is_large(model):
            location = data_name or data_path(path).name
            # onnx appends to an existing data file: an earlier model's weights would stay in it
            (path.parent / location).unlink(missing_ok=True)
            onnx.save_model(model, str(tmp), save_as_external_data=True, location=location,
                            all_tensors_to_one_file=True, size_threshold=1024)
            # onnx creates it owner-only; readable as the model is (a device's other user)
            os.chmod(path.parent / location, 0o666 & ~UMASK)
        else:
            onnx.save_model(model, str(tmp))
    return path


@contextlib.contextmanager
def atomic_onnx(target: str | Path) -> Iterator[tuple[Path, Callable[[onnx.ModelProto], Path]]]:
    """atomic_path for an ONNX model: yields (tmp, save) where save(model) writes the model to tmp
    (its weights, when large, straight to `<target>.data`); on success tmp becomes `target`, on
    any exception tmp and the weights written are removed and an earlier `<target>.data` is
    put back."""
    target = Path(target)
    data = data_path(target)
    backup = None
    if data.exists():  # an earlier large model's weights: set aside until this one is saved
        backup = data.with_name(f".{data.name}.{pid_tag()}.old")  # swept as debris if killed
        os.replace(data, backup)
    try:
        with atomic_path(target) as tmp:
            yield tmp, lambda model: save_onnx(model, tmp, data_name=data.name)
    except BaseException:
        data.unlink(missing_ok=True)
        if backup is not None:
            os.replace(backup, data)
        raise
    if backup is not None:
        backup.unlink()


def move_onnx(src: str | Path, dst: str | Path) -> Path:
    """Rename an ONNX model saved by save_onnx onto `dst` (same file system), its weights file
    too when it has one (`dst`'s own name, the references in the graph rewritten)."""
    import onnx

    src, dst = Path(src), Path(dst)
    if not data_path(src).exists():
        os.replace(src, dst)
        return dst
    model = onnx.load(str(src), load_external_data=False)
    external_locations(model, rename=data_path(dst).name)
    os.replace(data_path(src), data_path(dst))
    with atomic_path(dst) as tmp:
        onnx.save_model(model, str(tmp))
    src.unlink()
    return dst


def check_onnx_file(path: str | Path, what: str, *, full_check: bool = False) -> None:
    """onnx.checker on the saved file (by path: a model over 2 GB cannot be checked in memory);
    raises ExportError naming `what` ("the exported ONNX model", …)."""
    import onnx

    from edgekit.errors import ExportError

    try:
        onnx.checker.check_model(str(path), full_check=full_check)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise ExportError(f"{what} fails onnx.checker: {exc}") from None


# ------------------------------------------------------------- ONNX node -> PyTorch module
TORCH_MODULES_KEY = "edgekit.torch_modules"
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # what torch.onnx's dynamo exporter puts on nodes


def export_module_map(model: onnx.ModelProto) -> dict[str, str]:
    """{ONNX node name: PyTorch module path} from the node metadata torch.onnx's dynamo exporter
    writes (`pkg.torch.onnx.name_scopes`: the module path, then the op): read right after the
    export, since graph simplification drops node metadata."""
    import ast

    out = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == _SCOPES_KEY:
                try:
                    scopes = ast.literal_eval(prop.value)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(scopes, list) and len(scopes) >= 3 and scopes[-2]:
                    out[node.name] = str(scopes[-2])
    return out


# (issue 27) PyTorch fp32's own rounding error on the export's parity inputs (max |fp32 - float64|
# logits), recorded when the export needed it: OpenVINO's fp32 parity against this ONNX model
# then allows the same floor (targets.onnx.check_parity).
FP32_FLOOR_KEY = "edgekit.fp32_floor"


def set_metadata(model: onnx.ModelProto, key: str, value: str | None) -> None:
    """Set one metadata_props entry, replacing an earlier one of the same key (None: remove)."""
    for prop in list(model.metadata_props):
        if prop.key == key:
            model.metadata_props.remove(prop)
    if value is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def metadata(model_or_path: onnx.ModelProto | str | Path, key: str) -> str | None:
    """The metadata_props value of `key`, None when the model has none."""
    model = load_onnx(model_or_path, load_external=False) if isinstance(
        model_or_path, str | Path) else model_or_path
    return next((p.value for p in model.metadata_props if p.key == key), None)


def update_metadata(path: str | Path, key: str, value: str) -> None:
    """Set one metadata entry of the ONNX model at `path` in place (atomically; a large model's
    weights file beside it is untouched: its references are kept as they are)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    set_metadata(model, key, value)
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))


def set_module_map(model: onnx.ModelProto, modules: dict[str, str]) -> None:
    """Record {node name: module path} (for the nodes the model still has) in its metadata."""
    import json

    names = {n.name for n in model.graph.node}
    kept = {k: v for k, v in modules.items() if k in names}
    set_metadata(model, TORCH_MODULES_KEY, json.dumps(kept, sort_keys=True) if kept else None)


def node_modules(model: onnx.ModelProto) -> dict[str, str | None]:
    """{ONNX node name: the PyTorch module it came from, or None}, for fp32 and QDQ models:
    the module whose `<module>.weight` the node reads (through a DequantizeLinear in a QDQ
    model), else the map recorded at export, else a TorchScript-style name (`/conv1/Conv`)."""
    import json

    recorded: dict[str, str] = {}
    for prop in model.metadata_props:
        if prop.key == TORCH_MODULES_KEY:
            recorded = json.loads(prop.value)
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, str | None] = {}
    for node in model.graph.node:
        module = None
        for name in list(node.input)[1:2]:  # the weight of Conv / Gemm / MatMul
            src = producer.get(name)
            if src is not None and src.op_type == "DequantizeLinear":
                name = src.input[0]
            if name in inits or src is not None:
                for suffix in ("_quantized", "_DequantizeLinear_Output"):
                    name = name.removesuffix(suffix)
                if name.endswith(".weight"):
                    module = name[: -len(".weight")]
        if module is None:
            module = recorded.get(node.name)
        if module is None and node.name.startswith("/") and node.name.count("/") >= 2:
            module = node.name.strip("/").split("/")[-2] or None
        out[node.name] = module
    return out

"""Which architecture a plain state_dict was saved from: every torchvision classification builder
(`torchvision.models.list_models(module=torchvision.models)`) and every timm model
(`timm.list_models()`, when timm is installed) whose keys could be the saved ones is built on
the meta device (edgekit.io.model_build.build_on_meta: nothing allocated, no weights
downloaded) and its keys and shapes compared with the saved ones; a classifier saved at another
width gives `num_classes`. `edgekit inspect` names the match as the complete
`--arch`/`--arch-kwargs` flags instead of a generic example.

Fast by an index per library version (shipped in edgekit/_data/archmatch/ for the versions
it was built with; `archmatch-index.json` in $EDGEKIT_CACHE, else in ~/.cache/edgekit, for
what a search adds): each model's key names (a digest) and top-level module names, filled
as models are built, and the matches of every layout already searched. A model not yet in the
index is built only when its family (the module that defines it) shares at least half of the
saved state_dict's top-level names; only a model whose key names are the saved ones is built
again to compare shapes. A layout searched before imports neither library.

Several models can hold the same keys and shapes: torchvision's resnet18 and timm's (the same
function), timm's mobilenetv3_small_100 and tf_mobilenetv3_small_100 (TensorFlow's padding), a
resnet and its blur-pool variant. The state_dict cannot tell them apart: torchvision's come
first, then timm's in its own order, and the hint names every one."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict


class ModelRecord(TypedDict, total=False):
    """What the index keeps of one model: its key names' digest and top-level names."""

    keys: str
    tops: list[str]
    error: str  # instead of the two: the builder could not run


class LibraryIndex(TypedDict):
    """One library's models at one version: names, name -> family, name -> record."""

    names: list[str]
    family: dict[str, str]
    models: dict[str, ModelRecord]

GENERIC_HINT = "pass --arch module:factory, e.g. --arch torchvision.models:resnet18"
INDEX_FILE = "archmatch-index.json"
INDEX_FORMAT = 1
PREFIX = {"torchvision": "torchvision.models:", "timm": "timm:"}
# A match: the --arch of a library model and the --arch-kwargs it needs ({} as built, or
# {"num_classes": N} when only the classifier's width differs)
ArchMatch = tuple[str, dict[str, int]]


def arch_flags(arch: str, kwargs: dict[str, Any]) -> str:
    """The --arch (and --arch-kwargs) flags of a match, as they are typed."""
    return f"--arch {arch}" + (f" --arch-kwargs {shlex.quote(json.dumps(kwargs))}"
                               if kwargs else "")


def arch_hint(matches: list[ArchMatch]) -> str:
    """The hint of a plain state_dict given without --arch: the complete flags of its first
    match (the others, which hold the same keys and shapes, named after it), the generic
    example when none fits."""
    if not matches:
        return GENERIC_HINT
    hint = f"its every key and shape matches: pass {arch_flags(*matches[0])}"
    if len(matches) > 1:
        hint += (" (the same keys and shapes as " + ", ".join(a for a, _ in matches[1:])
                 + ": pass that --arch instead if the model was built with it)")
    return hint


def _digest(keys: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:20]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _index_path() -> Path:
    """$EDGEKIT_CACHE's, else the user's cache folder's (never the working directory: a search
    runs under `edgekit inspect`, which writes nothing there)."""
    if os.environ.get("EDGEKIT_CACHE"):
        return Path(os.environ["EDGEKIT_CACHE"]) / INDEX_FILE
    home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(home) / "edgekit" / INDEX_FILE


def _load_index(path: Any) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return index.get("libraries", {}) if index.get("format") == INDEX_FORMAT else {}


def _shipped_index() -> dict[str, Any]:
    from importlib import resources

    return _load_index(resources.files("edgekit").joinpath("_data", "archmatch", "index.json"))


def _read_index() -> dict[str, Any]:
    """The user's index, over the one shipped with edgekit (edgekit/_data/archmatch/index.json:
    every model of the library versions it was built with, written by
    scripts/archmatch-index.py), so that a first search with those versions builds only its
    matches."""
    index = _shipped_index()
    for key, entry in _load_index(_index_path()).items():
        shipped = index.get(key)
        if shipped is not None:
            entry["models"] = {**shipped["models"], **entry.get("models", {})}
        index[key] = entry
    return index


def full_index(libraries: Iterable[str] = ("torchvision", "timm"),
               on_model: Callable[[str, str], None] | None = None) -> dict[str, LibraryIndex]:
    """An index of every model of the installed `libraries` (what scripts/archmatch-index.py
    ships): {library key: {names, family, models}}."""
    index: dict[str, LibraryIndex] = {}
    for library in libraries:
        if (version := _version(library)) is None or (catalogue := _catalogue(library)) is None:
            continue
        names, family = catalogue
        models = {}
        for name in names:
            if on_model is not None:
                on_model(library, name)
            models[name] = _record(library, name)
        index[f"{library} {version} torch {_version('torch')}"] = {
            "names": names, "family": family, "models": models}
    return index


def _write_index(libraries: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only makes the next search slower."""
    from edgekit.io.files import atomic_write_text

    shipped = _shipped_index()  # what edgekit ships is not copied into the user's index
    libraries = {key: {**entry, "models": {
        name: record for name, record in entry["models"].items()
        if shipped.get(key, {}).get("models", {}).get(name) != record}}
        for key, entry in libraries.items()}
    try:
        atomic_write_text(_index_path(), json.dumps({"format": INDEX_FORMAT,
                                                     "libraries": libraries}))
    except OSError:
        pass


def _catalogue(library: str) -> tuple[list[str], dict[str, str]] | None:
    """(model names, name -> family) of an installed library; None when it does not import."""
    try:
        if library == "torchvision":
            import torchvision

            names = list(torchvision.models.list_models(module=torchvision.models))
            return names, {n: torchvision.models.get_model_builder(n).__module__ for n in names}
        import timm

        family = {n: module for module in timm.list_modules()
                  for n in timm.list_models(module=module)}
        names = list(timm.list_models())
        return names, {n: family.get(n, n.split("_")[0]) for n in names}
    except ImportError:
        return None


def _factory(library: str, name: str) -> Callable[..., Any]:
    if library == "torchvision":
        import torchvision

        return torchvision.models.get_model_builder(name)
    import functools

    import timm

    return functools.partial(timm.create_model, name, pretrained=False)


def _record(library: str, name: str) -> ModelRecord:
    """What the index keeps of one model: its key names' digest and top-level names."""
    from edgekit.io.model_build import build_on_meta

    try:
        own = build_on_meta(_factory(library, name)).state_dict()
    except Exception as exc:  # noqa: BLE001 - a builder that cannot run is never matched
        return {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}
    return {"keys": _digest(own), "tops": sorted({k.split(".")[0] for k in own})}


def _fits(library: str, name: str, saved: dict[str, tuple[int, ...]]
          ) -> dict[str, int] | None:
    """The kwargs with which `name` holds exactly the saved shapes ({} as built; num_classes
    when only the classifier's width differs), None when it does not."""
    from edgekit.io.model_build import build_on_meta

    factory = _factory(library, name)
    try:
        own = build_on_meta(factory).state_dict()
    except Exception:  # noqa: BLE001
        return None
    if own.keys() != saved.keys():
        return None
    mismatched = [k for k, shape in saved.items() if tuple(own[k].shape) != shape]
    if not mismatched:
        return {}
    # a classifier at another width: every differing key differs in its output width only
    if any(not saved[k] or saved[k][1:] != tuple(own[k].shape)[1:] for k in mismatched):
        return None
    widths = {saved[k][0] for k in mismatched}
    if len(widths) != 1:
        return None
    kwargs = {"num_classes": int(widths.pop())}
    try:
        own = build_on_meta(factory, kwargs).state_dict()
    except Exception:  # noqa: BLE001
        return None
    return kwargs if all(tuple(own[k].shape) == shape for k, shape in saved.items()) else None


def _library_matches(library: str, version: str, saved: dict[str, tuple[int, ...]],
                     index: dict[str, Any]) -> tuple[list[ArchMatch], bool]:
    """(matches in `library`, whether the index changed)."""
    key = f"{library} {version} torch {_version('torch')}"
    entry = index.get(key)
    changed = False
    if entry is None:
        catalogue = _catalogue(library)
        if catalogue is None:
            return [], False
        names, family = catalogue
        entry = index[key] = {"names": names, "family": family, "models": {}}
        changed = True
    shapes = _digest(f"{k} {list(shape)}" for k, shape in saved.items())
    if shapes in entry.setdefault("found", {}):  # this very layout was searched before
        return [(arch, dict(kwargs)) for arch, kwargs in entry["found"][shapes]], changed
    digest = _digest(saved)
    tops = sorted({k.split(".")[0] for k in saved})
    family_tops: dict[str, list[str]] = {}  # family -> the top-level names of its first model
    candidates = []
    for name in entry["names"]:
        family = entry["family"].get(name, name)
        record = entry["models"].get(name)
        if record is None:
            if len(set(family_tops.get(family, tops)) & set(tops)) * 2 < len(tops):
                # e.g. resnets (conv1, layer1, fc) for a state_dict of features/classifier;
                # a family's models may differ in a name or two (timm's MobileNetV4 adds
                # norm_head to fbnetv3's), so only a family sharing under half is passed over
                continue
            record = entry["models"][name] = _record(library, name)
            changed = True
        if "tops" in record:
            family_tops.setdefault(family, record["tops"])
        if record.get("keys") == digest:
            candidates.append(name)
    matches = []
    for name in candidates:
        if (kwargs := _fits(library, name, saved)) is not None:
            matches.append((PREFIX[library] + name, kwargs))
    entry["found"][shapes] = [[arch, kwargs] for arch, kwargs in matches]
    return matches, True


def state_dict_matches(state_dict: Mapping[str, object],
                       libraries: Iterable[str] = ("torchvision", "timm"),
                       ) -> list[ArchMatch]:
    """[(arch, arch_kwargs)] of every torchvision classification model and timm model (of
    `libraries`, those installed) that holds exactly the state_dict's keys with its shapes (the
    classifier's width aside, given as num_classes): torchvision's first, then timm's."""
    saved = {k: tuple(v.shape) for k, v in state_dict.items() if hasattr(v, "shape")}
    if not saved or len(saved) != len(state_dict) or _version("torch") is None:
        return []
    index = _read_index()
    matches, changed = [], False
    for library in libraries:
        if (version := _version(library)) is None:
            continue
        found, grew = _library_matches(library, version, saved, index)
        matches += found
        changed = changed or grew
    if changed:
        _write_index(index)
    return matches


def torchvision_matches(state_dict: dict[str, Any]) -> list[ArchMatch]:
    """The torchvision matches of state_dict_matches."""
    return state_dict_matches(state_dict, ("torchvision",))


def match_file(path: str | Path) -> list[ArchMatch]:
    """state_dict_matches of the plain state_dict in `path` (loaded weights_only; [] when the
    file is not one)."""
    import torch

    try:
        obj = torch.load(path, map_location="meta", weights_only=True)
    except Exception:  # noqa: BLE001 - not a loadable state_dict: nothing to match
        return []
    if not isinstance(obj, dict):
        return []
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return state_dict_matches(obj)

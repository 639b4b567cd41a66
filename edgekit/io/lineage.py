"""Artifacts chain by sha256 to the reference they are compared with.

Every manifest stage records the sha256 of what went in and of what came out, so the folder's
artifacts form a graph: model.int8.onnx <- model.onnx <- model.pt <- the trained checkpoint.
Two artifacts are comparable when their chains meet (one was made from the other, or both from
the same checkpoint), and when each file is still the one its stage recorded. A folder reused for
another model, or a stage left over from other settings, breaks the chain, and `validate` refuses
to compare what it holds instead of reporting a meaningless drop. Torch-free."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError
from edgekit.io.files import sha256_file
from edgekit.io.manifest import MANIFEST_NAME, Manifest

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.io.artifacts import ArtifactEntry

_HINT = ("compress into a new folder (or rerun compress with --overwrite, or edgekit run with "
         "--fresh), then validate that folder")


def recorded_parents(manifest: Manifest) -> dict[str, set[str]]:
    """sha256 of each recorded output -> the sha256 of the inputs of the stage that wrote it."""
    parents: dict[str, set[str]] = {}
    for stage in manifest.stages:
        inputs = {i["sha256"] for i in (stage.get("inputs") or {}).values()
                  if isinstance(i, dict) and i.get("sha256")}
        for out in stage.get("outputs") or []:
            if out.get("sha256"):
                parents.setdefault(out["sha256"], set()).update(inputs)
    return parents


def ancestry(sha: str, parents: dict[str, set[str]]) -> set[str]:
    """`sha` and the sha256 of everything it was made from, as far as the manifest knows."""
    seen: set[str] = set()
    todo = [sha]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(parents.get(current, ()))
    return seen


class _Folder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = Manifest(folder)
        self.parents = recorded_parents(self.manifest)
        self._sha: dict[Path, str] = {}

    def rel(self, path: Path) -> str:
        """The path as the manifest names it (relative to the folder)."""
        return os.path.relpath(path, self.folder)

    def recorded(self, path: Path) -> list[dict[str, Any]]:
        rel = self.rel(path)
        return [o for s in self.manifest.stages for o in s.get("outputs") or []
                if o.get("path") == rel]

    def checked_sha(self, path: Path) -> str:
        """The file's sha256, refused when the manifest does not record it as written."""
        if path not in self._sha:
            entries = self.recorded(path)
            shas = {o.get("sha256") for o in entries}
            if not entries or None in shas:
                raise InputError(f"{self.rel(path)} is not recorded with its sha256 in "
                                 f"{self.folder / MANIFEST_NAME}, so edgekit cannot tell what it "
                                 "was made from", hint=_HINT)
            current = sha256_file(path)
            if current not in shas:
                raise InputError(f"{self.rel(path)} changed since edgekit wrote it (its sha256 is "
                                 f"not the one {MANIFEST_NAME} records)", hint=_HINT)
            weights = [o["weights_file"] for o in entries
                       if o.get("sha256") == current and o.get("weights_file")]
            if weights:  # its .bin / .onnx.data, where the manifest recorded one
                beside = path.with_name(weights[-1]["path"])
                if not beside.is_file() or sha256_file(beside) != weights[-1]["sha256"]:
                    raise InputError(f"{self.rel(beside)}, the weights of {self.rel(path)}, is "
                                     f"missing or changed since edgekit wrote it (its sha256 is "
                                     f"not the one {MANIFEST_NAME} records)", hint=_HINT)
            self._sha[path] = current
        return self._sha[path]

    def model_of(self, path: Path) -> str | None:
        return next((o["model"] for o in self.recorded(path) if o.get("model")), None)


def check_chain(target: str | Path, entries: list[ArtifactEntry] | None = None) -> None:
    """Refuse (InputError, exit 2) to compare the artifacts of `target` (an output folder or one
    artifact in it) with their fp32 reference unless each chains to it by sha256. A folder
    without an edgekit manifest records nothing to check."""
    from edgekit.io.artifacts import find_reference, list_artifacts

    target = Path(target)
    folder = target if target.is_dir() else target.parent
    if not (folder / MANIFEST_NAME).is_file():
        return
    reference = find_reference(target)
    if reference is None or not reference.is_file():
        return
    known = _Folder(folder)
    ref_line = ancestry(known.checked_sha(reference), known.parents)
    for entry in entries if entries is not None else list_artifacts(target):
        path = Path(entry["path"])
        if not path.is_file() or path.resolve() == reference.resolve():
            continue
        if ancestry(known.checked_sha(path), known.parents) & ref_line:
            continue
        models = [known.model_of(path), known.model_of(reference)]
        which = (f" ({models[0]} against {models[1]})" if all(models) and models[0] != models[1]
                 else "")
        raise InputError(f"{known.rel(path)} does not chain by sha256 to the reference "
                         f"{known.rel(reference)}{which}: they were not made from the same model "
                         "and settings, so comparing them would mean nothing", hint=_HINT)


def check_recorded(folder: str | Path, *, hint: str = _HINT) -> None:
    """Refuse (InputError, exit 2) a folder whose files are not the ones its manifest records:
    every output listed with a sha256 that is still there must still have it. What is reused
    from an earlier run (optimize's candidates) is checked so before anything is built on it."""
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        return
    recorded: dict[str, set[str]] = {}
    for stage in Manifest(folder).stages:
        for out in stage.get("outputs") or []:
            if out.get("sha256") and out.get("path"):
                recorded.setdefault(str(out["path"]), set()).add(out["sha256"])
    for rel, shas in sorted(recorded.items()):
        path = folder / rel
        if path.is_file() and sha256_file(path) not in shas:
            raise InputError(f"{path} changed since edgekit wrote it (its sha256 is not the one "
                             f"{folder / MANIFEST_NAME} records), so what was built or measured "
                             "from it no longer describes it", hint=hint)

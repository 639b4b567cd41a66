"""Outputs never destroy inputs, and edgekit writes only into folders it owns.

Every command that writes calls these before its first byte:
  * `check_outputs(outputs, inputs)`: each output path, resolved (symlinks, `..`, hard links), is
    compared with each input path (model, recipe, data, calibration set, results store); an
    output that is an input, or lies inside an input folder (an image folder, say), is refused;
  * `check_inside(path, folder)`: a path a recipe names stays inside the output folder;
  * `check_output_folder(folder)` / `claim_output_folder(folder)`: a folder edgekit does not own
    (non-empty, without an edgekit manifest) is refused; claiming writes the empty manifest first,
    so a run killed at any later point leaves a folder edgekit knows as its own, and sweeps the
    stale temporary files a killed run left there.
All refusals are InputError (exit 2) with a hint."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from edgekit.errors import InputError
from edgekit.io.debris import is_debris_name, sweep
from edgekit.io.manifest import MANIFEST_NAME, Manifest

PathLike = str | Path


def resolved(path: PathLike) -> Path:
    """The real path (user folder expanded, symlinks and `..` resolved, even where it does not
    exist yet)."""
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _same_file(a: Path, b: Path) -> bool:
    if resolved(a) == resolved(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    return resolved(path).is_relative_to(resolved(folder))


def _items(paths: Mapping[str, PathLike | Iterable[PathLike] | None]) -> list[tuple[str, Path]]:
    items = []
    for label, value in paths.items():
        if value is None:
            continue
        for p in [value] if isinstance(value, str | Path) else value:
            if p is not None and str(p) != "":
                items.append((label, Path(p)))
    return items


def check_outputs(outputs: Mapping[str, PathLike | Iterable[PathLike] | None],
                  inputs: Mapping[str, PathLike | Iterable[PathLike] | None]) -> None:
    """Refuse outputs that would replace an input, land inside an input folder, or replace each
    other. Keys are what the user calls the path ('-o', 'the model', '--eval data')."""
    outs, ins = _items(outputs), _items(inputs)
    for out_label, out in outs:
        for in_label, inp in ins:
            if _same_file(out, inp):
                raise InputError(f"{out_label} {out} is {in_label} ({inp}); writing it would "
                                 f"destroy an input",
                                 hint="write the output somewhere else (another -o)")
            if inp.is_dir() and _inside(out, inp):
                raise InputError(f"{out_label} {out} lies inside {in_label} {inp}; edgekit "
                                 "does not write into its inputs",
                                 hint="choose an output folder outside the input")
    for i, (label_a, a) in enumerate(outs):
        for label_b, b in outs[i + 1:]:
            if _same_file(a, b):
                raise InputError(f"{label_a} and {label_b} are the same file ({a})",
                                 hint="give each output its own path")


def check_inside(path: PathLike, folder: PathLike, what: str,
                 suffixes: tuple[str, ...] = (), *, hint: str | None = None) -> Path:
    """`folder / path`, refused when `path` is absolute, leaves `folder` (`..`, a symlink), or
    (with `suffixes`) does not end in one of them: a recipe's report cannot name a model. Every
    path derived from a name the user gives (a device's folder in `optimize -o`) goes through
    here; `hint` says what to do instead."""
    path = Path(path)
    full = Path(folder) / path
    if path.is_absolute() or not _inside(full, folder) or resolved(full) == resolved(folder):
        raise InputError(f"{what} {path} is not a file inside the output folder {folder}",
                         hint=hint or "give a plain file name (e.g. report.html); recipe outputs "
                                      "stay inside the output folder")
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"{what} {path} must end in {' or '.join(suffixes)}",
                         hint=f"e.g. {what}: {path.stem or 'report'}{suffixes[0]}")
    return full


def check_output_file(path: PathLike, what: str, suffixes: tuple[str, ...],
                      written_by_edgekit: Callable[[Path], bool]) -> None:
    """Refuse an output file (a report `-o FILE`) that does not end in one of `suffixes`, or
    that exists and was not written by edgekit (`written_by_edgekit` reads its marker): edgekit
    replaces only files it wrote, as it writes only into folders it owns."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{what} {path} must end in {' or '.join(suffixes)}",
                         hint=f"e.g. {what} {path.with_suffix(suffixes[0]).name}")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder", hint=f"{what} names a file")
    if path.exists() and not written_by_edgekit(path):
        raise InputError(f"{what} {path} exists and edgekit did not write it (it has no edgekit "
                         "marker); edgekit replaces only files it wrote",
                         hint=f"choose a new file for {what}, or remove {path} first if it is "
                              "yours to lose")


def check_output_folder(folder: PathLike) -> None:
    """Refuse an output folder edgekit does not own, without writing anything: a file, a folder
    with a manifest that is not edgekit's, or a non-empty folder without a manifest."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError(f"output {folder} exists and is not a folder", hint="-o names a folder")
    if (folder / MANIFEST_NAME).exists():
        Manifest(folder)  # refuses a manifest that is not edgekit's, or not JSON
        return
    foreign = sorted(p.name for p in folder.iterdir() if not is_debris_name(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise InputError(f"output folder {folder} holds files edgekit did not write ({shown}) "
                         f"and no edgekit {MANIFEST_NAME}; edgekit writes only into folders it owns",
                         hint="choose a new or empty folder for -o")


def claim_output_folder(folder: PathLike) -> Manifest:
    """Make `folder` edgekit's (checked as above): create it with an empty manifest unless it
    has one, and remove the stale temporary files of killed runs. Returns its manifest."""
    folder = Path(folder)
    check_output_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(folder)
    if not manifest.path.exists():
        manifest.save()
    sweep(folder)
    return manifest


@contextlib.contextmanager
def removed_on_refusal(folder: PathLike) -> Iterator[Path]:
    """A folder this call creates goes again when the call is refused as bad input (an
    EdgekitError that exits 2: a flag, a recipe field, the data; or an OSError) after it was
    claimed: it holds nothing whole. A folder that was there before (a run to resume) is left as it is, and so
    is one holding a result that failed its gate (exit 1) or an interrupted run."""
    import shutil

    from edgekit.errors import EdgekitError

    path = Path(folder)
    created = not os.path.lexists(path)
    try:
        yield path
    except (EdgekitError, OSError) as exc:
        # an OSError is a folder that cannot be written or a full disk: the CLI's exit 2 too
        refused = isinstance(exc, OSError) or exc.exit_code == 2
        if created and refused and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        raise

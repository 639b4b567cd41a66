"""Image folders (FOLDER/CLASS/image.jpg) and CSV lists (path,label), read lazily.

Nothing is decoded when a folder is opened: the index is the file list, the labels and the class
names, and every file's header is checked (a non-image or unreadable file is named, or skipped
and counted with `--skip-bad-images`). `FolderImages` is an array-like of model-ready float32
NCHW inputs that decodes only the rows asked for, a chunk at a time, with a thread pool (PIL
releases the GIL while decoding), so evaluation and calibration hold one chunk, never the folder.
Numpy + PIL only: a device without torch evaluates from a folder too. Training streams the same
index through torch's DataLoader with worker processes (edgekit.data.loader).
"""

from __future__ import annotations

import contextvars
import csv
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import DataError
from edgekit.events import emit_once
from edgekit.spec import InputSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CHUNK = 256  # images decoded at once: 256 × 3 × 224 × 224 float32 ≈ 154 MB

# Whether a bad image is skipped (and counted) or fatal; the CLI's --skip-bad-images sets it.
_SKIP_BAD: contextvars.ContextVar[bool] = contextvars.ContextVar("edgekit_skip_bad_images",
                                                                 default=False)
# Whether images smaller than the model's input may be scaled up (--allow-upscale, or an explicit
# --resize); by default they are refused: upscaling silently changes what the model sees.
_UPSCALE: contextvars.ContextVar[bool] = contextvars.ContextVar("edgekit_allow_upscale",
                                                                default=False)


@contextmanager
def allowing_upscale(allow: bool = True) -> Iterator[None]:
    token = _UPSCALE.set(allow or _UPSCALE.get())
    try:
        yield
    finally:
        _UPSCALE.reset(token)


@contextmanager
def skipping_bad_images(skip: bool = True) -> Iterator[None]:
    token = _SKIP_BAD.set(skip)
    try:
        yield
    finally:
        _SKIP_BAD.reset(token)


@dataclass
class ImageIndex:
    """The files of an image folder or CSV list, their labels and class names."""

    files: list[Path]
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    skipped: list[str] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode → count (grey/RGB notes)
    sizes: np.ndarray | None = None  # (N, 2) width, height of each file, from its header

    def __len__(self) -> int:
        return len(self.files)

    def take(self, indices: np.ndarray) -> ImageIndex:
        return ImageIndex([self.files[i] for i in indices], self.labels[indices], self.class_names,
                          self.source, self.skipped, self.modes,
                          None if self.sizes is None else self.sizes[indices])

    def check_sizes(self, spec: InputSpec) -> None:
        """Refuse images smaller than the model's H×W input: they would be scaled up, which
        changes what the model sees (a 20×20 image blown up to 64×64 is not what it was trained
        on). Allowed with --allow-upscale or an explicit --resize (allowing_upscale)."""
        if self.sizes is None or not len(self.sizes) or _UPSCALE.get():
            return
        small = (self.sizes[:, 0] < spec.width) | (self.sizes[:, 1] < spec.height)
        if not small.any():
            return
        worst = int(np.argmin(np.minimum(self.sizes[:, 0], self.sizes[:, 1])))
        w, h = (int(v) for v in self.sizes[worst])
        raise DataError(
            f"{self.source}: {int(small.sum())} of {len(self)} images are smaller than the "
            f"model's {spec.width}×{spec.height} input (the smallest, {self.files[worst]}, is "
            f"{w}×{h}); edgekit would scale them up, which changes what the model sees",
            hint=f"use images of at least {spec.width}×{spec.height} (or a model input that "
            "small: --input-shape/--crop), or pass --allow-upscale (or an explicit --resize) "
            "to scale them up anyway")

    def note_conversion(self, spec: InputSpec) -> None:
        """Say once when the images' channels differ from the model's (they are converted)."""
        grey = sum(n for m, n in self.modes.items() if m in ("L", "1", "I", "I;16", "F", "LA"))
        colour = len(self) - grey
        if spec.channels == 3 and grey:
            emit_once(f"note: {self.source}: {grey} greyscale images are converted to RGB for the model")
        if spec.channels == 1 and colour:
            emit_once(f"note: {self.source}: {colour} colour images are converted to greyscale for the model")


def is_image_list(path: Path) -> bool:
    return path.suffix.lower() == ".csv" and path.is_file()


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() for p in path.iterdir())


def _check_headers(files: list[Path], labels: list[int], source: str
                   ) -> tuple[list[Path], list[int], list[str], dict[str, int]]:
    """Open every file's header (cheap, nothing decoded); bad ones fail or are skipped."""
    from PIL import Image, UnidentifiedImageError

    skip = _SKIP_BAD.get()
    good, good_labels, skipped, modes, sizes = [], [], [], {}, []
    for f, label in zip(files, labels, strict=True):
        try:
            with warnings.catch_warnings():  # PIL warns past MAX_IMAGE_PIXELS, errors at twice it
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as img:
                    mode, size = img.mode, img.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"image {f} is too large to decode ({exc})",
                            hint="a decompression bomb? remove the file, or resize it") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if not skip:
                raise DataError(f"{f} in {source} is not a readable image ({exc})",
                                hint="remove or replace the file, or pass --skip-bad-images to "
                                "leave bad files out (they are counted in the record)") from None
            skipped.append(str(f))
            continue
        modes[mode] = modes.get(mode, 0) + 1
        sizes.append(size)
        good.append(f)
        good_labels.append(label)
    if skipped:
        emit_once(f"note: {source}: skipped {len(skipped)} unreadable file(s) (--skip-bad-images)")
    return good, good_labels, skipped, modes, np.asarray(sizes, np.int64).reshape(-1, 2)


def index_folder(folder: Path) -> ImageIndex:
    """FOLDER/CLASS/*.jpg: classes are the sub-folders in sorted order (as torchvision's
    ImageFolder). Every non-hidden file in a class folder must be an image."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    for i, name in enumerate(classes):
        members = sorted(f for f in (folder / name).iterdir() if f.is_file() and not f.name.startswith("."))
        if not members:
            raise DataError(f"class folder {folder / name} holds no images",
                            hint="remove the empty class folder, or put its images in it")
        files += members
        labels += [i] * len(members)
    if not files:
        raise DataError(f"{folder} holds no images in class sub-folders",
                        hint="lay it out as FOLDER/CLASS_NAME/image.jpg, one sub-folder per class")
    files, labels, skipped, modes, sizes = _check_headers(files, labels, str(folder))
    return ImageIndex(files, np.asarray(labels, np.int64), tuple(classes), str(folder), skipped,
                      modes, sizes)


def index_csv(path: Path) -> ImageIndex:
    """A CSV of `path,label` rows (a header row is allowed). Paths are relative to the CSV's
    folder; labels are class names (sorted to indices) or integers."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} ({exc})", hint="write it as UTF-8 CSV: path,label") from None
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path} lists no images", hint="write one 'path,label' row per image")
    bad = [n for n, r in enumerate(rows, 1) if len(r) != 2]
    if bad:
        raise DataError(f"{path}: row {bad[0]} has {len(rows[bad[0] - 1])} columns, expected 2",
                        hint="write one 'path,label' row per image")
    raw_labels = [r[1].strip() for r in rows]
    if all(lab.lstrip("-").isdigit() for lab in raw_labels):
        labels = [int(lab) for lab in raw_labels]
        if min(labels) < 0:
            raise DataError(f"{path}: label {min(labels)} is negative", hint="labels are 0..K-1 or class names")
        classes = tuple(str(i) for i in range(max(labels) + 1))
    else:
        classes = tuple(sorted(set(raw_labels)))
        lookup = {c: i for i, c in enumerate(classes)}
        labels = [lookup[lab] for lab in raw_labels]
    files = [(path.parent / r[0].strip()) for r in rows]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{path} lists {len(missing)} file(s) that do not exist, first {missing[0]}",
                        hint="fix the paths (relative to the CSV's folder) or remove those rows")
    files, labels, skipped, modes, sizes = _check_headers(files, labels, str(path))
    return ImageIndex(files, np.asarray(labels, np.int64), classes, str(path), skipped, modes, sizes)


def open_images(path: Path) -> ImageIndex:
    return index_csv(path) if is_image_list(path) else index_folder(path)


def decode(file: Path, spec: InputSpec) -> np.ndarray:
    """One file → uint8 H×W×C at the model's size (InputSpec.prepare_image), errors named."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL warns past MAX_IMAGE_PIXELS, errors at twice it
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                mode = "L" if spec.channels == 1 else "RGB"
                array = np.asarray(img.convert(mode))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"image {file} is too large to decode ({exc})",
                        hint="a decompression bomb? remove the file, or resize it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image {file} ({exc})",
                        hint="remove or replace the file") from None
    return spec.prepare_image(array)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class FolderImages:
    """Array-like of model-ready float32 NCHW inputs backed by image files: `len`, `shape`,
    `dtype`, and indexing by slice, int or index array decode just those rows."""

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, index: ImageIndex, spec: InputSpec) -> None:
        self.index, self.spec = index, spec

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.spec.shape[1:])

    def uint8(self, rows: np.ndarray) -> np.ndarray:
        """uint8 N,H,W,C for the given rows, decoded in parallel threads."""
        files = [self.index.files[i] for i in rows]
        out = np.empty((len(files), self.spec.height, self.spec.width, self.spec.channels), np.uint8)
        if len(files) <= 2:
            for n, f in enumerate(files):
                out[n] = decode(f, self.spec)
            return out
        with ThreadPoolExecutor(_workers()) as pool:
            for n, img in enumerate(pool.map(lambda f: decode(f, self.spec), files)):
                out[n] = img
        return out

    def __getitem__(self, item: object) -> np.ndarray:
        if isinstance(item, (int, np.integer)):
            return self[np.asarray([item])][0]
        rows = np.arange(len(self))[item]  # slices, index arrays and masks as numpy reads them
        return self.spec.normalise(self.uint8(np.atleast_1d(rows)))

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        x = np.concatenate([self[i:i + CHUNK] for i in range(0, len(self), CHUNK)]) if len(self) \
            else np.zeros(self.shape, np.float32)
        return x if dtype is None else x.astype(dtype)

    def take(self, indices: np.ndarray) -> FolderImages:
        return FolderImages(self.index.take(np.asarray(indices)), self.spec)


class FolderTrainSet:
    """An image folder or CSV list as training data: streamed through torch's DataLoader with
    worker processes (edgekit.data.loader), decoded and preprocessed per batch."""

    model_ready = False

    def __init__(self, index: ImageIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray:
        return self.index.labels

    @property
    def source(self) -> str:
        return self.index.source

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.index.class_names

    def model_inputs(self, spec: InputSpec, rows: np.ndarray | None = None) -> np.ndarray:
        images = FolderImages(self.index, spec)
        return np.asarray(images if rows is None else images[np.asarray(rows)])


def preflight(sources: dict[str, str | None], spec: InputSpec,
              num_outputs: int | None) -> tuple[str, ...]:
    """Image-folder and CSV sources checked before a command writes anything: unreadable or
    missing files, empty class folders, more classes than the model's outputs, eval classes that
    name none of its outputs (edgekit.data.dataset.class_indices), train and eval with
    different classes. Other sources are left to their readers. Returns the folders' class
    names (empty when no folder names them)."""
    from edgekit.data.dataset import check_classes, check_same_classes, class_indices

    indexes: dict[str, ImageIndex] = {}
    for what, source in sources.items():
        if source and (is_image_list(Path(source)) or
                       (is_image_folder(Path(source)) and not list(Path(source).glob("*idx3*")))):
            indexes[what] = open_images(Path(source))
            indexes[what].note_conversion(spec)
            indexes[what].check_sizes(spec)
            check_classes(indexes[what].class_names, source, spec, num_outputs,
                          in_order="train" in what)
            if "eval" in what:  # scored against the outputs: each class must name one
                class_indices(indexes[what].class_names, source, spec.class_names, num_outputs)
    train = next((i for w, i in indexes.items() if "train" in w), None)
    evaluation = next((i for w, i in indexes.items() if "eval" in w), None)
    if train is not None and evaluation is not None:
        check_same_classes(train.class_names, train.source, evaluation.class_names, evaluation.source)
    named = evaluation or train
    return named.class_names if named is not None and not named.source.endswith(".csv") else ()

"""Readers for every kind of data source, and the one entry point that picks among them."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.data.dataset import Dataset, RawImages
from edgekit.data.folders import FolderTrainSet
from edgekit.errors import DataError, DataShapeError
from edgekit.spec import InputSpec

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- IDX
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array; uint8 data only, as MNIST-style sets use."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path} ({exc})", hint="the file may be truncated") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise DataError(f"{path}: IDX data type 0x{dtype_code:02x} is not supported (uint8 only)")
    dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(int)
    expected = int(np.prod(dims))
    payload = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if payload.size != expected:
        raise DataError(f"{path} holds {payload.size} bytes of data, its header says {expected}",
                        hint="the file is truncated: copy it again")
    return payload.reshape(dims)


def _idx_pair_in(folder: Path, split: str | None) -> tuple[Path, Path | None]:
    pattern = f"{split}*" if split else "*"
    images = sorted(folder.glob(f"{pattern}images-idx3-ubyte*")) or sorted(folder.glob(f"{pattern}idx3*"))
    if not images:
        raise DataError(f"no IDX image file found in {folder}" + (f" for split {split!r}" if split else ""))
    stem = images[0].name.removesuffix(".gz").replace("images-idx3", "labels-idx1")
    labels = sorted(folder.glob(stem + "*"))
    return images[0], labels[0] if labels else None


def read_idx_pair(images_path: Path, labels_path: Path | None, source: str) -> RawImages:
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(f"{images_path} holds a {images.ndim}-d array; image IDX files are N,H,W")
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path).astype(np.int64)
        if labels.shape != (len(images),):
            raise DataError(f"{labels_path} has {labels.size} labels for {len(images)} images")
    return RawImages(images, labels, source)


# ---------------------------------------------------------------- built-in data sets
def fashion_mnist_dir(data_dir: str | Path | None = None) -> Path:
    candidates = [Path(p) for p in (data_dir, os.environ.get("EDGEKIT_DATA")) if p]
    candidates.append(DEBIAN_FASHION_MNIST)
    for folder in candidates:
        for sub in (folder, folder / "fashion-mnist"):
            if list(sub.glob("t10k-images-idx3-ubyte*")):
                return sub
    raise DataError(
        "the Fashion-MNIST data is not installed (looked in "
        + ", ".join(str(c) for c in candidates) + ")",
        hint="apt-get install dataset-fashion-mnist, or point --data-dir / $EDGEKIT_DATA at a "
        "folder with the four IDX files",
    )


def _fashion_mnist(split: str, data_dir: str | Path | None) -> RawImages:
    folder = fashion_mnist_dir(data_dir)
    prefix = {"train": "train", "test": "t10k"}[split]
    images, labels = _idx_pair_in(folder, prefix)
    return read_idx_pair(images, labels, f"fashion-mnist:{split}")


BUILTIN_SOURCES: dict[str, tuple[tuple[str, ...], Callable[[str, str | Path | None], RawImages]]] = {
    "fashion-mnist": (("train", "test"), _fashion_mnist),
}


# ---------------------------------------------------------------- npz
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def _check_npz_members(path: Path) -> None:
    """Every member of the .npz is a .npy whose declared shape fits in what the zip declares
    and in edgekit.limits, checked from the headers before numpy allocates the arrays."""
    import zipfile

    from edgekit.limits import MAX_DATA_BYTES

    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                        else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    continue  # refused below by allow_pickle=False, with its own message
                nbytes = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
                if nbytes > info.file_size or nbytes > MAX_DATA_BYTES:
                    raise DataError(
                        f"{path}: array {info.filename} declares {shape} {dtype} "
                        f"({nbytes:,} bytes) but the file holds {info.file_size:,}"
                        if nbytes > info.file_size else
                        f"{path}: array {info.filename} declares {nbytes:,} bytes, over the "
                        f"limit of {MAX_DATA_BYTES:,}",
                        hint="the file is damaged or hostile: write it again with numpy.savez")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
        raise DataError(f"{path} is not a valid .npz file (damaged or truncated: {exc})",
                        hint="write it again with numpy.savez(x=..., y=...)") from None


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(NPY_MAGIC):
        raise DataError(f"{path} is a single .npy array renamed .npz, not a .npz archive",
                        hint="save inputs and labels with numpy.savez(path, x=..., y=...)")
    if not head.startswith(ZIP_MAGIC):
        raise DataError(f"{path} is not a valid .npz file (it is not a zip archive)",
                        hint="save inputs and labels with numpy.savez(path, x=..., y=...)")
    _check_npz_members(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz.files:
                raise DataError(f"{path} has no array named 'x' (found {', '.join(npz.files) or 'none'})",
                                hint="save inputs as x= and optional labels as y=")
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataError(f"{path} contains object arrays, which edgekit refuses to unpickle",
                            hint="save plain numeric arrays (np.savez(x=float32 or uint8, y=int))") from None
        raise DataError(f"cannot read {path}: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="is it a .npz written by numpy.savez?") from None
    if y is not None:
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: labels 'y' must be a 1-d integer array, got {y.dtype} {y.shape}")
        if len(y) != len(x):
            raise DataError(f"{path}: {len(y)} labels for {len(x)} inputs",
                            hint="x and y must have the same first dimension")
        y = y.astype(np.int64)
    if x.ndim == 0 or len(x) == 0:
        raise DataShapeError(f"{path} holds no samples ('x' has shape {x.shape})",
                        hint="write a set with samples in it")
    return x, y


def _npz_dataset(path: Path, spec: InputSpec) -> Dataset:
    x, y = read_npz(path)
    if x.dtype == np.uint8:
        if x.ndim not in (3, 4):
            raise DataShapeError(f"{path}: uint8 images must be N,H,W or N,H,W,C, got shape {x.shape}")
        return Dataset(spec.preprocess(x), y, str(path))
    if np.issubdtype(x.dtype, np.floating):
        if x.ndim != 4:
            raise DataShapeError(f"{path}: float inputs must be model-ready N,C,H,W, got shape {x.shape}",
                            hint="store uint8 images (N,H,W[,C]) to have them preprocessed")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise DataError(f"{path} contains NaN or Inf values", hint="clean the data or rebuild the set")
        return Dataset(x, y, str(path))
    raise DataError(f"{path}: 'x' has dtype {x.dtype}; expected uint8 images or float inputs")


# ---------------------------------------------------------------- image folder
def read_image_folder(folder: Path, spec: InputSpec) -> RawImages:
    """A whole image folder decoded into memory at the model's size (small folders, tests)."""
    from edgekit.data.folders import FolderImages, open_images

    images = FolderImages(open_images(folder), spec)
    return RawImages(images.uint8(np.arange(len(images))), images.index.labels, str(folder))


def _is_images(path: Path) -> bool:
    from edgekit.data.folders import is_image_folder, is_image_list

    return is_image_list(path) or (is_image_folder(path) and not list(path.glob("*idx3*")))


# ---------------------------------------------------------------- entry points
def load_raw(source: str, *, data_dir: str | Path | None = None) -> RawImages | FolderTrainSet:
    """Training images: raw uint8 (augmented by the trainer), model-ready floats from a .npz,
    or an image folder / CSV list indexed to stream from disk (edgekit.data.folders)."""
    if _is_images(Path(source)):
        from edgekit.data.folders import open_images

        return FolderTrainSet(open_images(Path(source)))
    name, _, split = source.partition(":")
    if name in BUILTIN_SOURCES and not Path(source).exists():
        splits, reader = BUILTIN_SOURCES[name]
        if split not in splits:
            raise DataError(f"unknown split {split!r} of {name}",
                            hint=f"use one of: {', '.join(f'{name}:{s}' for s in splits)}")
        return reader(split, data_dir)
    if "," in source:
        images, labels = (Path(p) for p in source.split(",", 1))
        return read_idx_pair(images, labels, source)
    path = Path(source)
    if path.is_dir() and (list(path.glob("*idx3*"))):
        images, labels = _idx_pair_in(path, None)
        return read_idx_pair(images, labels, source)
    if path.is_file() and "idx" in path.name:
        return read_idx_pair(path, None, source)
    if path.suffix == ".npz" and path.is_file():
        x, y = read_npz(path)
        if np.issubdtype(x.dtype, np.floating):
            if x.ndim != 4:
                raise DataShapeError(f"{path}: float inputs must be model-ready N,C,H,W, got shape {x.shape}",
                                hint="store uint8 images (N,H,W[,C]) to have them preprocessed")
            return RawImages(x.astype(np.float32, copy=False), y, source)
        if x.dtype != np.uint8:
            raise DataError(f"{path} holds {x.dtype} inputs; training needs uint8 images or "
                            "float N,C,H,W inputs")
        return RawImages(x, y, source)
    raise _unknown(source)


def load_dataset(source: str, spec: InputSpec, *, data_dir: str | Path | None = None,
                 limit: int | None = None, seed: int = 0) -> Dataset:
    """Any source as model-ready float32 NCHW inputs for `spec` (see the package docstring).

    `limit` keeps a stratified sample of that many items (all when the source is smaller).
    """
    if limit is not None and limit <= 0:
        raise DataError(f"the sample size (--limit) must be positive, got {limit}",
                        hint="leave it out to use the whole set")
    path = Path(source)
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"{path} does not exist", hint="check the path")
        dataset = _npz_dataset(path, spec)
    elif _is_images(path):
        from edgekit.data.folders import FolderImages, open_images

        index = open_images(path)
        index.note_conversion(spec)
        index.check_sizes(spec)
        dataset = Dataset(FolderImages(index, spec), index.labels, source, index.class_names,
                          index.skipped)
        if spec.class_names:  # labels as the model's outputs, matched by name (class_indices)
            from edgekit.data.dataset import class_indices

            try:
                indices = class_indices(index.class_names, source, spec.class_names, None)
            except DataError as exc:  # raised where labels are needed; calibration needs none
                dataset.y, dataset.label_error = None, exc
            else:
                if indices is not None:
                    dataset.y = indices[index.labels]
    else:
        raw = load_raw(source, data_dir=data_dir)
        if limit is not None and limit < len(raw):
            from edgekit.data.dataset import stratified_indices

            keep = stratified_indices(raw.labels, limit, seed)
            raw = RawImages(raw.images[keep], None if raw.labels is None else raw.labels[keep], raw.source)
        dataset = raw.to_dataset(spec)
    if limit is not None and limit < len(dataset):
        dataset = dataset.sample(limit, seed=seed)
    if len(dataset) == 0:
        raise DataError(f"{source} holds no samples", hint="give a data source with samples")
    dataset.check_for(spec)
    return dataset


def _unknown(source: str) -> DataError:
    known = ", ".join(f"{n}:{s}" for n, (splits, _) in BUILTIN_SOURCES.items() for s in splits)
    return DataError(
        f"unknown data source {source!r}",
        hint=f"use a built-in name ({known}), a .npz file, a folder of IDX files, an image folder "
        "(FOLDER/CLASS/image.jpg) or a CSV of path,label rows",
    )

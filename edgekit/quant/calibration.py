"""Calibration data for int8: a calibration set (.npz) or any data source, sampled (stratified by
class when labels exist) to the size asked for, checked against the model before anything runs.

The checks are the ones users hit: a set whose inputs do not fit the model (the error names both
shapes), fewer samples than asked for, NaN or Inf values."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np

from edgekit.data import Dataset
from edgekit.data.hints import calibration_hint
from edgekit.errors import DataError, DataShapeError, InputError
from edgekit.spec import FASHION_MNIST_CLASSES, InputSpec

EMBEDDED_DIR = Path(__file__).resolve().parent.parent.parent / "calibration"
EMBEDDED_SET = EMBEDDED_DIR / "fashion-mnist-512.npz"
# Without --calib-size, a calibration set is used whole, but a larger source (a training split)
# gives a stratified sample of this many.
DEFAULT_MAX_SAMPLES = 1000


def default_calibration_source(spec: InputSpec) -> str:
    """The embedded Fashion-MNIST set for models trained on it; otherwise the user must choose."""
    if tuple(spec.class_names) == tuple(FASHION_MNIST_CLASSES) and EMBEDDED_SET.is_file():
        return str(EMBEDDED_SET)
    raise DataError("int8 needs a calibration set, and none was given",
                    hint=calibration_hint(spec))



def _raw_shape(source: str) -> tuple[int, ...] | None:
    """The stored shape of one item of a .npz source (for error messages)."""
    path = Path(source)
    if path.suffix != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return tuple(npz["x"].shape[1:]) if "x" in npz.files else None
    except Exception:  # noqa: BLE001 - the loader reports unreadable files itself
        return None


def load_calibration_set(source: str, spec: InputSpec, *, size: int | None = None,
                         data_dir: str | None = None, seed: int = 0
                         ) -> tuple[Dataset, CalibrationRecord]:
    """Model-ready calibration inputs for `spec` and what to record about them.

    `size` samples are drawn stratified by class (when None: all of the set, at most
    DEFAULT_MAX_SAMPLES); asking for more than the set holds is a DataError, as are inputs that
    do not fit the model and NaN/Inf."""
    from edgekit.data import load_dataset

    want = tuple(spec.shape[1:])
    try:
        # A large source (a training split) is sampled before preprocessing, not after.
        dataset = load_dataset(source, spec, data_dir=data_dir, seed=seed,
                               limit=size if size is not None else DEFAULT_MAX_SAMPLES)
    except DataShapeError as exc:  # the set's own arrays: say which set it is
        raise DataShapeError(f"calibration set: {exc.message}", hint=exc.hint) from None
    except DataError:  # any other: as it is, not taken for a preprocessing refusal below
        raise
    except InputError as exc:  # preprocessing refused the images (e.g. channels it cannot convert)
        raw = _raw_shape(source)
        raise DataError(
            f"calibration set {source} does not fit the model: its items have shape "
            f"{raw if raw else '?'}, the model expects (C,H,W) {want} ({exc.message})",
            hint="build the set from images of this model's domain (1 or 3 channels)") from None
    if dataset.streamed:  # an image folder: the sample is decoded once, here (calib_size bounds it)
        dataset = type(dataset)(np.asarray(dataset.x), dataset.y, dataset.source,
                                dataset.class_names, dataset.skipped)
    if tuple(dataset.x.shape[1:]) != want:
        raise DataError(f"calibration set {source} has inputs of shape (C,H,W) "
                        f"{tuple(dataset.x.shape[1:])}, the model expects {want}",
                        hint="store uint8 images in the set to have them resized, or build it "
                        "for this model")
    if not np.isfinite(dataset.x).all():
        raise DataError(f"calibration set {source} contains NaN or Inf values",
                        hint="clean the data or rebuild the set")
    if size is not None and size > len(dataset):
        raise DataError(f"calibration set {source} has {len(dataset)} samples, fewer than "
                        f"the {size} asked for (--calib-size)",
                        hint=f"ask for at most {len(dataset)} or use a larger set")
    if len(dataset) == 0:
        raise DataError(f"calibration set {source} is empty", hint="build it with samples in it")
    info = describe_calibration(source, dataset)
    info["raw_item_shape"] = list(_raw_shape(source) or []) or None
    return dataset, info


class CalibrationRecord(TypedDict, total=False):
    """What the manifest records of the calibration samples used: their source, count and
    per-class counts, and for a set file its hash, size and whether its manifest matches."""

    source: str
    count: int
    sha256: str
    set_count: int
    manifest_matches: bool
    per_class: dict[str, int]
    raw_item_shape: list[int] | None


def describe_calibration(source: str, dataset: Dataset) -> CalibrationRecord:
    """Source, hash (for files), count and per-class counts of the samples used."""
    info: CalibrationRecord = {"source": source, "count": int(len(dataset))}
    path = Path(source)
    if path.is_file():
        from edgekit.data.calibration import calibration_info

        recorded = calibration_info(path)
        info["sha256"] = recorded["sha256"]
        if "count" in recorded:
            info["set_count"] = recorded["count"]
        if "manifest_matches" in recorded:
            info["manifest_matches"] = recorded["manifest_matches"]
    if dataset.y is not None:
        classes, counts = np.unique(dataset.y, return_counts=True)
        info["per_class"] = {str(int(c)): int(n) for c, n in zip(classes, counts, strict=True)}
    return info


def batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """x split into contiguous float32 batches (the last may be smaller)."""
    return [np.ascontiguousarray(x[i : i + batch_size], np.float32)
            for i in range(0, len(x), batch_size)]

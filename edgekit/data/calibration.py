"""Calibration sets: a stratified sample of a data source, stored as uint8 images (so that any
model's InputSpec can preprocess them) with a manifest beside the .npz."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

import numpy as np

from edgekit.data.dataset import RawImages, stratified_indices
from edgekit.data.sources import load_raw
from edgekit.errors import DataError
from edgekit.io.files import atomic_path, atomic_write_json, sha256_file


class CalibrationManifest(TypedDict, total=False):
    """OUT.json beside a calibration set: where the images came from, how many of each class,
    how they were drawn and stored, and the .npz's sha256 (calibration_info adds the file's
    `path` and whether the manifest still matches it)."""

    format: str
    source: str
    count: int
    stratified: bool
    seed: int
    per_class: dict[str, int]
    image_shape: list[int]
    dtype: str
    preprocessing: str
    sha256: str
    path: str
    manifest_matches: bool


def build_calibration_set(source: str, out: str | Path, *, count: int = 512, stratified: bool = True,
                          seed: int = 0, data_dir: str | None = None) -> CalibrationManifest:
    """Sample `count` images from `source` and write OUT.npz (x uint8, y) and OUT.json."""
    out = Path(out)
    if out.suffix != ".npz":
        raise DataError(f"calibration set {out} must end in .npz", hint="e.g. -o calibration/my-set.npz")
    if count <= 0:
        raise DataError(f"a calibration set needs at least one image, asked for {count}",
                        hint="pass -n with a positive count, e.g. -n 512")
    raw = load_raw(source, data_dir=data_dir)
    if not isinstance(raw, RawImages) or raw.model_ready:
        raise DataError(f"{source} is an image folder or model-ready floats; a calibration set "
                        "stores uint8 images of one size",
                        hint=f"pass it directly instead: --calib {source} (with --calib-size N, "
                        "a stratified sample is drawn and preprocessed by the model's spec)")
    if count > len(raw):
        raise DataError(f"{source} has {len(raw)} images, fewer than the {count} asked for",
                        hint=f"ask for at most {len(raw)}")
    keep = stratified_indices(raw.labels, count, seed, stratified)
    images = raw.images[keep]
    labels = None if raw.labels is None else raw.labels[keep]
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            if labels is None:
                np.savez_compressed(fh, x=images)
            else:
                np.savez_compressed(fh, x=images, y=labels)
    manifest: CalibrationManifest = {
        "format": "edgekit.calibration/1",
        "source": source,
        "count": int(len(images)),
        "stratified": bool(stratified and labels is not None),
        "seed": seed,
        "per_class": {} if labels is None else {str(int(c)): int(n) for c, n in
                                                zip(*np.unique(labels, return_counts=True), strict=True)},
        "image_shape": list(images.shape[1:]),
        "dtype": "uint8",
        "preprocessing": "none stored: raw uint8 images; each model's InputSpec resizes, converts "
                         "channels and normalises them at use",
        "sha256": sha256_file(out),
    }
    atomic_write_json(out.with_suffix(".json"), manifest)
    return manifest


def calibration_info(path: str | Path) -> CalibrationManifest:
    """The calibration set's manifest if present, with the file's current hash."""
    path = Path(path)
    info: CalibrationManifest = {"path": str(path), "sha256": sha256_file(path)}
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        try:
            recorded = json.loads(sidecar.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"calibration manifest {sidecar} is not valid JSON ({exc})",
                            hint="delete it (the set's hash is recomputed) or rebuild the set "
                            "with edgekit calib build") from None
        if not isinstance(recorded, dict):
            raise DataError(f"calibration manifest {sidecar} is not a JSON object",
                            hint="delete it or rebuild the set with edgekit calib build")
        info.update({k: v for k, v in recorded.items() if k != "sha256"})
        info["manifest_matches"] = recorded.get("sha256") == info["sha256"]
    return info

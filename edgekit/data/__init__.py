"""Data sources. Numpy only (no torch), so that runtimes can use them on lean devices.

A source string is one of:
  * a built-in name: `fashion-mnist:train`, `fashion-mnist:test`
  * a `.npz` file with `x` and optional `y`
  * a folder holding IDX files, or `IMAGES.idx[.gz],LABELS.idx[.gz]`
  * an image folder with one sub-folder per class, or a CSV of `path,label` rows
    (edgekit.data.folders: indexed and checked up front, decoded a chunk at a time; training
    streams them through torch's DataLoader, edgekit.data.loader)

Every image, whatever its source, goes through InputSpec.prepare_image (resize, centre crop,
channels) and InputSpec.normalise: one preprocessing for training, calibration, evaluation,
every runtime and every remote device. A float .npz is taken as model-ready N,C,H,W.
"""

from __future__ import annotations

from edgekit.data.dataset import Dataset, RawImages
from edgekit.data.sources import BUILTIN_SOURCES, load_dataset, load_raw

__all__ = ["BUILTIN_SOURCES", "Dataset", "RawImages", "load_dataset", "load_raw"]

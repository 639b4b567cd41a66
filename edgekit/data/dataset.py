"""In-memory data: raw uint8 images (for training with augmentation) and model-ready arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import DataError
from edgekit.spec import InputSpec


def stratified_indices(labels: np.ndarray | None, n: int, seed: int = 0,
                       stratified: bool = True) -> np.ndarray:
    """n indices drawn without replacement; balanced across classes when labels are given."""
    total = len(labels) if labels is not None else 0
    rng = np.random.default_rng(seed)
    if labels is None or not stratified:
        return np.sort(rng.permutation(total)[:n])
    classes = np.unique(labels)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    quota = {c: n // len(classes) for c in classes}
    for c in classes[: n % len(classes)]:
        quota[c] += 1
    # Classes with too few samples give their remainder to the others, in order.
    short = sum(max(0, quota[c] - len(per_class[c])) for c in classes)
    for c in classes:
        quota[c] = min(quota[c], len(per_class[c]))
    for c in classes:
        extra = min(short, len(per_class[c]) - quota[c])
        quota[c] += extra
        short -= extra
    chosen = np.concatenate([per_class[c][: quota[c]] for c in classes])
    return np.sort(chosen)


@dataclass
class RawImages:
    """uint8 images N,H,W or N,H,W,C with optional int64 labels, before any preprocessing."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def to_dataset(self, spec: InputSpec) -> Dataset:
        return Dataset(spec.preprocess(self.images), self.labels, self.source)


@dataclass
class Dataset:
    """Model-ready float32 NCHW inputs with optional int64 labels."""

    x: np.ndarray
    y: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.x)

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def take(self, indices: np.ndarray) -> Dataset:
        return Dataset(self.x[indices], None if self.y is None else self.y[indices], self.source)

    def sample(self, n: int, *, stratified: bool = True, seed: int = 0) -> Dataset:
        """n samples, stratified by class when labels exist; fewer available is an error."""
        if n <= 0:
            raise DataError(f"sample size must be positive, got {n}")
        if n > len(self):
            raise DataError(f"{self.source} has {len(self)} samples, fewer than the {n} asked for",
                            hint=f"ask for at most {len(self)} or use a larger source")
        if n == len(self):
            return self
        return self.take(stratified_indices(self.y, n, seed, stratified))

    def check_for(self, spec: InputSpec, *, need_labels: bool = False) -> None:
        """Shape, finiteness and label range against the model's spec."""
        if tuple(self.x.shape[1:]) != tuple(spec.shape[1:]):
            raise DataError(
                f"{self.source} has inputs of shape {tuple(self.x.shape[1:])}, the model expects "
                f"{tuple(spec.shape[1:])} (C,H,W)",
                hint="store uint8 images to have them resized, or build the set for this model",
            )
        if not np.isfinite(self.x).all():
            raise DataError(f"{self.source} contains NaN or Inf values",
                            hint="clean the data or rebuild the set")
        if need_labels and self.y is None:
            raise DataError(f"{self.source} has no labels, and accuracy needs them",
                            hint="give an eval source with labels (npz 'y', IDX labels, class folders)")
        if self.y is not None and spec.num_classes is not None and len(self.y):
            lo, hi = int(self.y.min()), int(self.y.max())
            if lo < 0 or hi >= spec.num_classes:
                raise DataError(
                    f"{self.source} has labels {lo}..{hi}, outside the model's "
                    f"{spec.num_classes} classes (0..{spec.num_classes - 1})",
                    hint="use the eval split the model was trained for",
                )

"""In-memory data: raw uint8 images (for training with augmentation) and model-ready arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

    @property
    def model_ready(self) -> bool:
        """Float N,C,H,W inputs already preprocessed (a float .npz): training then augments in
        tensor space only, and nothing is resized or normalised."""
        return self.images.dtype != np.uint8

    def to_dataset(self, spec: InputSpec) -> Dataset:
        return Dataset(self.model_inputs(spec), self.labels, self.source)

    def model_inputs(self, spec: InputSpec, rows: np.ndarray | None = None) -> np.ndarray:
        """Model-ready float32 NCHW inputs for `rows` (all when None)."""
        images = self.images if rows is None else self.images[rows]
        if not self.model_ready:
            return spec.preprocess(images)
        if tuple(images.shape[1:]) != tuple(spec.shape[1:]):
            raise DataError(f"{self.source} holds float inputs of shape {tuple(images.shape[1:])}, "
                            f"the model expects {tuple(spec.shape[1:])} (C,H,W)",
                            hint="store uint8 images to have them resized, or build the set "
                            "for this model")
        return np.ascontiguousarray(images, np.float32)


@dataclass
class Dataset:
    """Model-ready float32 NCHW inputs with optional int64 labels."""

    x: Any  # np.ndarray, or an array-like decoded on demand (edgekit.data.folders.FolderImages)
    y: np.ndarray | None
    source: str
    class_names: tuple[str, ...] = ()  # from an image folder's class sub-folders
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (--skip-bad-images)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def streamed(self) -> bool:
        return not isinstance(self.x, np.ndarray)

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def take(self, indices: np.ndarray) -> Dataset:
        x = self.x.take(indices) if self.streamed else self.x[indices]
        return Dataset(x, None if self.y is None else self.y[indices], self.source,
                       self.class_names, self.skipped)

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

    def check_for(self, spec: InputSpec, *, need_labels: bool = False,
                  num_outputs: int | None = None) -> None:
        """Shape, finiteness, class names and label range against the model's spec (and its
        number of outputs, when known)."""
        if tuple(self.x.shape[1:]) != tuple(spec.shape[1:]):
            raise DataError(
                f"{self.source} has inputs of shape {tuple(self.x.shape[1:])}, the model expects "
                f"{tuple(spec.shape[1:])} (C,H,W)",
                hint="store uint8 images to have them resized, or build the set for this model",
            )
        check_classes(self.class_names, self.source, spec, num_outputs)
        if not self.streamed and not np.isfinite(self.x).all():
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


def check_classes(class_names: tuple[str, ...], source: str, spec: InputSpec | None,
                  num_outputs: int | None = None) -> None:
    """An image folder's classes against the model: no more classes than outputs, and the same
    names in the same order when the model records its class names."""
    if not class_names:
        return
    outputs = num_outputs or (spec.num_classes if spec else None)
    if outputs is not None and len(class_names) > outputs:
        raise DataError(f"{source} has {len(class_names)} classes, more than the model's "
                        f"{outputs} outputs",
                        hint="give the folder the model was trained for, or a model with "
                        f"{len(class_names)} outputs (e.g. --arch-kwargs '{{\"num_classes\": "
                        f"{len(class_names)}}}')")
    recorded = spec.class_names if spec else ()
    if recorded and len(recorded) == len(class_names) and tuple(recorded) != tuple(class_names) \
            and not all(c.isdigit() for c in class_names):
        diff = next(f"{a!r} vs {b!r}" for a, b in zip(recorded, class_names, strict=True) if a != b)
        raise DataError(f"{source}'s class folders do not match the model's classes ({diff})",
                        hint="name the class folders as the model's classes: "
                        + ", ".join(recorded))


def check_same_classes(train: tuple[str, ...], train_source: str,
                       evaluation: tuple[str, ...], eval_source: str) -> None:
    """Train and eval folders must have the same classes in the same order."""
    if train and evaluation and tuple(train) != tuple(evaluation):
        only_train = sorted(set(train) - set(evaluation))
        only_eval = sorted(set(evaluation) - set(train))
        detail = "; ".join(p for p in (f"only in train: {', '.join(only_train)}" if only_train else "",
                                       f"only in eval: {', '.join(only_eval)}" if only_eval else "")
                           if p) or "same names, different order"
        raise DataError(f"{train_source} and {eval_source} have different classes ({detail})",
                        hint="give train and eval folders the same class sub-folders")

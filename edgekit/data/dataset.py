"""In-memory data: raw uint8 images (for training with augmentation) and model-ready arrays."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import DataError, DataShapeError, MissingLabelsError
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
            raise DataShapeError(f"{self.source} holds float inputs of shape {tuple(images.shape[1:])}, "
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
    # Why the folder's labels cannot be scored against the model (its class names are not the
    # model's; see class_indices); y is None then, and check_for(need_labels=True) raises it.
    label_error: DataError | None = None

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
                       self.class_names, self.skipped, self.label_error)

    def for_outputs(self, spec: InputSpec, num_outputs: int) -> Dataset:
        """The set with its labels as the model's output indices, now that the number of
        outputs is known: a folder's classes for a model that records no class names are
        matched by class_indices' rule (a model that records them was matched when the set
        was loaded). Raises DataError when the folder's classes cannot be matched."""
        if spec.class_names or not self.class_names or self.y is None:
            return self
        indices = class_indices(self.class_names, self.source, (), num_outputs)
        if indices is None or np.array_equal(indices, np.arange(len(indices))):
            return self
        return Dataset(self.x, indices[self.y], self.source, self.class_names, self.skipped)

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
            raise DataShapeError(
                f"{self.source} has inputs of shape {tuple(self.x.shape[1:])}, the model expects "
                f"{tuple(spec.shape[1:])} (C,H,W)",
                hint="store uint8 images to have them resized, or build the set for this model",
            )
        check_classes(self.class_names, self.source, spec, num_outputs)
        if not self.streamed and not np.isfinite(self.x).all():
            raise DataError(f"{self.source} contains NaN or Inf values",
                            hint="clean the data or rebuild the set")
        if need_labels and self.label_error is not None:
            raise self.label_error
        if need_labels and self.y is None:
            raise MissingLabelsError(f"{self.source} has no labels, and accuracy needs them",
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
                  num_outputs: int | None = None, *, in_order: bool = False) -> None:
    """An image folder's classes against the model: no more classes than outputs, and, with
    as many classes as the model records names, each one matched to an output (class_indices).
    A folder with fewer classes is matched where its labels are scored (Dataset.check_for with
    need_labels, Dataset.for_outputs): a calibration folder's names do not matter. `in_order`
    (training data, labelled by sorted position): the matched outputs must be 0, 1, 2, ..."""
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
    if recorded and len(recorded) == len(class_names):  # (fewer: checked where labels are scored)
        indices = class_indices(class_names, source, recorded, outputs)
        moved = [(n, int(i), k) for k, (n, i) in enumerate(zip(class_names, indices, strict=True))
                 if i != k]
        if in_order and moved:
            name, index, position = moved[0]
            raise DataError(f"{source}'s classes are the model's in another order: {name!r} is "
                            f"the model's output {index} but at position {position} in sorted "
                            "order, and training labels a folder's classes by sorted position",
                            hint=_rule_hint(recorded))


# A class folder named by the model's output index: digits, then nothing or a separator and
# any name ("3", "3_Dress", "03-dress", "3 Dress").
_INDEX_NAME = re.compile(r"(\d+)(?:[ _.\-].*)?", re.S)


def _folder_name(name: str) -> str:
    """A class name as it can be a folder name ('T-shirt/top' → 'T-shirt-top')."""
    return re.sub(r"[/\\:*?\"<>|\x00-\x1f]+", "-", name).strip(" .-") or "class"


def _rule_hint(model_classes: tuple[str, ...]) -> str:
    """The matching rule, with this model's outputs as folder names that work."""
    width = len(str(len(model_classes) - 1)) if len(model_classes) > 10 else 1  # sorts as numbers
    named = [f"{i:0{width}d}_{_folder_name(n)}" for i, n in enumerate(model_classes)]
    examples = named[:2] if len(named) >= 2 else ["0_cat", "3_dog"]
    hint = ("start each class folder's name with the model's output index it stands for "
            f"({examples[0]}, {examples[1]}: any subset of classes), or name it as one of the "
            "model's recorded class names; a folder with every class and no such names is read "
            "in sorted order (sorted order = label order, as torchvision's ImageFolder)")
    if model_classes:
        hint += (": this model's outputs as folder names are " + ", ".join(named[:10])
                 + (", ..." if len(named) > 10 else ""))
    return hint


def class_indices(class_names: tuple[str, ...], source: str, model_classes: tuple[str, ...],
                  num_outputs: int | None) -> np.ndarray | None:
    """The model output each of a folder's classes (sorted folder order) stands for, by the
    rule the errors' hint states:

    - a folder named as one of the model's recorded class names is that class (any subset,
      any order);
    - otherwise a name that starts with digits (`3`, `3_Dress`) is output 3;
    - a model without recorded names: a folder with as many classes as outputs is read in
      sorted order (torchvision's ImageFolder convention); with fewer, every class must be
      named by its output index, since nothing says which outputs the others are.

    Returns None when that cannot be decided yet (no recorded names and the number of outputs
    unknown). Raises DataError naming the folders that match no output, an index past the
    outputs, or two folders that name the same output."""
    names, model_classes = tuple(class_names), tuple(model_classes)
    if not names:
        return None
    outputs = num_outputs or len(model_classes) or None
    if names == model_classes:
        return np.arange(len(names))
    if not model_classes:
        if outputs is None:
            return None
        if len(names) >= outputs:  # every class: sorted order (more classes: check_classes)
            return np.arange(len(names))
    lookup = {n: i for i, n in enumerate(model_classes)}
    indices: list[int] = []
    unknown: list[str] = []
    for name in names:
        match = _INDEX_NAME.fullmatch(name)
        if name in lookup:
            indices.append(lookup[name])
        elif match:
            indices.append(int(match.group(1)))
        else:
            unknown.append(name)
    if unknown:
        listed = ", ".join(repr(n) for n in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        if model_classes:
            message = (f"{source}'s class folders do not match the model's classes: {listed} "
                       f"{'is' if len(unknown) == 1 else 'are'} not among its "
                       f"{len(model_classes)} class names and not named by an output index")
        else:
            message = (f"{source} has {len(names)} classes ({', '.join(names[:8])}"
                       f"{', ...' if len(names) > 8 else ''}), fewer than the model's {outputs} "
                       f"outputs, and the model records no class names: which output {listed} "
                       "stand for cannot be known")
        raise DataError(message, hint=_rule_hint(model_classes))
    if outputs is not None and max(indices) >= outputs:
        bad = names[int(np.argmax(indices))]
        raise DataError(f"{source}'s class {bad!r} names output {max(indices)}, but the model has "
                        f"{outputs} outputs (0..{outputs - 1})", hint=_rule_hint(model_classes))
    seen: dict[int, str] = {}
    for name, index in zip(names, indices, strict=True):
        if index in seen:
            raise DataError(f"{source}'s classes {seen[index]!r} and {name!r} both stand for "
                            f"output {index}", hint=_rule_hint(model_classes))
        seen[index] = name
    return np.asarray(indices, np.int64)


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
